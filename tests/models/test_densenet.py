"""DenseNet-121/161/169/201 and CheXNet: exact torchvision parameter counts, weight loading (current and
legacy key names) with identical outputs, channel bookkeeping, and CheXNet's multi-label head."""
import re

import pytest
import torch
import torchvision.models as tvm

from cnnkit.models import create_model
from cnnkit.models._tv import load_torchvision_weights
from cnnkit.models.densenet import CHESTXRAY14_LABELS, chexnet

from models._zoo_helpers import (assert_same_output, check_backward_hooks, check_feature_info,
                                 check_small_input_shapes, n_params, tv_pair)

# torchvision's numbers at 1000 classes
PARAMS = {"densenet121": 7_978_856, "densenet161": 28_681_000, "densenet169": 14_149_480, "densenet201": 20_013_928}


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
    assert_same_output(ours, ref, x)
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
    check_small_input_shapes(name, size)


@pytest.mark.parametrize("name", ["densenet121", "chexnet"])
def test_feature_modules_accept_backward_hooks(name):
    """Grad-CAM style full backward hooks work on every feature_info module (none is an in-place op)."""
    m = create_model(name, num_classes=4).eval()
    check_backward_hooks(m, torch.randn(1, 3, 32, 32))
