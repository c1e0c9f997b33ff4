"""Blocks of the lightweight networks: separable conv, SE, MBConv, ghost module, channel shuffle.

Oracles: plain `F.conv2d` (per channel and with the composed kernel), torch.nn.ChannelShuffle,
torchvision's channel_shuffle / _make_divisible / SqueezeExcitation, and FLOPs counted by hooks.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.nn.ghost import GhostBottleneck, GhostModule
from cnnkit.nn.mbconv import DropPath, InvertedResidual, make_divisible
from cnnkit.nn.se import SqueezeExcite
from cnnkit.nn.separable import DepthwiseSeparableConv, separable_param_ratio
from cnnkit.nn.shuffle import ChannelShuffle, ShuffleV2Block, channel_shuffle


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of every Conv2d, counted from the real output shapes."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return total


# ------------------------------------------------------------------------------------ separable


@pytest.mark.parametrize("c_in,c_out,k", [(32, 64, 3), (16, 8, 5), (64, 128, 3)])
def test_separable_param_ratio(c_in, c_out, k):
    sep = DepthwiseSeparableConv(c_in, c_out, k, norm_layer=None, act_layer=None, bias=False)
    std = nn.Conv2d(c_in, c_out, k, bias=False)
    assert n_params(sep) == k * k * c_in + c_in * c_out
    assert n_params(sep) / n_params(std) == pytest.approx(1 / c_out + 1 / k**2)
    assert separable_param_ratio(c_out, k) == pytest.approx(n_params(sep) / n_params(std))
    # multiply-adds shrink by the same factor (same output size, every weight used once per position)
    x = torch.randn(1, c_in, 8, 8)
    std_p = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)
    assert conv_macs(sep, x) / conv_macs(std_p, x) == pytest.approx(1 / c_out + 1 / k**2)


def test_separable_equals_grouped_and_factored_conv():
    torch.manual_seed(0)
    c_in, c_out, k, s = 6, 10, 3, 2
    sep = DepthwiseSeparableConv(c_in, c_out, k, s, norm_layer=None, act_layer=None, bias=False)
    x = torch.randn(2, c_in, 9, 9)
    dw, pw = sep.conv_dw.conv.weight, sep.conv_pw.conv.weight  # (C_in, 1, k, k), (C_out, C_in, 1, 1)
    with torch.no_grad():
        y = sep(x)
        # depthwise = each channel convolved alone with its own filter
        per_channel = torch.cat([F.conv2d(x[:, i : i + 1], dw[i : i + 1], stride=s, padding=1) for i in range(c_in)], 1)
        torch.testing.assert_close(sep.conv_dw(x), per_channel)
        # ... = a grouped conv with groups = C_in
        torch.testing.assert_close(sep.conv_dw(x), F.conv2d(x, dw, stride=s, padding=1, groups=c_in))
        # pointwise = channel mixing at every position
        torch.testing.assert_close(y, torch.einsum("oi,bihw->bohw", pw[:, :, 0, 0], per_channel))
        # the whole thing = one standard conv with the rank-factored kernel W[o, i] = pw[o, i] * dw[i]
        full = pw[:, :, 0, 0][:, :, None, None] * dw[:, 0][None]  # (C_out, C_in, k, k)
        torch.testing.assert_close(y, F.conv2d(x, full, stride=s, padding=1), atol=1e-5, rtol=1e-5)


def test_separable_default_has_norm_and_act():
    sep = DepthwiseSeparableConv(8, 16, stride=2)
    assert isinstance(sep.conv_dw.bn, nn.BatchNorm2d) and isinstance(sep.conv_pw.act, nn.ReLU)
    assert sep.conv_dw.conv.bias is None and sep.conv_dw.conv.groups == 8
    assert sep(torch.randn(2, 8, 10, 10)).shape == (2, 16, 5, 5)


# ------------------------------------------------------------------------------------------- SE


def test_squeeze_excite_matches_torchvision():
    tv_se = pytest.importorskip("torchvision.ops").SqueezeExcitation(24, 8, scale_activation=nn.Hardsigmoid)
    se = SqueezeExcite(24, 8, "relu", "hardsigmoid")
    se.load_state_dict(tv_se.state_dict())
    x = torch.randn(2, 24, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(se(x), tv_se(x))
        # by hand: per-channel weights from the channel means
        m = x.mean((2, 3))
        gate = F.hardsigmoid(F.linear(F.relu(F.linear(m, se.fc1.weight[:, :, 0, 0], se.fc1.bias)),
                                      se.fc2.weight[:, :, 0, 0], se.fc2.bias))
        torch.testing.assert_close(se(x), x * gate[:, :, None, None])


def test_make_divisible_matches_torchvision():
    from torchvision.models._utils import _make_divisible

    for v in [3.2, 8, 15.9, 16 * 0.75, 72 * 0.25, 1280 * 1.1, 24 * 1.4, 40 * 0.35, 960 * 1.3]:
        for d in (4, 8):
            assert make_divisible(v, d) == _make_divisible(v, d)
    assert make_divisible(18, 4) == 20 and make_divisible(1, 8) == 8


# ------------------------------------------------------------------------------- MBConv / drop path


def test_inverted_residual_structure():
    blk = InvertedResidual(16, 16, 96, 3, 1, se_chs=4)
    assert blk.has_skip and isinstance(blk.se, SqueezeExcite) and blk.conv_dw.conv.groups == 96
    assert isinstance(blk.conv_pwl.act, nn.Identity)  # linear bottleneck
    no_expand = InvertedResidual(32, 16, 32, 3, 1)  # expand ratio 1: no 1x1 expansion
    assert isinstance(no_expand.conv_pw, nn.Identity) and not no_expand.has_skip
    down = InvertedResidual(16, 24, 96, 5, 2)
    assert not down.has_skip and down(torch.randn(1, 16, 9, 9)).shape == (1, 24, 5, 5)
    # residual: with the projection zeroed, the block is the identity
    nn.init.zeros_(blk.conv_pwl.bn.weight)
    x = torch.randn(2, 16, 6, 6)
    torch.testing.assert_close(blk.eval()(x), x)


def test_drop_path():
    torch.manual_seed(0)
    dp = DropPath(0.25)
    x = torch.ones(4000, 3, 2, 2)
    assert torch.equal(dp.eval()(x), x)  # eval: identity
    y = dp.train()(x)
    per_sample = y.flatten(1)
    # each sample is dropped whole or kept and scaled by 1/(1-p)
    assert ((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1)).all()
    assert (per_sample[:, 0] == 0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert y.mean().item() == pytest.approx(1.0, abs=0.05)  # unbiased
    with pytest.raises(ValueError):
        DropPath(1.5)


# -------------------------------------------------------------------------------------- ghost


def test_ghost_module_is_primary_plus_cheap():
    torch.manual_seed(0)
    g = GhostModule(8, 10, ratio=2, dw_size=3).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        y = g(x)
        intrinsic = g.primary_conv(x)  # m = ceil(10 / 2) = 5 maps
        assert intrinsic.shape[1] == 5 and y.shape == (2, 10, 6, 6)
        torch.testing.assert_close(y[:, :5], intrinsic)
        torch.testing.assert_close(y[:, 5:], g.cheap_operation(intrinsic))
    assert g.cheap_operation.conv.groups == 5  # the cheap operation is depthwise
    assert GhostModule(8, 9, ratio=3)(x).shape[1] == 9  # ceil(9/3) = 3 intrinsic, 6 ghosts


@pytest.mark.parametrize("s", [2, 3, 4])
def test_ghost_module_cost_vs_ordinary_conv(s):
    """Paper eq. 4: an ordinary k x k conv over the ghost module (primary k x k, cheap d x d)
    costs s*c*k^2 / (c*k^2 + (s-1)*d^2) ~ s times as much; s = 2 halves it."""
    c, n, k, d, hw = 64, 96, 3, 3, 8
    ghost = GhostModule(c, n, kernel_size=k, ratio=s, dw_size=d, norm_layer=None, act_layer=None)
    conv = nn.Conv2d(c, n, k, padding=k // 2, bias=False)
    x = torch.randn(1, c, hw, hw)
    ratio = conv_macs(conv, x) / conv_macs(ghost, x)
    assert ratio == pytest.approx(s * c * k * k / (c * k * k + (s - 1) * d * d))
    assert ratio == pytest.approx(s, rel=0.1)
    weights = lambda m: sum(p.numel() for n_, p in m.named_parameters() if n_.endswith("weight"))  # noqa: E731
    assert conv.weight.numel() / weights(ghost) == pytest.approx(ratio)


def test_ghost_bottleneck_shapes_and_shortcut():
    same = GhostBottleneck(16, 48, 16, 3, 1)
    assert isinstance(same.shortcut, nn.Identity) and isinstance(same.conv_dw, nn.Identity)
    down = GhostBottleneck(24, 72, 40, 5, 2, se_ratio=0.25)
    assert down.se.fc1.out_channels == make_divisible(72 * 0.25, 4) == 20
    assert down(torch.randn(2, 24, 8, 8)).shape == (2, 40, 4, 4)


# ------------------------------------------------------------------------------------- shuffle


@pytest.mark.parametrize("groups,n", [(2, 3), (3, 4), (4, 2)])
def test_channel_shuffle_is_the_transpose_permutation(groups, n):
    c = groups * n
    x = torch.randn(2, c, 3, 3)
    y = channel_shuffle(x, groups)
    # output channel k*g + i = input channel i*n + k
    perm = [i * n + k for k in range(n) for i in range(groups)]
    assert torch.equal(y, x[:, perm])
    assert sorted(perm) == list(range(c))  # a permutation: nothing lost or copied
    assert torch.equal(y, nn.ChannelShuffle(groups)(x))
    assert torch.equal(ChannelShuffle(groups)(x), y)
    from torchvision.models.shufflenetv2 import channel_shuffle as tv_shuffle

    assert torch.equal(y, tv_shuffle(x, groups))
    assert torch.equal(channel_shuffle(y, n), x)  # shuffling with n groups undoes it
    with pytest.raises(ValueError):
        channel_shuffle(torch.randn(1, c + 1, 2, 2), groups)


def test_shuffle_v2_block():
    torch.manual_seed(0)
    blk = ShuffleV2Block(8, 8, 1).eval()
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        y = blk(x)
    # undo the shuffle: the first half is the untouched left half of the input
    unshuffled = channel_shuffle(y, 4)
    assert torch.equal(unshuffled[:, :4], x[:, :4])
    down = ShuffleV2Block(8, 16, 2)
    assert down(x).shape == (2, 16, 3, 3) and down.branch1[0].conv.groups == 8
    with pytest.raises(ValueError):
        ShuffleV2Block(8, 12, 1)
    assert math.isclose(n_params(ShuffleV2Block(16, 16, 1)), 8 * 8 + 8 * 9 + 8 * 8 + 3 * 2 * 8)
