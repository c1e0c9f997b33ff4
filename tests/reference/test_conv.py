"""NumPy convolutions against torch.nn.functional (forward) and torch.autograd (backward), float64."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.reference import (col2im, conv2d, conv2d_backward, conv2d_true, conv_transpose2d,
                              conv_transpose2d_backward, im2col)
from cnnkit.registry import CnnkitError

TOL = dict(rtol=1e-10, atol=1e-10)

# (C_in, C_out, kernel, stride, padding, dilation, groups, H, W)
CONV_CASES = {
    "3x3": (3, 4, 3, 1, 0, 1, 1, 7, 6),
    "stride2-pad1": (3, 4, 3, 2, 1, 1, 1, 8, 9),
    "dilated": (2, 3, 3, 1, 2, 2, 1, 9, 8),
    "grouped": (4, 6, 3, 1, 1, 1, 2, 6, 6),
    "depthwise": (4, 4, 3, 2, 1, 1, 4, 7, 7),
    "depthwise-x2": (3, 6, 3, 1, 1, 1, 3, 5, 6),
    "pointwise": (5, 2, 1, 1, 0, 1, 1, 4, 4),
    "k4-s3-uneven": (2, 2, 4, 3, 2, 1, 1, 10, 11),
    "non-square": (2, 3, (2, 3), (2, 1), (1, 0), (1, 2), 1, 7, 9),
}


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def make_conv(case, seed=0):
    c_in, c_out, k, s, p, d, g, h, w = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c_in, h, w))
    wt = rng.standard_normal((c_out, c_in // g) + _pair(k))
    b = rng.standard_normal(c_out)
    return x, wt, b, dict(stride=s, padding=p, dilation=d, groups=g)


T = torch.from_numpy


@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_im2col_col2im_match_unfold_fold(case):
    x, _, _, kw = make_conv(case)
    k = _pair(case[2])
    args = dict(kernel_size=k, stride=kw["stride"], padding=kw["padding"], dilation=kw["dilation"])
    cols = im2col(x, **args)
    np.testing.assert_array_equal(cols, F.unfold(T(x), **args).numpy())
    cols = np.random.default_rng(1).standard_normal(cols.shape)
    np.testing.assert_allclose(col2im(cols, x.shape[2:], **args),
                               F.fold(T(cols), x.shape[2:], **args).numpy(), **TOL)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv2d_forward(case, bias):
    x, w, b, kw = make_conv(case)
    b = b if bias else None
    ref = F.conv2d(T(x), T(w), None if b is None else T(b), **kw).numpy()
    out = conv2d(x, w, b, **kw)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, **TOL)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv2d_backward(case, flip):
    x, w, b, kw = make_conv(case)
    xt, wt, bt = (T(a).requires_grad_() for a in (x, w, b))
    y = F.conv2d(xt, wt.flip(-1, -2) if flip else wt, bt, **kw)
    dout = np.random.default_rng(2).standard_normal(tuple(y.shape))
    y.backward(T(dout))
    dx, dw, db = conv2d_backward(dout, x, w, **kw, flip=flip)
    for ours, ref in ((dx, xt), (dw, wt), (db, bt)):
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref.grad.numpy(), **TOL)


@pytest.mark.parametrize("case", [CONV_CASES[k] for k in ("3x3", "stride2-pad1", "grouped", "non-square")])
def test_true_convolution_is_cross_correlation_with_flipped_kernel(case):
    x, w, b, kw = make_conv(case)
    true = conv2d_true(x, w, b, **kw)
    np.testing.assert_allclose(true, conv2d(x, w[..., ::-1, ::-1], b, **kw), **TOL)
    np.testing.assert_allclose(true, conv2d(x, w, b, **kw, flip=True), **TOL)
    np.testing.assert_allclose(true, F.conv2d(T(x), T(w).flip(-1, -2), T(b), **kw).numpy(), **TOL)
    # the two really differ for a kernel that is not symmetric under a 180-degree rotation
    assert np.abs(true - conv2d(x, w, b, **kw)).max() > 1e-3


def test_true_convolution_matches_the_textbook_sum():
    """S(i, j) = sum_{m, n} I(i - m, j - n) K(m, n), 'valid' part, single channel, as plain loops."""
    rng = np.random.default_rng(3)
    img, ker = rng.standard_normal((6, 7)), rng.standard_normal((3, 2))
    kh, kw = ker.shape
    ref = np.zeros((6 - kh + 1, 7 - kw + 1))
    for i in range(kh - 1, 6):
        for j in range(kw - 1, 7):
            ref[i - kh + 1, j - kw + 1] = sum(img[i - m, j - n] * ker[m, n] for m in range(kh) for n in range(kw))
    np.testing.assert_allclose(conv2d_true(img[None, None], ker[None, None])[0, 0], ref, **TOL)
    assert not np.allclose(conv2d(img[None, None], ker[None, None])[0, 0], ref)


# (C_in, C_out, kernel, stride, padding, output_padding, groups, dilation, H, W)
TRANSPOSE_CASES = {
    "k3-s1": (3, 2, 3, 1, 0, 0, 1, 1, 4, 5),
    "k4-s2-p1-upsample": (3, 2, 4, 2, 1, 0, 1, 1, 4, 4),
    "output-padding": (2, 3, 3, 2, 1, 1, 1, 1, 3, 5),
    "grouped": (4, 6, 3, 2, 0, 0, 2, 1, 3, 3),
    "dilated-op": (2, 2, 3, 1, 1, 1, 1, 2, 4, 4),
    "non-square": (2, 3, (3, 2), (2, 3), (1, 0), (1, 2), 1, 1, 3, 4),
}


def make_transpose(case, seed=0):
    c_in, c_out, k, s, p, op, g, d, h, w = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c_in, h, w))
    wt = rng.standard_normal((c_in, c_out // g) + _pair(k))
    return x, wt, rng.standard_normal(c_out), dict(stride=s, padding=p, output_padding=op, groups=g, dilation=d)


@pytest.mark.parametrize("case", TRANSPOSE_CASES.values(), ids=TRANSPOSE_CASES.keys())
def test_conv_transpose2d_forward_and_backward(case):
    x, w, b, kw = make_transpose(case)
    xt, wt, bt = (T(a).requires_grad_() for a in (x, w, b))
    y = F.conv_transpose2d(xt, wt, bt, **kw)
    out = conv_transpose2d(x, w, b, **kw)
    assert out.shape == tuple(y.shape)
    np.testing.assert_allclose(out, y.detach().numpy(), **TOL)
    dout = np.random.default_rng(2).standard_normal(out.shape)
    y.backward(T(dout))
    for ours, ref in zip(conv_transpose2d_backward(dout, x, w, **kw), (xt, wt, bt)):
        np.testing.assert_allclose(ours, ref.grad.numpy(), **TOL)


def test_transposed_conv_is_the_adjoint_of_conv():
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)>: the same matrix, transposed."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((5, 3, 3, 3))
    y = conv2d(x, w, stride=2, padding=1)
    v = rng.standard_normal(y.shape)
    back = conv_transpose2d(v, w, stride=2, padding=1, output_padding=1)
    assert back.shape == x.shape
    np.testing.assert_allclose((y * v).sum(), (x * back).sum(), **TOL)


def test_conv_errors_are_readable():
    x = np.zeros((1, 4, 5, 5))
    with pytest.raises(CnnkitError, match="groups"):
        conv2d(x, np.zeros((6, 3, 3, 3)))
    with pytest.raises(CnnkitError, match="does not fit"):
        conv2d(x, np.zeros((2, 4, 7, 7)))
    with pytest.raises(CnnkitError, match="output_padding"):
        conv_transpose2d(x, np.zeros((4, 2, 3, 3)), stride=2, output_padding=2)
