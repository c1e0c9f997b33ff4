"""DenseNet-121/161/169/201 and CheXNet: exact torchvision parameter counts, weight loading (current and
legacy key names) with identical outputs, channel bookkeeping, and CheXNet's multi-label head."""
import re
import warnings

import pytest
import torch
import torchvision.models as tvm

from cnnkit.models import create_model
from cnnkit.models._tv import load_torchvision_weights
from cnnkit.models.densenet import CHESTXRAY14_LABELS, chexnet

# torchvision's numbers at 1000 classes
PARAMS = {"densenet121": 7_978_856, "densenet161": 28_681_000, "densenet169": 14_149_480, "densenet201": 20_013_928}


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


@pytest.mark.parametrize("name, blocks, k", [
    ("densenet121", (6, 12, 24, 16), 32), ("densenet169", (6, 12, 32, 32), 32),
    ("densenet201", (6, 12, 48, 32), 32), ("densenet161", (6, 12, 36, 24), 48),
])
def test_block_table_and_channels(name, blocks, k):
    """A block adds k channels per layer, a transition halves them; 121 = 1 + 2*(6+12+24+16) + 3 + 1 layers."""
    with torch.device("meta"):
        m = create_model(name, num_classes=1000)
    f = m.features
    assert tuple(len(getattr(f, f"denseblock{i}")) for i in range(1, 5)) == blocks == m.default_cfg["block_config"]
    assert f.denseblock1.denselayer1.conv2.out_channels == k and f.denseblock1.denselayer1.conv1.out_channels == 4 * k
    chs = f.conv0.out_channels
    for i, n in enumerate(blocks, 1):
        chs += n * k
        assert getattr(f, f"denseblock{i}").out_channels == chs
        if i < 4:
            chs //= 2
            assert getattr(f, f"transition{i}").conv.out_channels == chs
    assert m.num_features == chs == m.head.fc.in_features
    if name == "densenet121":
        assert 1 + 2 * sum(blocks) + 3 + 1 == 121 and chs == 1024


def test_torchvision_weights_same_output_and_legacy_keys():
    ours, ref = tv_pair("densenet121")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y, y_ref = ours(x), ref(x)
    assert y.shape == (1, 1000) and y_ref.abs().max() > 1e-3
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    # old torchvision checkpoints: "denselayer1.norm.1.weight" instead of "denselayer1.norm1.weight"
    legacy = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in ref.state_dict().items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    with torch.device("meta"):
        again = create_model("densenet121", num_classes=1000)
    again.to_empty(device="cpu")
    load_torchvision_weights(again, legacy)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_feature_info_small_input_and_interface():
    with torch.device("meta"):
        big = create_model("densenet121", num_classes=10)
        check_feature_info(big, torch.empty(1, 3, 64, 64))
        small = create_model("densenet121", num_classes=10, small_input=True)
        check_feature_info(small, torch.empty(1, 3, 32, 32))
    assert [f["reduction"] for f in big.feature_info] == [2, 4, 8, 16, 32]
    assert [f["reduction"] for f in small.feature_info] == [1, 1, 2, 4, 8]
    cfg = big.default_cfg
    modules = dict(big.named_modules())
    assert modules[cfg["first_conv"]] is big.features.conv0 and modules[cfg["classifier"]] is big.get_classifier()
    m = create_model("densenet121", num_classes=3, in_chans=1, memory_efficient=True, layer_drop_rate=0.1)
    x = torch.randn(2, 1, 32, 32)
    m(x).sum().backward()  # checkpointed dense layers still train every parameter
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    with torch.no_grad():
        assert m.forward_features(x).shape == (2, 1024, 1, 1) and m(x).shape == (2, 3)
        assert (m.forward_features(x) >= 0).all()  # the final norm + act are part of the features


def test_chexnet_multilabel_head_and_metadata():
    m = chexnet().eval()  # the builder's num_classes defaults to the 14 findings
    cfg = m.default_cfg
    assert m.num_classes == 14 and cfg["num_classes"] == 14 and cfg["multi_label"] is True
    assert cfg["label_names"] == CHESTXRAY14_LABELS and len(set(CHESTXRAY14_LABELS)) == 14
    assert {"Pneumonia", "Cardiomegaly", "Hernia", "Pleural_Thickening"} <= set(cfg["label_names"])
    assert cfg["architecture"] == "chexnet" and cfg["tv_name"] == "densenet121" and "CheXNet" in cfg["paper"]
    assert create_model("chexnet", num_classes=5).default_cfg["label_names"] is None  # names only for the 14
    with torch.device("meta"):
        head_diff = 1024 * (1000 - 14) + (1000 - 14)  # a 14-way instead of a 1000-way linear layer
        assert n_params(create_model("chexnet", num_classes=14)) == PARAMS["densenet121"] - head_diff
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = m(x)
    assert logits.shape == (2, 14)
    with torch.no_grad():  # raw logits: the linear layer's output, no sigmoid after it
        pooled = m.forward_head(m.forward_features(x), pre_logits=True)
        torch.testing.assert_close(logits, m.get_classifier()(pooled), rtol=0, atol=0)
    assert not any(isinstance(mod, torch.nn.Sigmoid) for mod in m.modules())
    # several findings at once: one BCE-with-logits term per label
    target = torch.zeros(2, 14)
    target[0, [2, 6]] = 1
    loss = torch.nn.BCEWithLogitsLoss()(logits, target)
    manual = -(target * torch.sigmoid(logits).log() + (1 - target) * (1 - torch.sigmoid(logits)).log()).mean()
    torch.testing.assert_close(loss, manual)


def test_chexnet_from_torchvision_densenet121_backbone():
    """ImageNet-style init as in the paper: the backbone comes from densenet121, the 14-way head stays fresh."""
    _, ref = tv_pair("densenet121")
    with torch.device("meta"):
        m = create_model("chexnet", num_classes=14)
    m = m.to_empty(device="cpu").eval()
    torch.nn.init.normal_(m.head.fc.weight)
    head_before = m.head.fc.weight.clone()
    load_torchvision_weights(m, ref.state_dict())
    assert torch.equal(m.head.fc.weight, head_before)
    assert torch.equal(m.features.denseblock3.denselayer5.conv2.weight,
                       ref.features.denseblock3.denselayer5.conv2.weight)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m.forward_features(x), torch.relu(ref.features(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PARAMS) + ["chexnet"])
@pytest.mark.parametrize("size", [28, 32])
def test_small_input_all_variants_shapes(name, size):
    """small_input runs 28 px (MNIST) and 32 px (CIFAR) images through every variant (shapes on meta)."""
    with torch.device("meta"):
        m = create_model(name, num_classes=10, in_chans=1, small_input=True).eval()
        feats = m.forward_features(torch.empty(2, 1, size, size))
        assert feats.shape[:2] == (2, m.feature_info[-1]["num_chs"]) and min(feats.shape[-2:]) >= 1
        assert m.forward_head(feats).shape == (2, 10)


@pytest.mark.parametrize("name", ["densenet121", "chexnet"])
def test_feature_modules_accept_backward_hooks(name):
    """Grad-CAM style full backward hooks work on every feature_info module (none is an in-place op)."""
    m = create_model(name, num_classes=4).eval()
    modules, grads = dict(m.named_modules()), []
    hooks = [modules[f["module"]].register_full_backward_hook(lambda mod, gi, go: grads.append(go[0].shape))
             for f in m.feature_info]
    m(torch.randn(1, 3, 32, 32)).sum().backward()
    for h in hooks:
        h.remove()
    assert len(grads) == len(m.feature_info)
