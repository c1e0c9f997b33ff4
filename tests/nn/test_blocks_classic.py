"""Classic blocks: residual, inception, dense, transposed conv -- each checked against torchvision's
own block (same weights, same output) or against the formula it implements."""
import importlib
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.nn.dense import DenseBlock, DenseLayer, Transition
from cnnkit.nn.inception import Inception, NaiveInception, inception_conv_params
from cnnkit.nn.residual import BasicBlock, Bottleneck, make_downsample, make_res_stage
from cnnkit.nn.transposed import ConvTransposeNormAct, exact_upsample_padding, transposed_output_size

tv_resnet = importlib.import_module("torchvision.models.resnet")
tv_googlenet = importlib.import_module("torchvision.models.googlenet")
tv_densenet = importlib.import_module("torchvision.models.densenet")


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights *and* norm statistics, so a swapped or ignored tensor changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in module.state_dict().items():
            if k.endswith("num_batches_tracked"):
                continue
            if k.endswith("running_var") or (t.dim() == 1 and k.endswith("weight")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() == 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
            else:
                t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)
    return module.eval()


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------- residual
@pytest.mark.parametrize("block, tv_block, in_chs, planes, stride", [
    (BasicBlock, tv_resnet.BasicBlock, 16, 16, 1),
    (BasicBlock, tv_resnet.BasicBlock, 8, 16, 2),
    (Bottleneck, tv_resnet.Bottleneck, 64, 16, 1),
    (Bottleneck, tv_resnet.Bottleneck, 32, 16, 2),
])
def test_residual_blocks_match_torchvision(block, tv_block, in_chs, planes, stride):
    out = planes * block.expansion
    ds = make_downsample(in_chs, out, stride)
    ours = randomize_(block(in_chs, planes, stride, ds))
    ref = tv_block(in_chs, planes, stride, make_downsample(in_chs, out, stride)).eval()
    ref.load_state_dict(ours.state_dict())  # same names: strict load succeeds
    x = torch.randn(2, in_chs, 9, 9)
    with torch.no_grad():
        y = ours(x)
        torch.testing.assert_close(y, ref(x), rtol=0, atol=1e-5)
    assert y.shape == (2, out, (9 - 1) // stride + 1, (9 - 1) // stride + 1)
    if block is Bottleneck and stride == 2:  # ResNet v1.5: the stride is on the 3x3 conv
        assert ours.conv1.stride == (1, 1) and ours.conv2.stride == (2, 2)


@pytest.mark.parametrize("block, in_chs", [(BasicBlock, 16), (Bottleneck, 64)])
@pytest.mark.parametrize("train", [False, True])
def test_zero_init_residual_block_is_identity(block, in_chs, train):
    """gamma = 0 in the last norm (beta starts at 0) => F(x) = 0 => y = relu(x + 0) = x for x >= 0."""
    torch.manual_seed(0)
    blk = block(in_chs, in_chs // block.expansion).train(train)  # random convs, fresh norms
    last_norm = blk.bn3 if block is Bottleneck else blk.bn2
    blk.zero_init_last()
    assert torch.count_nonzero(last_norm.weight) == 0
    x = torch.randn(2, in_chs, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(blk(x.relu()), x.relu(), rtol=0, atol=0)  # e.g. a previous ReLU's output
        torch.testing.assert_close(blk(x), x.relu(), rtol=0, atol=0)  # negative inputs: only relu(x)
        nn.init.ones_(last_norm.weight)
        assert not torch.allclose(blk(x.relu()), x.relu())  # with gamma != 0 the branch contributes


def test_res_stage_shapes_and_shortcuts():
    stage = make_res_stage(Bottleneck, 64, 32, 3, stride=2)
    assert stage[0].downsample is not None and stage[1].downsample is None and stage[2].downsample is None
    assert stage(torch.randn(1, 64, 8, 8)).shape == (1, 128, 4, 4)
    assert make_downsample(64, 64, 1) is None
    with pytest.raises(ValueError):
        BasicBlock(64, 64, groups=2)


def test_residual_block_act_and_norm_by_name():
    blk = BasicBlock(8, 8, norm_layer="group", act_layer="elu")
    assert isinstance(blk.bn1, nn.GroupNorm) and isinstance(blk.act1, nn.ELU)


# ---------------------------------------------------------------- inception
def test_inception_matches_torchvision():
    row = (192, 64, 96, 128, 16, 32, 32)  # GoogLeNet's inception(3a)
    ours = randomize_(Inception(*row, kernel_5x5=3, norm_layer=partial(nn.BatchNorm2d, eps=1e-3)))
    ref = tv_googlenet.Inception(*row).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(1, 192, 7, 7)
    with torch.no_grad():
        y = ours(x)
        torch.testing.assert_close(y, ref(x), rtol=0, atol=1e-5)
    assert y.shape == (1, 256, 7, 7) and ours.out_channels == 64 + 128 + 32 + 32


def test_inception_bottlenecks_reduce_parameters():
    """The guide's point: 1x1 convs before the 3x3/5x5 convs cut the cost (GoogLeNet's 3a numbers)."""
    in_chs, c1, c3r, c3, c5r, c5, pp = 192, 64, 96, 128, 16, 32, 32
    with_bn = Inception(in_chs, c1, c3r, c3, c5r, c5, pp, norm_layer=None)
    naive = NaiveInception(in_chs, c1, c3, c5, norm_layer=None)
    conv_weights = lambda m: sum(p.numel() for k, p in m.named_parameters() if k.endswith("conv.weight"))
    # K*K*C_in*C_out per conv, by hand
    assert conv_weights(naive) == 192 * 64 + 9 * 192 * 128 + 25 * 192 * 32 == 387_072
    assert conv_weights(with_bn) == 192 * (64 + 96 + 16 + 32) + 9 * 96 * 128 + 25 * 16 * 32 == 163_328
    assert inception_conv_params(in_chs, c1, c3r, c3, c5r, c5, pp, naive=True) == conv_weights(naive)
    assert inception_conv_params(in_chs, c1, c3r, c3, c5r, c5, pp) == conv_weights(with_bn)
    assert n_params(naive) > 2.3 * n_params(with_bn)
    x = torch.randn(1, in_chs, 8, 8)
    # and the naive module's output is wider: the pool branch passes all 192 input channels through
    assert naive(x).shape == (1, 64 + 128 + 32 + 192, 8, 8)
    assert with_bn(x).shape == (1, 256, 8, 8)


# ---------------------------------------------------------------- dense
def test_dense_block_and_transition_match_torchvision():
    ours = randomize_(nn.Sequential(DenseBlock(3, 16, 8, bn_size=4), Transition(16 + 3 * 8, 20)))
    ref = nn.Sequential(tv_densenet._DenseBlock(3, 16, bn_size=4, growth_rate=8, drop_rate=0.0),
                        tv_densenet._Transition(40, 20)).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        y = ours(x)
        torch.testing.assert_close(y, ref(x), rtol=0, atol=1e-5)
    assert y.shape == (2, 20, 4, 4) and ours[0].out_channels == 40
    # dense connectivity: layer l sees in_chs + l*k channels
    assert [layer.conv1.in_channels for layer in ours[0].values()] == [16, 24, 32]


def test_dense_layer_memory_efficient_same_output_and_grads():
    torch.manual_seed(0)
    a = DenseBlock(2, 8, 4, bn_size=2)
    b = DenseBlock(2, 8, 4, bn_size=2, memory_efficient=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb)
    ga = torch.autograd.grad(ya.square().sum(), [x, *a.parameters()])
    gb = torch.autograd.grad(yb.square().sum(), [x, *b.parameters()])
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v)


def test_dense_layer_dropout_only_in_training():
    layer = DenseLayer(8, 4, drop_rate=0.5).eval()
    x = [torch.randn(1, 8, 4, 4)]
    torch.testing.assert_close(layer(x), layer(x))


# ---------------------------------------------------------------- transposed
@pytest.mark.parametrize("size, k, s, p, op, d", [
    (5, 3, 1, 1, 0, 1), (5, 3, 2, 1, 1, 1), (7, 4, 2, 1, 0, 1), (4, 2, 2, 0, 0, 1), (6, 5, 3, 2, 2, 1),
    (3, 3, 2, 0, 0, 2), (8, 7, 4, 3, 1, 1),
])
def test_transposed_output_size_formula(size, k, s, p, op, d):
    layer = ConvTransposeNormAct(2, 3, k, s, p, op, dilation=d, norm_layer=None, act_layer=None)
    y = layer(torch.randn(1, 2, size, size))
    assert y.shape[-1] == transposed_output_size(size, k, s, p, op, d) == layer.output_size(size)
    if d == 1:
        assert y.shape[-1] == (size - 1) * s - 2 * p + k + op  # the documented formula


@pytest.mark.parametrize("k, s", [(4, 2), (3, 2), (2, 2), (3, 1), (5, 3), (8, 4)])
def test_transposed_default_padding_upsamples_exactly(k, s):
    layer = ConvTransposeNormAct(4, 2, k, s)
    assert layer(torch.randn(2, 4, 5, 7)).shape == (2, 2, 5 * s, 7 * s)
    p, op = exact_upsample_padding(k, s)
    assert 0 <= op < s or (s == 1 and op == 0)


def test_transposed_conv_is_adjoint_of_conv():
    """<conv(x), y> == <x, conv_transpose(y)> with the same weights: the transpose is conv's adjoint."""
    layer = ConvTransposeNormAct(5, 3, 3, 2, 1, 1, norm_layer=None, act_layer=None, bias=False).double()
    w = layer.conv.weight  # (in=5, out=3, 3, 3): a conv from 3 to 5 channels uses the same tensor
    x = torch.randn(2, 3, 8, 8, dtype=torch.double)
    y = torch.randn(2, 5, 4, 4, dtype=torch.double)
    lhs = (F.conv2d(x, w, stride=2, padding=1) * y).sum()
    rhs = (x * layer(y)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_transposed_norm_act_and_errors():
    layer = ConvTransposeNormAct(4, 6)
    assert layer.conv.bias is None and isinstance(layer.bn, nn.BatchNorm2d) and isinstance(layer.act, nn.ReLU)
    assert ConvTransposeNormAct(4, 6, norm_layer=None).conv.bias is not None
    with pytest.raises(ValueError):
        ConvTransposeNormAct(4, 6, kernel_size=1, stride=2)
    with pytest.raises(ValueError):
        ConvTransposeNormAct(4, 6, 3, 2, padding=1, output_padding=2)
