"""torchvision / timm models by name, and pretrained weights from files on disk."""
import pytest
import torch
import torchvision

from cnnkit.models import create_model
from cnnkit.registry import CnnkitError


def test_torchvision_by_name_has_the_interface():
    m = create_model("tv:resnet18", num_classes=7, in_chans=1).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        y = m(x)
        assert y.shape == (2, 7)
        assert torch.allclose(m.forward_head(m.forward_features(x)), y, atol=1e-6)
    assert m.default_cfg["architecture"] == "tv:resnet18" and m.default_cfg["input_size"][0] == 1
    m.reset_classifier(3)
    assert m(x).shape == (2, 3)
    with pytest.raises(CnnkitError, match="Did you mean 'resnet18'"):
        create_model("tv:resnet_18")


def test_timm_by_name():
    pytest.importorskip("timm")
    m = create_model("timm:resnet18", num_classes=5, in_chans=1).eval()
    assert m(torch.randn(1, 1, 64, 64)).shape == (1, 5)
    assert m.default_cfg["architecture"] == "timm:resnet18"
    with pytest.raises(CnnkitError, match="unknown timm model"):
        create_model("timm:no_such_net_anywhere")


@pytest.fixture(scope="module")
def tv_resnet18_file(tmp_path_factory):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # non-trivial BN statistics so a wrong mapping would show
        for mod in tv.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    return tv.eval(), path


def test_weights_file_gives_torchvision_outputs(tv_resnet18_file):
    tv, path = tv_resnet18_file
    x = torch.randn(2, 3, 64, 64)
    for name in ("resnet18", "tv:resnet18"):
        m = create_model(name, weights=str(path)).eval()
        with torch.no_grad():
            assert (m(x) - tv(x)).abs().max() < 1e-5, name


def test_weights_for_fine_tuning_keep_the_backbone(tv_resnet18_file):
    tv, path = tv_resnet18_file
    m = create_model("resnet18", num_classes=10, in_chans=1, weights=str(path)).eval()
    assert m.default_cfg["num_classes"] == 10 and m.default_cfg["input_size"][0] == 1
    assert torch.equal(m.layer3[0].conv1.weight, tv.layer3[0].conv1.weight)
    # a grey image through the summed RGB filters equals the RGB image with three equal planes
    g = torch.rand(1, 1, 64, 64)
    assert torch.allclose(m.conv1(g), tv.conv1(g.repeat(1, 3, 1, 1)), atol=1e-5)
    assert m(g).shape == (1, 10)


def test_bad_weights_files(tv_resnet18_file, tmp_path):
    _, path = tv_resnet18_file
    with pytest.raises(CnnkitError, match="do not fit 'resnet50'"):
        create_model("resnet50", weights=str(path))
    with pytest.raises(CnnkitError, match="not found"):
        create_model("resnet18", weights=str(tmp_path / "none.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CnnkitError, match="cannot read weights"):
        create_model("resnet18", weights=str(bad))


def test_train_with_a_torchvision_model_and_weights(tv_resnet18_file, tmp_path):
    import cnnkit

    _, path = tv_resnet18_file
    res = cnnkit.train(model="tv:resnet18", weights=str(path), data="shapes", num_train=32, num_val=16, image_size=32,
                       epochs=1, batch_size=16, optimizer="adam", lr=1e-3, project=str(tmp_path), quiet=True,
                       log=lambda *a, **k: None)
    model, meta = cnnkit.load_model(str(res.run_dir))
    assert meta["model"] == "tv:resnet18" and model(torch.zeros(1, 3, 32, 32)).shape == (1, 8)
