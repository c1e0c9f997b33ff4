"""NumPy pooling against torch.nn.functional and autograd, float64."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.reference import (avg_pool2d, avg_pool2d_backward, global_avg_pool, global_avg_pool_backward,
                              max_pool2d, max_pool2d_backward)
from cnnkit.registry import CnnkitError

TOL = dict(rtol=1e-10, atol=1e-10)
T = torch.from_numpy

# (kernel, stride, padding, H, W)
POOL_CASES = {
    "2x2": (2, None, 0, 6, 8),
    "3s2p1": (3, 2, 1, 7, 9),
    "3s1p1-overlap": (3, 1, 1, 5, 5),
    "non-square": ((2, 3), (1, 2), (1, 1), 6, 7),
    "uneven": (3, 3, 0, 8, 10),   # trailing rows/cols not covered by any window
}


def run_pool(torch_fn, our_fn, our_bwd, case, **extra):
    k, s, p, h, w = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, h, w))
    xt = T(x).requires_grad_()
    y = torch_fn(xt, k, s, p, **extra)
    out = our_fn(x, k, s, p, **extra)
    assert out.shape == tuple(y.shape)
    np.testing.assert_allclose(out, y.detach().numpy(), **TOL)
    dout = rng.standard_normal(out.shape)
    y.backward(T(dout))
    dx = our_bwd(dout, x, k, s, p, **extra)
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)


@pytest.mark.parametrize("case", POOL_CASES.values(), ids=POOL_CASES.keys())
def test_max_pool(case):
    run_pool(F.max_pool2d, max_pool2d, max_pool2d_backward, case)


def test_dilated_max_pool():
    run_pool(F.max_pool2d, max_pool2d, max_pool2d_backward, (3, 1, 1, 7, 7), dilation=2)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("case", POOL_CASES.values(), ids=POOL_CASES.keys())
def test_avg_pool(case, count_include_pad):
    run_pool(F.avg_pool2d, avg_pool2d, avg_pool2d_backward, case, count_include_pad=count_include_pad)


def test_max_pool_gradient_goes_to_the_max_only():
    x = np.array([[[[1.0, 5.0], [2.0, 3.0]]]])
    assert max_pool2d(x, 2).item() == 5.0
    np.testing.assert_array_equal(max_pool2d_backward(np.array([[[[7.0]]]]), x, 2),
                                  [[[[0.0, 7.0], [0.0, 0.0]]]])


def test_global_avg_pool():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 5, 3))
    xt = T(x).requires_grad_()
    y = F.adaptive_avg_pool2d(xt, 1).flatten(1)
    np.testing.assert_allclose(global_avg_pool(x), y.detach().numpy(), **TOL)
    dout = rng.standard_normal((2, 4))
    y.backward(T(dout))
    np.testing.assert_allclose(global_avg_pool_backward(dout, x.shape), xt.grad.numpy(), **TOL)


def test_pool_padding_limit():
    with pytest.raises(CnnkitError, match="half the kernel"):
        max_pool2d(np.zeros((1, 1, 4, 4)), 2, padding=2)
