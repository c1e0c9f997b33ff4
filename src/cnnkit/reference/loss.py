"""Softmax and cross-entropy (guide §3.5), forward and backward.

    softmax(z)_k = e^{z_k} / sum_j e^{z_j}                 (logits -> probabilities)
    CE(z, q)     = -sum_k q_k log softmax(z)_k             (q: one-hot label or soft target)
    dCE/dz       = softmax(z) - q                          (when q sums to 1)

The gradient is why the pair is the classification default: no exponentials or divisions
left, just "predicted minus true". With label smoothing eps the target becomes
q = (1 - eps) * q + eps / C, spreading a little belief over every class.
"""
from __future__ import annotations

import numpy as np

from ..registry import CnnkitError


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable: subtracting max(z) changes nothing mathematically (it cancels in the
    ratio) but keeps every exponent <= 0, so e^z never overflows."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax(z) = (z - max) - log sum e^(z - max): no log of a tiny probability needed."""
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def _target_distribution(logits: np.ndarray, targets: np.ndarray, label_smoothing: float) -> np.ndarray:
    """The target q as an array shaped like logits (N, C, ...): one-hot of class indices or
    the given probabilities, then smoothed."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise CnnkitError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    c = logits.shape[1]
    if targets.shape == logits.shape and np.issubdtype(targets.dtype, np.floating):
        q = targets                                            # soft targets (N, C, ...)
    elif targets.shape == logits.shape[:1] + logits.shape[2:] and np.issubdtype(targets.dtype, np.integer):
        if targets.size and (targets.min() < 0 or targets.max() >= c):
            raise CnnkitError(f"class indices must be in [0, {c}), got min {targets.min()} max {targets.max()}")
        q = np.moveaxis(np.eye(c, dtype=logits.dtype)[targets], -1, 1)   # one-hot (N, C, ...)
    else:
        raise CnnkitError(
            f"targets must be class indices of shape {logits.shape[:1] + logits.shape[2:]} (integers) "
            f"or probabilities of shape {logits.shape} (floats); got {targets.shape} {targets.dtype}")
    return (1.0 - label_smoothing) * q + label_smoothing / c


def _count(loss_shape, reduction: str) -> int:
    if reduction not in ("mean", "sum", "none"):
        raise CnnkitError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return int(np.prod(loss_shape)) if reduction == "mean" else 1


def cross_entropy(logits: np.ndarray, targets: np.ndarray, label_smoothing: float = 0.0,
                  reduction: str = "mean") -> np.ndarray:
    """Cross-entropy of logits (N, C) or (N, C, d1, ...) against class indices (N, d1, ...)
    or probabilities shaped like the logits. Returns a scalar, or per-element losses (N, d1, ...)
    with reduction="none". "mean" averages over the N*d1*... elements (as PyTorch does)."""
    q = _target_distribution(logits, np.asarray(targets), label_smoothing)
    loss = -(q * log_softmax(logits, axis=1)).sum(axis=1)     # (N, d1, ...)
    if reduction == "none":
        _count(loss.shape, reduction)
        return loss
    return loss.sum() / _count(loss.shape, reduction)


def cross_entropy_backward(logits: np.ndarray, targets: np.ndarray, label_smoothing: float = 0.0,
                           reduction: str = "mean", dout: np.ndarray | float = 1.0) -> np.ndarray:
    """dL/dlogits, shaped like the logits.

    Per element: sum(q) * softmax(z) - q, which is softmax(z) - q for a proper distribution;
    "mean" divides by the element count, giving the familiar (softmax - onehot) / N.
    `dout` is the upstream gradient (a scalar, or (N, d1, ...) for reduction="none").
    """
    q = _target_distribution(logits, np.asarray(targets), label_smoothing)
    grad = q.sum(axis=1, keepdims=True) * softmax(logits, axis=1) - q
    dout = np.asarray(dout, dtype=logits.dtype)
    if reduction == "none":
        return grad * np.expand_dims(dout, 1)
    return grad * dout / _count(logits.shape[:1] + logits.shape[2:], reduction)
