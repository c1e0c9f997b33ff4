"""ShuffleNetV2 x0.5-x2.0 against torchvision: parameter counts, key mapping and outputs."""
import pytest
import torch
import torchvision
from torch import nn

from cnnkit.models import create_model
from cnnkit.models._tv import load_torchvision_weights
from cnnkit.nn.shuffle import ShuffleV2Block


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


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
                                  "shufflenet_v2_x2_0"])
def test_param_count_equals_torchvision(name):
    with torch.device("meta"):
        ours, tv = create_model(name, num_classes=1000), getattr(torchvision.models, name)()
    assert n_params(ours) == n_params(tv)
    load_torchvision_weights(ours, tv.state_dict())  # every key and shape maps (meta: nothing is copied)
    if name == "shufflenet_v2_x1_0":
        assert n_params(ours) == 2_278_604
    assert [len(s) for s in ours.stages] == [4, 8, 4]
    assert all(isinstance(b, ShuffleV2Block) for s in ours.stages for b in s)


def test_x1_0_torchvision_weights_give_same_outputs():
    torch.manual_seed(0)
    tv = calibrate(torchvision.models.shufflenet_v2_x1_0())
    ours = load_torchvision_weights(create_model("shufflenet_v2_x1_0", num_classes=1000), tv.state_dict()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f_tv = tv.conv5(tv.stage4(tv.stage3(tv.stage2(tv.maxpool(tv.conv1(x))))))
        torch.testing.assert_close(ours.forward_features(x), f_tv, atol=1e-5, rtol=0)
        logits = ours(x)
        assert 0.5 < logits.abs().max() < 100  # O(1): a real comparison
        torch.testing.assert_close(logits, tv(x), atol=1e-5, rtol=0)
    assert [f["reduction"] for f in ours.feature_info] == [8, 16, 32, 32]
    assert [f["num_chs"] for f in ours.feature_info] == [116, 232, 464, 1024]


def test_small_input_has_no_stem_downsampling():
    m = create_model("shufflenet_v2_x0_5", num_classes=10, in_chans=1, small_input=True).eval()
    assert m.stem.conv.stride == (1, 1) and isinstance(m.maxpool, nn.Identity)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert m.forward_features(x).shape == (2, 1024, 4, 4)  # total stride 8
        assert m(x).shape == (2, 10)
    assert [f["reduction"] for f in m.feature_info] == [2, 4, 8, 8]
    assert m.default_cfg["input_size"] == (1, 32, 32)
