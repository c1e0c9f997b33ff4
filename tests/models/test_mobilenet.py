"""MobileNet V1/V2/V3 against torchvision (V2, V3) and timm / the paper (V1, which torchvision lacks)."""
import pytest
import torch
import torchvision
from torch import nn

from cnnkit.models import create_model
from cnnkit.models._tv import load_torchvision_weights
from cnnkit.registry import CnnkitError


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def calibrate(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine parameters, BN statistics measured on one random batch and a unit-scale
    classifier: eval outputs are O(1) and depend on every parameter, buffer and BN eps."""
    g = torch.Generator().manual_seed(seed)
    bns, saved = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)], {}
    with torch.no_grad():
        for m in bns:
            m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            saved[m], m.momentum = m.momentum, 1.0  # running stats := this batch's stats
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features**0.5)
        model.train()(torch.randn(4, 3, 64, 64, generator=g))
        for m in bns:
            m.momentum = saved[m]
    return model.eval()


def check_feature_info(model: nn.Module, size: int) -> None:
    """Every feature_info entry names a real module whose output has those channels and that stride."""
    outs = {}
    mods = dict(model.named_modules())
    hooks = [mods[f["module"]].register_forward_hook(lambda m, i, o, k=f["module"]: outs.__setitem__(k, o))
             for f in model.feature_info]
    with torch.no_grad():
        feats = model.eval().forward_features(torch.randn(1, model.default_cfg["input_size"][0], size, size))
    for h in hooks:
        h.remove()
    for f in model.feature_info:
        o = outs[f["module"]]
        assert o.shape[1] == f["num_chs"] and o.shape[-1] == size // f["reduction"], f
    assert feats.shape[1] == model.feature_info[-1]["num_chs"] == model.num_features
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
    with torch.no_grad():
        f_tv, f = tv.features(x), ours.forward_features(x)
        torch.testing.assert_close(f, f_tv, atol=1e-5, rtol=0)
        logits = ours(x)
        assert 0.5 < logits.abs().max() < 100  # O(1): a real comparison
        torch.testing.assert_close(logits, tv(x), atol=1e-5, rtol=0)
    check_feature_info(ours, 64)


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
    check_feature_info(ours, 64)
    assert [f["reduction"] for f in ours.feature_info] == [2, 4, 8, 16, 32]


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small"])
def test_small_input(name):
    m = create_model(name, num_classes=10, in_chans=1, small_input=True)
    assert m.stem.conv.stride == (1, 1) and m.default_cfg["input_size"] == (1, 32, 32)
    check_feature_info(m, 32)
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
