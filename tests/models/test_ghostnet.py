"""GhostNet 1.0x. torchvision has none: compared with the paper (5.2M parameters, Table 1 layout) and
with timm's `ghostnet_100` (the authors' layout): same parameters in the same order, same outputs."""
import pytest
import torch

from cnnkit.models import create_model
from cnnkit.nn.ghost import GhostBottleneck, GhostModule

from models._zoo_helpers import assert_same_logits, calibrate, n_params


def test_param_count_vs_paper():
    with torch.device("meta"):
        m = create_model("ghostnet", num_classes=1000)
    assert n_params(m) == 5_182_508
    assert abs(n_params(m) - 5.2e6) < 0.05e6  # paper, Table 7: 5.2M
    blocks = [b for s in m.stages for b in s]
    assert len(blocks) == 16 and all(isinstance(b, GhostBottleneck) for b in blocks)
    ghosts = [g for g in m.modules() if isinstance(g, GhostModule)]
    assert len(ghosts) == 32 and all(g.cheap_operation.conv.groups == g.primary_conv.conv.out_channels
                                     for g in ghosts)  # s = 2: as many cheap (depthwise) maps as intrinsic ones
    assert [f["reduction"] for f in m.feature_info] == [2, 4, 8, 16, 32, 32]
    assert [f["num_chs"] for f in m.feature_info] == [16, 24, 40, 112, 160, 960]


def test_matches_timm_ghostnet_100():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = calibrate(timm.create_model("ghostnet_100"))
    ours = create_model("ghostnet", num_classes=1000).eval()
    a, b = list(ref.state_dict().items()), list(ours.state_dict().items())
    assert len(a) == len(b)
    for (ka, va), (kb, vb) in zip(a, b):  # same tensors in the same order (1x1 conv head == Linear)
        assert ka.rsplit(".", 1)[1] == kb.rsplit(".", 1)[1] and va.numel() == vb.numel(), (ka, kb)
    ours.load_state_dict({kb: va.reshape(vb.shape) for (_, va), (kb, vb) in zip(a, b)})
    x = torch.randn(2, 3, 64, 64)
    assert_same_logits(ours, ref, x, ref.forward_features)


def test_small_input_and_width():
    m = create_model("ghostnet", num_classes=10, in_chans=1, small_input=True).eval()
    assert m.stem.conv.stride == (1, 1) and m.feature_info[-1]["reduction"] == 16
    with torch.no_grad():
        assert m(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    # the paper's width multipliers (Table 7): 0.5x 2.6M, 1.3x 7.3M parameters
    with torch.device("meta"):
        half, wide = (create_model("ghostnet", num_classes=1000, width=w) for w in (0.5, 1.3))
    assert half.stem.conv.out_channels == 8
    assert n_params(half) == 2_587_292 and n_params(wide) == 7_358_820
