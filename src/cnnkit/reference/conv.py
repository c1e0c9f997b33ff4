"""2-D convolution, both ways, forward and backward, and the transposed convolution.

Two operations share the name "convolution" (guide §2.1):

    cross-correlation (what PyTorch's conv2d computes, kernel not flipped)
        y[n, o, i, j] = b[o] + sum_{c, u, v} x_pad[n, c, i*S + u*D, j*S + v*D] * w[o, c, u, v]
    true convolution (the textbook definition, kernel flipped in both spatial axes)
        y[n, o, i, j] = b[o] + sum_{c, u, v} x_pad[n, c, i*S + u*D, j*S + v*D] * w[o, c, K-1-u, K-1-v]

so `conv2d_true(x, w) == conv2d(x, w[..., ::-1, ::-1])`. A learned kernel does not care which
one is used (it would just learn the flipped weights), which is why frameworks skip the flip.

Computation (im2col): every K x K x C_in patch of the input becomes one column of a matrix,
and the whole layer is a single matrix product `W (C_out, C_in*K*K) @ cols (C_in*K*K, Ho*Wo)`.
With groups, channels split into `groups` independent slices, each with its own product;
groups = C_in = C_out is the depthwise convolution.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..registry import CnnkitError
from ._common import IntPair, check_4d, crop2d, out_size, pad2d, pair, scatter_windows, windows


def im2col(x: np.ndarray, kernel_size: IntPair, stride: IntPair = 1, padding: IntPair = 0,
           dilation: IntPair = 1) -> np.ndarray:
    """Unfold patches into columns: (N, C, H, W) -> (N, C*KH*KW, Ho*Wo) (same layout as F.unfold).

    Row index = (c, u, v) flattened channel-major; column index = output position (i, j) row-major.
    """
    check_4d(x)
    k, s, p, d = pair(kernel_size), pair(stride), pair(padding), pair(dilation)
    win = windows(pad2d(x, p), k, s, d)                    # (N, C, Ho, Wo, KH, KW), a view
    n, c, ho, wo, kh, kw = win.shape
    return win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, ho * wo)


def col2im(cols: np.ndarray, output_size: IntPair, kernel_size: IntPair, stride: IntPair = 1,
           padding: IntPair = 0, dilation: IntPair = 1) -> np.ndarray:
    """Fold columns back, summing overlaps: (N, C*KH*KW, Ho*Wo) -> (N, C, H, W) (as F.fold).

    It is the adjoint (transpose) of `im2col`, which is why it appears in every backward pass.
    """
    (h, w), k, s, p, d = pair(output_size), pair(kernel_size), pair(stride), pair(padding), pair(dilation)
    ho, wo = out_size(h, k[0], s[0], p[0], d[0]), out_size(w, k[1], s[1], p[1], d[1])
    n, ckk, l = cols.shape
    if ckk % (k[0] * k[1]) or l != ho * wo:
        raise CnnkitError(f"col2im: columns of shape {cols.shape} do not match output {h}x{w}, "
                          f"kernel {k}, stride {s}, padding {p}, dilation {d}")
    c = ckk // (k[0] * k[1])
    cols6 = cols.reshape(n, c, k[0], k[1], ho, wo).transpose(0, 1, 4, 5, 2, 3)
    canvas = scatter_windows(cols6, (h + 2 * p[0], w + 2 * p[1]), s, d)
    return crop2d(canvas, p, (h, w))


def _check_groups(c_in: int, c_in_w: int, c_out: int, groups: int) -> None:
    if groups < 1 or c_in % groups or c_out % groups or c_in // groups != c_in_w:
        raise CnnkitError(
            f"channels do not match groups={groups}: input has {c_in} channels, weight expects "
            f"{c_in_w} per group and has {c_out} filters (need C_in = groups * weight.shape[1] "
            "and C_out divisible by groups)")


def conv2d(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, stride: IntPair = 1,
           padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1,
           flip: bool = False) -> np.ndarray:
    """2-D cross-correlation (PyTorch's conv2d); `flip=True` gives the true convolution.

    x: (N, C_in, H, W); w: (C_out, C_in/groups, KH, KW); b: (C_out,) or None.
    Returns (N, C_out, Ho, Wo), Ho = floor((H + 2P - D*(KH-1) - 1) / S) + 1 (same for Wo).
    stride, padding and dilation take an int or an (h, w) pair.
    """
    check_4d(x)
    check_4d(w, "w")
    if flip:
        w = w[..., ::-1, ::-1]                             # true convolution = flipped kernel
    n, c_in, h, wd = x.shape
    c_out, c_in_g, kh, kw = w.shape
    _check_groups(c_in, c_in_g, c_out, groups)
    cols = im2col(x, (kh, kw), stride, padding, dilation)  # (N, C_in*KH*KW, L)
    s, p, d = pair(stride), pair(padding), pair(dilation)
    ho, wo = out_size(h, kh, s[0], p[0], d[0]), out_size(wd, kw, s[1], p[1], d[1])
    cols = cols.reshape(n, groups, c_in_g * kh * kw, ho * wo)       # (N, G, C_in_g*K*K, L)
    wg = w.reshape(groups, c_out // groups, c_in_g * kh * kw)       # (G, C_out_g, C_in_g*K*K)
    y = (wg @ cols).reshape(n, c_out, ho, wo)                       # one matmul per group
    if b is not None:
        y = y + b.reshape(1, c_out, 1, 1)
    return y


def conv2d_true(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, stride: IntPair = 1,
                padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> np.ndarray:
    """The mathematical 2-D convolution (kernel flipped): `conv2d(x, w[..., ::-1, ::-1], ...)`.

    At stride 1 without padding, each channel pair computes the "valid" part of
    S(i, j) = sum_{m, n} I(i - m, j - n) K(m, n).
    """
    return conv2d(x, w, b, stride, padding, dilation, groups, flip=True)


def conv2d_backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray, stride: IntPair = 1,
                    padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1,
                    flip: bool = False) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of `conv2d` given dL/dy. Returns (dx, dw, db) shaped like (x, w, b).

    With y = W @ cols (per group):  dW = dy @ cols^T (summed over the batch),
    dcols = W^T @ dy, and dx = col2im(dcols): each input pixel collects the gradient of every
    window it was read into. db = dy summed over (N, Ho, Wo).
    """
    w_used = w[..., ::-1, ::-1] if flip else w
    n, c_in, h, wd = x.shape
    c_out, c_in_g, kh, kw = w.shape
    _check_groups(c_in, c_in_g, c_out, groups)
    _, _, ho, wo = dout.shape
    g, kk = groups, c_in_g * kh * kw
    cols = im2col(x, (kh, kw), stride, padding, dilation).reshape(n, g, kk, ho * wo)
    dy = dout.reshape(n, g, c_out // g, ho * wo)                    # (N, G, C_out_g, L)
    wg = w_used.reshape(g, c_out // g, kk)
    dw = (dy @ cols.transpose(0, 1, 3, 2)).sum(0).reshape(w.shape)  # (C_out, C_in_g, KH, KW)
    dcols = (wg.transpose(0, 2, 1) @ dy).reshape(n, c_in * kh * kw, ho * wo)
    dx = col2im(dcols, (h, wd), (kh, kw), stride, padding, dilation)
    if flip:                                               # gradient w.r.t. the unflipped weight
        dw = dw[..., ::-1, ::-1]
    return dx, np.ascontiguousarray(dw), dout.sum(axis=(0, 2, 3))


def conv_transpose2d(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None,
                     stride: IntPair = 1, padding: IntPair = 0, output_padding: IntPair = 0,
                     groups: int = 1, dilation: IntPair = 1) -> np.ndarray:
    """Transposed convolution ("deconvolution"), the learnable upsampling of FCN/U-Net/GANs.

    x: (N, C_in, H, W); w: (C_in, C_out/groups, KH, KW) (PyTorch's layout for this op).
    Returns (N, C_out, Ho, Wo), Ho = (H-1)*S - 2P + D*(KH-1) + output_padding + 1.

    Each input pixel stamps a copy of the kernel, scaled by its value, onto the output at
    stride S, and overlapping stamps add up. That is exactly the input-gradient of `conv2d`
    (dcols = W^T @ x, then col2im), hence the name: the conv's matrix, transposed.
    """
    check_4d(x)
    check_4d(w, "w")
    n, c_in, h, wd = x.shape
    c_in_w, c_out_g, kh, kw = w.shape
    if c_in != c_in_w or c_in % groups:
        raise CnnkitError(f"conv_transpose2d: input has {c_in} channels, weight expects {c_in_w} "
                          f"(and it must be divisible by groups={groups})")
    s, p, op, d = pair(stride), pair(padding), pair(output_padding), pair(dilation)
    if not all(0 <= op[i] < max(s[i], d[i]) for i in range(2)):
        raise CnnkitError(f"output_padding {op} must be smaller than stride {s} or dilation {d}")
    h_out = (h - 1) * s[0] - 2 * p[0] + d[0] * (kh - 1) + op[0] + 1
    w_out = (wd - 1) * s[1] - 2 * p[1] + d[1] * (kw - 1) + op[1] + 1
    if h_out < 1 or w_out < 1:
        raise CnnkitError(f"padding {p} is too large: output would be {h_out}x{w_out}")
    g = groups
    xg = x.reshape(n, g, c_in // g, h * wd)                         # (N, G, C_in_g, L)
    wg = w.reshape(g, c_in // g, c_out_g * kh * kw)                 # (G, C_in_g, C_out_g*K*K)
    cols = wg.transpose(0, 2, 1) @ xg                               # (N, G, C_out_g*K*K, L)
    cols6 = cols.reshape(n, g * c_out_g, kh, kw, h, wd).transpose(0, 1, 4, 5, 2, 3)
    canvas = scatter_windows(cols6, (h_out + 2 * p[0], w_out + 2 * p[1]), s, d)
    y = crop2d(canvas, p, (h_out, w_out))
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(y)


def conv_transpose2d_backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray, stride: IntPair = 1,
                              padding: IntPair = 0, output_padding: IntPair = 0, groups: int = 1,
                              dilation: IntPair = 1) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of `conv_transpose2d`: (dx, dw, db). The roles of conv2d swap.

    The forward was conv2d's backward-data, so its backward-data is conv2d's forward:
    dx = conv2d(dout, w). Its weight gradient is conv2d's weight gradient with input and
    output exchanged. (Rows/columns that output_padding added beyond a conv's reach are cropped.)
    """
    n, c_in, h, wd = x.shape
    dx = conv2d(dout, w, None, stride, padding, dilation, groups)[:, :, :h, :wd]
    kh, kw = w.shape[2:]
    s, p, d = pair(stride), pair(padding), pair(dilation)
    win = windows(pad2d(dout, p), (kh, kw), s, d)[:, :, :h, :wd]      # (N, C_out, H, W, KH, KW)
    g, c_out = groups, dout.shape[1]
    cols = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, g, (c_out // g) * kh * kw, h * wd)
    xg = x.reshape(n, g, c_in // g, h * wd)
    dw = (xg @ cols.transpose(0, 1, 3, 2)).sum(0).reshape(w.shape)  # (C_in, C_out_g, KH, KW)
    return np.ascontiguousarray(dx), dw, dout.sum(axis=(0, 2, 3))
