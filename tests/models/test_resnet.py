"""ResNet-18...152: exact torchvision parameter counts, weight loading with identical outputs,
the v1.5 stride placement, the small-input stem and the stage metadata."""
import warnings

import pytest
import torch
import torchvision.models as tvm

from cnnkit.models import create_model
from cnnkit.models._tv import load_torchvision_weights
from cnnkit.models.resnet import ResNet
from cnnkit.nn.residual import Bottleneck
from cnnkit.registry import CnnkitError

# torchvision's numbers at 1000 classes
PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
          "resnet101": 44_549_160, "resnet152": 60_192_808}


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
        assert y.shape[-1] == -(-x.shape[-1] // f["reduction"]), f
    assert last.shape[1] == model.feature_info[-1]["num_chs"] == model.num_features


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_count_equals_torchvision(name):
    with torch.device("meta"):
        ours, ref = create_model(name, num_classes=1000), getattr(tvm, name)(weights=None)
    assert n_params(ours) == n_params(ref) == PARAMS[name]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_weights_same_output(name):
    ours, ref = tv_pair(name)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y, y_ref = ours(x), ref(x)
    assert y.shape == (1, 1000) and y_ref.abs().max() > 1e-2
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)


def test_v15_stride_on_3x3_and_cfg():
    m = create_model("resnet50", num_classes=10)
    first = m.layer2[0]
    assert isinstance(first, Bottleneck) and first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)
    assert "v1.5" in m.default_cfg["notes"] and "1x1" in (ResNet.__doc__ or "")
    cfg = m.default_cfg
    assert cfg["architecture"] == "resnet50" and cfg["tv_name"] == "resnet50" and cfg["num_classes"] == 10
    assert cfg["layers"] == (3, 4, 6, 3)
    modules = dict(m.named_modules())
    assert modules[cfg["first_conv"]] is m.conv1 and modules[cfg["classifier"]] is m.get_classifier()


def test_small_input_stem_and_feature_info():
    m = create_model("resnet18", num_classes=10, small_input=True).eval()
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and isinstance(m.maxpool, torch.nn.Identity)
    with torch.no_grad():
        assert m.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 512, 4, 4)
    assert [f["reduction"] for f in m.feature_info] == [1, 1, 2, 4, 8]
    assert m.default_cfg["input_size"] == (3, 32, 32)
    with torch.device("meta"):  # shapes only: no memory, no compute
        check_feature_info(create_model("resnet18", small_input=True), torch.empty(1, 3, 32, 32))
        big = create_model("resnet50", num_classes=10)
        assert [f["reduction"] for f in big.feature_info] == [2, 4, 8, 16, 32]
        check_feature_info(big, torch.empty(1, 3, 64, 64))


def test_head_interface_and_options():
    m = create_model("resnet18", num_classes=7, in_chans=1, zero_init_last=True, act_layer="leaky_relu").eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert m(x).shape == (2, 7)
        assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (2, 512)
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for layer in (m.layer1, m.layer4) for b in layer)
    assert isinstance(m.act1, torch.nn.LeakyReLU) and m.default_cfg["mean"] == (sum((0.485, 0.456, 0.406)) / 3,)
    m.reset_classifier(3)
    assert m.get_classifier().out_features == 3 and m.num_classes == 3


def test_user_errors():
    with pytest.raises(CnnkitError, match="resnet"):
        create_model("resnet51")
    with pytest.raises(CnnkitError, match="unexpected keyword"):
        create_model("resnet18", nonsense=1)
    with pytest.raises(CnnkitError, match="do not fit"):  # a 1000-class state dict into a 10-class model
        with torch.device("meta"):
            sd = tvm.resnet18(weights=None).state_dict()
        load_torchvision_weights(create_model("resnet18", num_classes=10), sd)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
@pytest.mark.parametrize("size", [28, 32])
def test_small_input_all_variants_shapes(name, size):
    """small_input runs 28 px (MNIST) and 32 px (CIFAR) images through every variant (shapes on meta)."""
    with torch.device("meta"):
        m = create_model(name, num_classes=10, in_chans=1, small_input=True).eval()
        feats = m.forward_features(torch.empty(2, 1, size, size))
        assert feats.shape[:2] == (2, m.feature_info[-1]["num_chs"]) and min(feats.shape[-2:]) >= 1
        assert m.forward_head(feats).shape == (2, 10)


def test_feature_modules_accept_backward_hooks():
    """Grad-CAM style full backward hooks work on every feature_info module (none is an in-place op)."""
    m = create_model("resnet18", num_classes=4, small_input=True).eval()
    modules, grads = dict(m.named_modules()), []
    hooks = [modules[f["module"]].register_full_backward_hook(lambda mod, gi, go: grads.append(go[0].shape))
             for f in m.feature_info]
    m(torch.randn(1, 3, 32, 32)).sum().backward()
    for h in hooks:
        h.remove()
    assert len(grads) == len(m.feature_info)
