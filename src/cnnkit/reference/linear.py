"""The fully connected layer and dropout, forward and backward.

    linear:  y = x @ W^T + b        x (..., in), W (out, in), b (out,)  -> y (..., out)
    dropout: y = x * m / (1 - p),   m_i ~ Bernoulli(1 - p)   (training only; identity in eval)

Dropout is "inverted": survivors are scaled up by 1 / (1 - p) during training so the expected
activation is unchanged and evaluation needs no rescaling.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..registry import CnnkitError


def linear(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None) -> np.ndarray:
    """y = x @ W^T + b. x: (..., in_features); w: (out_features, in_features) -> (..., out_features)."""
    if x.shape[-1] != w.shape[1]:
        raise CnnkitError(f"linear: input has {x.shape[-1]} features, weight expects {w.shape[1]}")
    y = x @ w.T
    return y if b is None else y + b


def linear_backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dw, db): dx = dy @ W, dW = dy^T @ x, db = sum(dy), summed over all leading axes."""
    dy2, x2 = dout.reshape(-1, dout.shape[-1]), x.reshape(-1, x.shape[-1])   # (B, out), (B, in)
    return dout @ w, dy2.T @ x2, dy2.sum(axis=0)


def dropout(x: np.ndarray, p: float = 0.5, training: bool = True,
            rng: Optional[np.random.Generator] = None,
            keep: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Inverted dropout. Returns (y, scale) with y = x * scale; backward is dout * scale.

    scale is 0 for dropped units and 1 / (1 - p) for kept ones (all ones in eval mode). Pass
    `keep` (a boolean mask shaped like x) to choose the kept units yourself, otherwise they are
    drawn from `rng` (default: a fresh np.random.default_rng()).
    """
    if not 0.0 <= p <= 1.0:
        raise CnnkitError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        scale = np.ones_like(x)
    else:
        if keep is None:
            keep = (rng or np.random.default_rng()).random(x.shape) >= p
        scale = np.zeros_like(x) if p == 1.0 else keep.astype(x.dtype) / (1.0 - p)
    return x * scale, scale


def dropout_backward(dout: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """dL/dx of dropout: the same mask and scale applied to the gradient."""
    return dout * scale
