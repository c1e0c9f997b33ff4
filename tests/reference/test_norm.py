"""NumPy batch norm against F.batch_norm, nn.BatchNorm2d and autograd, float64."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.reference import batch_norm, batch_norm_backward
from cnnkit.registry import CnnkitError

TOL = dict(rtol=1e-10, atol=1e-10)
T = torch.from_numpy


def test_running_stats_match_batchnorm2d_after_train_steps():
    """Two train steps then eval: running mean, unbiased running var and eval output all agree."""
    rng = np.random.default_rng(0)
    bn = nn.BatchNorm2d(3, momentum=0.2).double()
    with torch.no_grad():
        bn.weight.copy_(T(rng.standard_normal(3)))
        bn.bias.copy_(T(rng.standard_normal(3)))
    gamma, beta = bn.weight.detach().numpy().copy(), bn.bias.detach().numpy().copy()
    rm, rv = np.zeros(3), np.ones(3)
    bn.train()
    with torch.no_grad():
        for step in range(2):
            x = rng.standard_normal((4, 3, 3, 5)) * 2 + 1
            y_ref = bn(T(x)).numpy()
            y, rm, rv = batch_norm(x, gamma, beta, rm, rv, training=True, momentum=0.2)
            np.testing.assert_allclose(y, y_ref, **TOL)
            np.testing.assert_allclose(rm, bn.running_mean.numpy(), **TOL)
            np.testing.assert_allclose(rv, bn.running_var.numpy(), **TOL)
        x = rng.standard_normal((2, 3, 4, 4))
        bn.eval()
        y, rm2, rv2 = batch_norm(x, gamma, beta, rm, rv, training=False)
        np.testing.assert_allclose(y, bn(T(x)).numpy(), **TOL)
        assert rm2 is rm and rv2 is rv


def test_running_var_uses_the_unbiased_variance():
    x = np.random.default_rng(3).standard_normal((2, 2, 2, 2))   # M = 8 values per channel
    _, rm, rv = batch_norm(x, running_mean=np.zeros(2), running_var=np.ones(2), momentum=0.1)
    np.testing.assert_allclose(rm, 0.1 * x.mean(axis=(0, 2, 3)), **TOL)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1), **TOL)
    assert not np.allclose(rv, 0.9 + 0.1 * x.var(axis=(0, 2, 3)))


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 4, 5)])
@pytest.mark.parametrize("affine", [True, False])
def test_train_forward_and_backward(shape, affine):
    rng = np.random.default_rng(1)
    c = shape[1]
    x = rng.standard_normal(shape) * 3 - 1
    g, b = (rng.standard_normal(c), rng.standard_normal(c)) if affine else (None, None)
    xt = T(x).requires_grad_()
    gt = T(g).requires_grad_() if affine else None
    bt = T(b).requires_grad_() if affine else None
    rm_t, rv_t = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    y_t = F.batch_norm(xt, rm_t, rv_t, gt, bt, training=True, momentum=0.1, eps=1e-5)
    y, rm, rv = batch_norm(x, g, b, np.zeros(c), np.ones(c), training=True)
    np.testing.assert_allclose(y, y_t.detach().numpy(), **TOL)
    np.testing.assert_allclose(rm, rm_t.numpy(), **TOL)
    np.testing.assert_allclose(rv, rv_t.numpy(), **TOL)
    dout = rng.standard_normal(shape)
    y_t.backward(T(dout))
    dx, dg, db = batch_norm_backward(dout, x, g)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
    if affine:
        np.testing.assert_allclose(dg, gt.grad.numpy(), **TOL)
        np.testing.assert_allclose(db, bt.grad.numpy(), **TOL)


def test_eval_backward():
    rng = np.random.default_rng(2)
    x, g, b = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    xt, gt, bt = (T(a).requires_grad_() for a in (x, g, b))
    y_t = F.batch_norm(xt, T(rm), T(rv), gt, bt, training=False)
    np.testing.assert_allclose(batch_norm(x, g, b, rm, rv, training=False)[0], y_t.detach().numpy(), **TOL)
    dout = rng.standard_normal(x.shape)
    y_t.backward(T(dout))
    grads = batch_norm_backward(dout, x, g, training=False, running_mean=rm, running_var=rv)
    for ours, ref in zip(grads, (xt, gt, bt)):
        np.testing.assert_allclose(ours, ref.grad.numpy(), **TOL)


def test_batch_norm_errors():
    with pytest.raises(CnnkitError, match="running_mean"):
        batch_norm(np.zeros((2, 3)), training=False)
    with pytest.raises(CnnkitError, match="more than one value"):
        batch_norm(np.zeros((1, 3)), training=True)
