"""The guide's formulas (§2.2, §2.3) against the parameter counts and output shapes PyTorch produces."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.reference import conv_output_size, conv_params, conv_transpose_output_size, fc_params
from cnnkit.registry import CnnkitError


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_guide_example_conv_vs_fc():
    # 64 3x3 kernels on a 224x224x3 input: (3*3*3 + 1) * 64
    assert conv_params(3, 3, 64) == 1_792 == n_params(nn.Conv2d(3, 64, 3))
    # a dense layer from the flattened input to 64 units: (224*224*3 + 1) * 64
    assert fc_params(224 * 224 * 3, 64) == 9_633_856 == (224 * 224 * 3 + 1) * 64
    assert fc_params(224 * 224 * 3, 64) // conv_params(3, 3, 64) == 5_376


@pytest.mark.parametrize("k,c_in,c_out,groups,bias", [
    (3, 3, 64, 1, True), (5, 16, 32, 1, False), ((1, 7), 8, 8, 1, True),
    (3, 32, 32, 32, False),   # depthwise
    (3, 12, 24, 4, True),     # grouped
    (1, 32, 64, 1, False),    # pointwise
])
def test_conv_params_matches_torch(k, c_in, c_out, groups, bias):
    assert conv_params(k, c_in, c_out, groups, bias) == n_params(
        nn.Conv2d(c_in, c_out, k, groups=groups, bias=bias))


def test_fc_params_matches_torch():
    assert fc_params(128, 10) == n_params(nn.Linear(128, 10))
    assert fc_params(128, 10, bias=False) == n_params(nn.Linear(128, 10, bias=False))


def test_guide_common_settings():
    assert conv_output_size(224, 3, 1, 1) == 224   # K=3, S=1, P=1 keeps the size
    assert conv_output_size(224, 3, 2, 1) == 112   # K=3, S=2, P=1 halves it
    assert conv_output_size(7, 3, 2, 1) == 4       # ... rounding up for odd sizes


@torch.no_grad()
def test_output_size_formula_over_a_grid():
    """floor((W - D(K-1) - 1 + 2P) / S) + 1 equals the shape F.conv2d returns, or both refuse."""
    checked = refused = 0
    for w, k, s, p, d in itertools.product((1, 4, 7, 10), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2)):
        x, weight = torch.zeros(1, 1, w, w + 1), torch.zeros(1, 1, k, k)
        try:
            shape = F.conv2d(x, weight, stride=s, padding=p, dilation=d).shape
        except RuntimeError:
            with pytest.raises(CnnkitError):
                conv_output_size(w, k, s, p, d)
            refused += 1
            continue
        assert (conv_output_size(w, k, s, p, d), conv_output_size(w + 1, k, s, p, d)) == tuple(shape[2:])
        checked += 1
    assert checked > 200 and refused > 10


@torch.no_grad()
def test_transpose_output_size_formula_over_a_grid():
    checked = 0
    for w, k, s, p, d in itertools.product((1, 4), (1, 2, 3), (1, 2, 3), (0, 1), (1, 2)):
        for op in range(max(s, d)):
            x, weight = torch.zeros(1, 1, w, w), torch.zeros(1, 1, k, k)
            try:
                shape = F.conv_transpose2d(x, weight, stride=s, padding=p, output_padding=op, dilation=d).shape
            except RuntimeError:
                with pytest.raises(CnnkitError):
                    conv_transpose_output_size(w, k, s, p, d, op)
                continue
            out = conv_transpose_output_size(w, k, s, p, d, op)
            assert out == shape[-1]
            if op < s:  # the conv with the same settings maps the upsampled size back to w
                assert conv_output_size(out, k, s, p, d) == w
            checked += 1
    assert checked > 60


def test_bad_values_raise_readable_errors():
    for call in (lambda: conv_output_size(8, 0), lambda: conv_output_size(8, 3, p=-1),
                 lambda: conv_params(3, 6, 4, groups=4), lambda: fc_params(0, 3),
                 lambda: conv_transpose_output_size(4, 3, s=2, output_padding=2)):
        with pytest.raises(CnnkitError):
            call()
