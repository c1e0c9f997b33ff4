"""The two primitives every sliding-window operation here is built on.

`windows` *reads* all K x K patches of a padded image as a zero-copy strided view;
`scatter_windows` *writes* them back, adding where patches overlap. Convolution, pooling and
their backward passes (and the transposed convolution) are all "read windows, combine" or
"spread values over windows, add".
"""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..registry import CnnkitError

IntPair = Union[int, Tuple[int, int]]


def pair(v: IntPair, what: str = "value") -> Tuple[int, int]:
    """3 -> (3, 3); (3, 5) stays. Height first, width second."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise CnnkitError(f"{what} must be an int or a pair (h, w), got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    """floor((W + 2P - D*(K-1) - 1) / S) + 1, the one output-size formula of every window op."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def pad2d(x: np.ndarray, padding: Tuple[int, int], value: float = 0.0) -> np.ndarray:
    """Pad the last two axes of (N, C, H, W) by (ph, pw) on each side."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def windows(xp: np.ndarray, kernel: Tuple[int, int], stride: Tuple[int, int],
            dilation: Tuple[int, int]) -> np.ndarray:
    """All kernel windows of an already padded (N, C, Hp, Wp) array, as a read-only view.

    Returns (N, C, Ho, Wo, KH, KW) with `out[n, c, i, j, u, v] = xp[n, c, i*SH + u*DH, j*SW + v*DW]`.
    No data is copied: the view only steps through memory with bigger strides (stride S between
    windows, dilation D between kernel taps).
    """
    n, c, hp, wp = xp.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    ho, wo = out_size(hp, kh, sh, 0, dh), out_size(wp, kw, sw, 0, dw)
    if ho < 1 or wo < 1:
        raise CnnkitError(
            f"kernel {kernel} (dilation {dilation}) does not fit the padded input {hp}x{wp}; "
            "use a smaller kernel or more padding")
    s_n, s_c, s_h, s_w = xp.strides
    return as_strided(xp, shape=(n, c, ho, wo, kh, kw),
                      strides=(s_n, s_c, s_h * sh, s_w * sw, s_h * dh, s_w * dw), writeable=False)


def scatter_windows(cols: np.ndarray, canvas_hw: Tuple[int, int], stride: Tuple[int, int],
                    dilation: Tuple[int, int]) -> np.ndarray:
    """The adjoint of `windows`: add each window value back to the pixel it was read from.

    cols: (N, C, Ho, Wo, KH, KW) -> (N, C, Hp, Wp). Loops over the KH*KW kernel taps only; for a
    fixed tap (u, v) the Ho*Wo target pixels are distinct, so one strided `+=` per tap is exact.
    """
    n, c, ho, wo, kh, kw = cols.shape
    (sh, sw), (dh, dw) = stride, dilation
    out = np.zeros((n, c) + tuple(canvas_hw), dtype=cols.dtype)
    for u in range(kh):
        for v in range(kw):
            r, q = u * dh, v * dw
            out[:, :, r:r + sh * (ho - 1) + 1:sh, q:q + sw * (wo - 1) + 1:sw] += cols[..., u, v]
    return out


def crop2d(xp: np.ndarray, padding: Tuple[int, int], hw: Tuple[int, int]) -> np.ndarray:
    """Undo `pad2d`: keep the (H, W) interior that starts at (ph, pw)."""
    ph, pw = padding
    return xp[:, :, ph:ph + hw[0], pw:pw + hw[1]]


def check_4d(x: np.ndarray, name: str = "x") -> None:
    if x.ndim != 4:
        raise CnnkitError(f"{name} must have shape (N, C, H, W), got {x.shape}")
