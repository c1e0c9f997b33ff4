"""NumPy softmax and cross-entropy against torch.nn.functional and autograd, float64."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.reference import cross_entropy, cross_entropy_backward, log_softmax, softmax
from cnnkit.registry import CnnkitError

TOL = dict(rtol=1e-10, atol=1e-12)
T = torch.from_numpy


def test_softmax_and_log_softmax():
    x = np.random.default_rng(0).standard_normal((4, 7)) * 5
    np.testing.assert_allclose(softmax(x), torch.softmax(T(x), -1).numpy(), **TOL)
    np.testing.assert_allclose(softmax(x, axis=0), torch.softmax(T(x), 0).numpy(), **TOL)
    np.testing.assert_allclose(log_softmax(x), torch.log_softmax(T(x), -1).numpy(), **TOL)
    np.testing.assert_allclose(softmax(x).sum(-1), 1.0, **TOL)


def test_softmax_is_stable_for_huge_logits():
    x = np.array([[1000.0, 999.0, -1000.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p, lp = softmax(x), log_softmax(x)
    np.testing.assert_allclose(p, torch.softmax(T(x), -1).numpy(), **TOL)
    np.testing.assert_allclose(lp, torch.log_softmax(T(x), -1).numpy(), **TOL)
    assert np.isfinite(lp).all()


def make_targets(kind, shape, rng):
    """Class indices (N, d...) or probabilities shaped like the logits (N, C, d...)."""
    n, c, rest = shape[0], shape[1], shape[2:]
    if kind == "index":
        return rng.integers(0, c, (n,) + rest)
    return np.moveaxis(softmax(rng.standard_normal((n,) + rest + (c,)) * 2), -1, 1)


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 2, 3)], ids=["N,C", "N,C,H,W"])
@pytest.mark.parametrize("kind", ["index", "soft"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_forward_and_backward(shape, kind, smoothing, reduction):
    rng = np.random.default_rng(1)
    z, y = rng.standard_normal(shape) * 2, make_targets(kind, shape, rng)
    zt = T(z).requires_grad_()
    loss_t = F.cross_entropy(zt, T(y), label_smoothing=smoothing, reduction=reduction)
    loss = cross_entropy(z, y, label_smoothing=smoothing, reduction=reduction)
    np.testing.assert_allclose(loss, loss_t.detach().numpy(), **TOL)
    dout = rng.standard_normal(loss.shape) if reduction == "none" else 1.0
    loss_t.backward(T(np.asarray(dout)))
    grad = cross_entropy_backward(z, y, label_smoothing=smoothing, reduction=reduction, dout=dout)
    np.testing.assert_allclose(grad, zt.grad.numpy(), **TOL)


def test_gradient_is_softmax_minus_onehot_over_n():
    rng = np.random.default_rng(2)
    z, y = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    np.testing.assert_allclose(cross_entropy_backward(z, y), (softmax(z) - np.eye(5)[y]) / 6, **TOL)


def test_cross_entropy_errors():
    z = np.zeros((2, 3))
    with pytest.raises(CnnkitError, match="class indices"):
        cross_entropy(z, np.array([0, 3]))
    with pytest.raises(CnnkitError, match="targets must be"):
        cross_entropy(z, np.array([0, 1, 2]))
    with pytest.raises(CnnkitError, match="reduction"):
        cross_entropy(z, np.array([0, 1]), reduction="avg")
