"""AlexNet: exact torchvision parameter count, weight loading with identical outputs, the small-input
stem and the stage metadata."""
import warnings

import pytest
import torch
import torchvision.models as tvm

from cnnkit.models import create_model
from cnnkit.models._tv import load_torchvision_weights


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def fill_(model, seed=0):
    """Cheap deterministic random weights and norm statistics, in place (weights ~ N(0, 1/fan_in))."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in model.state_dict().items():
            if k.endswith("num_batches_tracked"):
                t.zero_()
            elif k.endswith("running_var") or (t.dim() == 1 and k.endswith("weight")):
                t.uniform_(0.5, 1.5, generator=g)
            elif t.dim() == 1:
                t.normal_(0, 0.1, generator=g)
            else:  # big FC layers: draw 1M values, then repeat them by doubling copies
                flat, n = t.view(-1), min(t.numel(), 1 << 20)
                flat[:n].normal_(0, t[0].numel() ** -0.5, generator=g)
                while n < flat.numel():
                    m = min(n, flat.numel() - n)
                    flat[n:n + m].copy_(flat[:m])
                    n += m
    return model


def tv_pair(name, **kwargs):
    """(ours, torchvision's) in eval mode, torchvision's random weights loaded into ours; no init cost."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, ref = create_model(name, num_classes=1000, **kwargs), getattr(tvm, name)(weights=None)
    ours.to_empty(device="cpu")
    ref = fill_(ref.to_empty(device="cpu"))
    load_torchvision_weights(ours, ref.state_dict())
    return ours.eval(), ref.eval()


def check_feature_info(model, x):
    """Each feature_info entry names a real module whose output has the stated channels and stride."""
    out = {}
    modules = dict(model.named_modules())
    hooks = [modules[f["module"]].register_forward_hook(lambda m, i, o, k=f["module"]: out.__setitem__(k, o))
             for f in model.feature_info]
    with torch.no_grad():
        last = model.forward_features(x)
    for h in hooks:
        h.remove()
    for f in model.feature_info:
        y = out[f["module"]]
        assert y.shape[1] == f["num_chs"], f
        assert abs(y.shape[-1] - x.shape[-1] / f["reduction"]) <= 1, f  # 3x3/2 pools without padding: 27, not 28
    assert last.shape[1] == model.feature_info[-1]["num_chs"] == model.num_features
def test_param_count_equals_torchvision():
    with torch.device("meta"):
        ours, ref = create_model("alexnet", num_classes=1000), tvm.alexnet(weights=None)
    assert n_params(ours) == n_params(ref) == 61_100_840
    convs = [l for l in ours.features if isinstance(l, torch.nn.Conv2d)]
    assert len(convs) == 5 and convs[0].kernel_size == (11, 11) and convs[0].stride == (4, 4)  # 5 conv + 3 FC


def test_torchvision_weights_same_output():
    ours, ref = tv_pair("alexnet")
    x = torch.randn(1, 3, 64, 64)  # 63 px is the smallest size the ImageNet stem accepts
    with torch.no_grad():
        y, y_ref = ours(x), ref(x)
    assert y.shape == (1, 1000) and y_ref.abs().max() > 1e-3
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)


def test_feature_info_and_cfg():
    with torch.device("meta"):
        m = create_model("alexnet", num_classes=10)
        check_feature_info(m, torch.empty(1, 3, 224, 224))
        assert m.forward_features(torch.empty(1, 3, 224, 224)).shape == (1, 256, 6, 6)
    assert [(f["num_chs"], f["reduction"]) for f in m.feature_info] == [(64, 8), (192, 16), (256, 32)]
    cfg = m.default_cfg
    assert cfg["architecture"] == cfg["tv_name"] == "alexnet" and "2012" in cfg["paper"]
    modules = dict(m.named_modules())
    assert modules[cfg["first_conv"]] is m.features[0] and modules[cfg["classifier"]] is m.get_classifier()


@pytest.mark.parametrize("size, last", [(32, 3), (28, 2)])
def test_small_input(size, last):
    m = create_model("alexnet", num_classes=10, in_chans=1, small_input=True, act_layer="elu").eval()
    assert m.features[0].kernel_size == (3, 3) and m.features[0].stride == (1, 1)
    assert m.head.fc1.in_features == 256 and m.head.fc1.out_features == 512
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        assert m.forward_features(x).shape == (2, 256, last, last)
        assert m(x).shape == (2, 10)
        assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (2, 512)
    assert isinstance(m.features[1], torch.nn.ELU)
    assert [f["reduction"] for f in m.feature_info] == [2, 4, 8] and m.default_cfg["input_size"] == (1, 32, 32)
    with pytest.raises(RuntimeError):  # without small_input 32 px is too small for the 11x11/4 stem
        with torch.device("meta"):
            create_model("alexnet")(torch.empty(1, 3, 32, 32))


def test_dropout_train_only_and_reset():
    m = create_model("alexnet", num_classes=10, small_input=True)
    x = torch.randn(2, 3, 32, 32)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x))
        m.train()
        assert not torch.allclose(m.forward_head(m.forward_features(x), pre_logits=True),
                                  m.forward_head(m.forward_features(x), pre_logits=True))
    m.reset_classifier(5)
    assert m.get_classifier().out_features == 5 and m.default_cfg["num_classes"] == 5


@pytest.mark.parametrize("name", ["alexnet"])
@pytest.mark.parametrize("size", [28, 32])
def test_small_input_all_variants_shapes(name, size):
    """small_input runs 28 px (MNIST) and 32 px (CIFAR) images through every variant (shapes on meta)."""
    with torch.device("meta"):
        m = create_model(name, num_classes=10, in_chans=1, small_input=True).eval()
        feats = m.forward_features(torch.empty(2, 1, size, size))
        assert feats.shape[:2] == (2, m.feature_info[-1]["num_chs"]) and min(feats.shape[-2:]) >= 1
        assert m.forward_head(feats).shape == (2, 10)
