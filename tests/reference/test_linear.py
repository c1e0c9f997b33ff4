"""NumPy linear layer and dropout against torch.nn.functional and autograd, float64."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.reference import dropout, dropout_backward, linear, linear_backward
from cnnkit.registry import CnnkitError

TOL = dict(rtol=1e-10, atol=1e-12)
T = torch.from_numpy


@pytest.mark.parametrize("lead", [(4,), (2, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward_and_backward(lead, bias):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(lead + (5,)), rng.standard_normal((3, 5)), rng.standard_normal(3)
    xt, wt, bt = (T(a).requires_grad_() for a in (x, w, b))
    y = F.linear(xt, wt, bt if bias else None)
    np.testing.assert_allclose(linear(x, w, b if bias else None), y.detach().numpy(), **TOL)
    dout = rng.standard_normal(tuple(y.shape))
    y.backward(T(dout))
    dx, dw, db = linear_backward(dout, x, w)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
    np.testing.assert_allclose(dw, wt.grad.numpy(), **TOL)
    if bias:
        np.testing.assert_allclose(db, bt.grad.numpy(), **TOL)
    with pytest.raises(CnnkitError, match="features"):
        linear(x, w.T)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_matches_torch_for_the_same_mask(p):
    """Take the units PyTorch kept, and check the scaling and the gradient agree exactly."""
    x = np.random.default_rng(1).standard_normal((4, 50)) + 5.0     # never exactly 0
    xt = T(x).requires_grad_()
    torch.manual_seed(0)
    y_t = F.dropout(xt, p, training=True)
    keep = y_t.detach().numpy() != 0
    y, scale = dropout(x, p, keep=keep)
    np.testing.assert_allclose(y, y_t.detach().numpy(), **TOL)
    dout = np.random.default_rng(2).standard_normal(x.shape)
    y_t.backward(T(dout))
    np.testing.assert_allclose(dropout_backward(dout, scale), xt.grad.numpy(), **TOL)


def test_dropout_statistics_and_modes():
    x = np.ones((200, 100))
    y, scale = dropout(x, 0.3, rng=np.random.default_rng(3))
    kept = (y != 0).mean()
    assert abs(kept - 0.7) < 0.02                     # ~ Bernoulli(0.7), 20,000 draws
    np.testing.assert_allclose(y[y != 0], 1 / 0.7)    # survivors scaled by 1 / (1 - p)
    assert abs(y.mean() - 1.0) < 0.03                 # expectation preserved
    np.testing.assert_array_equal(dropout(x, 0.3, training=False)[0], x)
    np.testing.assert_array_equal(dropout(x, 1.0)[0], 0.0)
    np.testing.assert_array_equal(dropout(x, 0.0)[0], x)
    with pytest.raises(CnnkitError):
        dropout(x, 1.5)
