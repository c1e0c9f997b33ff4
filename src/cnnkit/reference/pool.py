"""Pooling (guide §3.3): max, average and global average, forward and backward.

Pooling slides a K x K window like a convolution but with no weights and per channel:
max keeps the strongest response in each window (small shifts leave it unchanged), average
smooths. Output size is the conv formula floor((W + 2P - K) / S) + 1; stride defaults to K.
Global average pooling reduces each whole feature map to one number, (N, C, H, W) -> (N, C),
and replaces the big fully connected layers of older networks (and makes CAM possible).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..registry import CnnkitError
from ._common import IntPair, check_4d, crop2d, pad2d, pair, scatter_windows, windows


def _pool_args(kernel_size: IntPair, stride: Optional[IntPair], padding: IntPair):
    k = pair(kernel_size, "kernel_size")
    s = k if stride is None else pair(stride, "stride")
    p = pair(padding, "padding")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise CnnkitError(f"pool padding {p} must be at most half the kernel size {k}")
    return k, s, p


def max_pool2d(x: np.ndarray, kernel_size: IntPair, stride: Optional[IntPair] = None,
               padding: IntPair = 0, dilation: IntPair = 1) -> np.ndarray:
    """y[n, c, i, j] = max over the window at (i*S, j*S) of x padded with -inf.

    x: (N, C, H, W) -> (N, C, Ho, Wo). Padding uses -inf so it never wins the max.
    """
    check_4d(x)
    k, s, p = _pool_args(kernel_size, stride, padding)
    return windows(pad2d(x, p, -np.inf), k, s, pair(dilation)).max(axis=(-2, -1))


def max_pool2d_backward(dout: np.ndarray, x: np.ndarray, kernel_size: IntPair,
                        stride: Optional[IntPair] = None, padding: IntPair = 0,
                        dilation: IntPair = 1) -> np.ndarray:
    """dL/dx of `max_pool2d`: each output's gradient goes to the one input that was the max.

    dout: (N, C, Ho, Wo) -> dx: (N, C, H, W). An input that is the max of several overlapping
    windows collects all their gradients; every other input gets 0.
    """
    k, s, p = _pool_args(kernel_size, stride, padding)
    d = pair(dilation)
    win = windows(pad2d(x, p, -np.inf), k, s, d)           # (N, C, Ho, Wo, KH, KW)
    flat = win.reshape(win.shape[:4] + (-1,))              # (N, C, Ho, Wo, KH*KW)
    arg = flat.argmax(axis=-1)                             # first max in each window
    onehot = np.arange(flat.shape[-1]) == arg[..., None]   # (N, C, Ho, Wo, KH*KW)
    dcols = (onehot * dout[..., None]).reshape(win.shape)
    canvas = scatter_windows(dcols, (x.shape[2] + 2 * p[0], x.shape[3] + 2 * p[1]), s, d)
    return crop2d(canvas, p, x.shape[2:])


def _avg_divisor(x_hw, k, s, p, count_include_pad: bool) -> np.ndarray | float:
    """How many values each window averages: K*K, or only the non-padding ones."""
    if count_include_pad:
        return float(k[0] * k[1])
    ones = np.ones((1, 1) + tuple(x_hw))
    return windows(pad2d(ones, p), k, s, (1, 1)).sum(axis=(-2, -1))  # (1, 1, Ho, Wo)


def avg_pool2d(x: np.ndarray, kernel_size: IntPair, stride: Optional[IntPair] = None,
               padding: IntPair = 0, count_include_pad: bool = True) -> np.ndarray:
    """y[n, c, i, j] = mean over the window at (i*S, j*S) of the zero-padded x.

    x: (N, C, H, W) -> (N, C, Ho, Wo). count_include_pad=True (PyTorch's default) divides by
    K*K even where the window overlaps padding; False divides by the real pixels only.
    """
    check_4d(x)
    k, s, p = _pool_args(kernel_size, stride, padding)
    total = windows(pad2d(x, p), k, s, (1, 1)).sum(axis=(-2, -1))
    return total / _avg_divisor(x.shape[2:], k, s, p, count_include_pad)


def avg_pool2d_backward(dout: np.ndarray, x: np.ndarray, kernel_size: IntPair,
                        stride: Optional[IntPair] = None, padding: IntPair = 0,
                        count_include_pad: bool = True) -> np.ndarray:
    """dL/dx of `avg_pool2d`: each output spreads dout / divisor evenly over its window.

    dout: (N, C, Ho, Wo) -> dx: (N, C, H, W).
    """
    k, s, p = _pool_args(kernel_size, stride, padding)
    share = dout / _avg_divisor(x.shape[2:], k, s, p, count_include_pad)   # (N, C, Ho, Wo)
    dcols = np.broadcast_to(share[..., None, None], share.shape + k)
    canvas = scatter_windows(dcols, (x.shape[2] + 2 * p[0], x.shape[3] + 2 * p[1]), s, (1, 1))
    return crop2d(canvas, p, x.shape[2:])


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    """GAP: mean of each feature map. (N, C, H, W) -> (N, C)."""
    check_4d(x)
    return x.mean(axis=(2, 3))


def global_avg_pool_backward(dout: np.ndarray, x_shape) -> np.ndarray:
    """dL/dx of GAP: every pixel of map (n, c) gets dout[n, c] / (H*W). (N, C) -> (N, C, H, W)."""
    n, c, h, w = x_shape
    return np.broadcast_to(dout[:, :, None, None] / (h * w), (n, c, h, w)).copy()
