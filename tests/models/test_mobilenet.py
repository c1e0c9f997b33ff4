"""MobileNet V1/V2/V3 against torchvision (V2, V3) and timm / the paper (V1, which torchvision lacks)."""
import pytest
import torch
import torchvision
from torch import nn

from cnnkit.models import create_model
from cnnkit.models._tv import load_torchvision_weights
from cnnkit.registry import CnnkitError

from models._zoo_helpers import assert_same_logits, calibrate, check_feature_info, n_params


def check_interface(model: nn.Module, size: int) -> None:
    """feature_info on a random size x size input (every entry names a real module with those channels
    and that stride), and the classifier / first-conv names in default_cfg."""
    assert all(size % f["reduction"] == 0 for f in model.feature_info)  # output side exactly size / reduction
    check_feature_info(model.eval(), torch.randn(1, model.default_cfg["input_size"][0], size, size))
    mods = dict(model.named_modules())
    assert model.get_classifier() is mods[model.default_cfg["classifier"]]
    assert isinstance(mods[model.default_cfg["first_conv"]], nn.Conv2d)


@pytest.mark.parametrize("name,count", [("mobilenet_v2", 3_504_872), ("mobilenet_v3_small", 2_542_856),
                                        ("mobilenet_v3_large", 5_483_032)])
def test_param_count_equals_torchvision(name, count):
    with torch.device("meta"):
        ours, tv = create_model(name, num_classes=1000), getattr(torchvision.models, name)()
    assert n_params(ours) == n_params(tv) == count
    load_torchvision_weights(ours, tv.state_dict())  # every key and shape maps (meta: nothing is copied)
    bn = lambda m: [(b.eps, b.momentum) for b in m.modules() if isinstance(b, nn.BatchNorm2d)]  # noqa: E731
    assert bn(ours) == bn(tv)
    assert ours.default_cfg["tv_name"] == name and ours.default_cfg["architecture"] == name


@pytest.mark.parametrize("name,kw", [("mobilenet_v2", {"width_mult": 0.5}), ("mobilenet_v2", {"width_mult": 1.4}),
                                     ("mobilenet_v3_large", {"width_mult": 0.75})])
def test_width_multiplier_equals_torchvision(name, kw):
    with torch.device("meta"):
        ours, tv = create_model(name, num_classes=1000, **kw), getattr(torchvision.models, name)(**kw)
    assert n_params(ours) == n_params(tv)


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"])
def test_torchvision_weights_give_same_outputs(name):
    torch.manual_seed(0)
    tv = calibrate(getattr(torchvision.models, name)())
    ours = load_torchvision_weights(create_model(name, num_classes=1000), tv.state_dict()).eval()
    x = torch.randn(2, 3, 64, 64)
    assert_same_logits(ours, tv, x, tv.features)
    check_interface(ours, 64)


def test_mobilenet_v1_params_vs_paper_and_timm():
    with torch.device("meta"):
        v1 = create_model("mobilenet_v1", num_classes=1000)
    assert n_params(v1) == 4_231_976  # paper (Table 8): 4.2M
    assert abs(n_params(v1) - 4.2e6) < 0.05e6
    # width multiplier alpha: cost ~ alpha^2 (the paper's 0.75 / 0.5 / 0.25 MobileNets: 2.6M / 1.3M / 0.5M)
    for alpha, paper in [(0.75, 2.6e6), (0.5, 1.3e6), (0.25, 0.5e6)]:
        with torch.device("meta"):
            m = create_model("mobilenet_v1", num_classes=1000, width_mult=alpha)
        assert round(n_params(m) / 1e6, 1) == paper / 1e6, (alpha, n_params(m))  # 2,585,560 / 1,331,592 / 470,072


def test_mobilenet_v1_matches_timm():
    """timm's mobilenetv1_100 is the TensorFlow layout (ReLU6): same parameters in the same order."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = calibrate(timm.create_model("mobilenetv1_100"))
    ours = create_model("mobilenet_v1", num_classes=1000, act_layer="relu6").eval()
    a, b = list(ref.state_dict().items()), list(ours.state_dict().items())
    assert len(a) == len(b)
    for (ka, va), (kb, vb) in zip(a, b):
        assert ka.rsplit(".", 1)[1] == kb.rsplit(".", 1)[1] and va.shape == vb.shape, (ka, kb)
    ours.load_state_dict({kb: va for (_, va), (kb, _) in zip(a, b)})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)
    check_interface(ours, 64)
    assert [f["reduction"] for f in ours.feature_info] == [2, 4, 8, 16, 32]


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small"])
def test_small_input(name):
    m = create_model(name, num_classes=10, in_chans=1, small_input=True)
    assert m.stem.conv.stride == (1, 1) and m.default_cfg["input_size"] == (1, 32, 32)
    check_interface(m, 32)
    assert m.feature_info[-1]["reduction"] == 16
    assert m.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_reset_classifier_and_pre_logits():
    m = create_model("mobilenet_v3_small", num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (1, 1024)
        m.reset_classifier(5)
        assert m(x).shape == (1, 5) and m.default_cfg["num_classes"] == 5


def test_bad_arguments():
    with pytest.raises(CnnkitError):
        create_model("mobilenet_v2", no_such_option=1)
    with pytest.raises(CnnkitError):
        create_model("mobilenet_v1", act_layer="reluu")
    with pytest.raises(CnnkitError):  # V3 fixes its activations per row (its table)
        create_model("mobilenet_v3_large", act_layer="relu")
