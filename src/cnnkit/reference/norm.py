"""Batch normalization (guide §3.4): train mode, eval mode, and the train-mode backward.

For each channel c, over the M = N*H*W values of the batch:

    mu = mean(x),  var = mean((x - mu)^2)            (biased: divide by M)
    x_hat = (x - mu) / sqrt(var + eps)
    y = gamma * x_hat + beta

Training normalizes with the batch's own statistics and updates the running ones
(PyTorch's definition of momentum, default 0.1):

    running_mean <- (1 - momentum) * running_mean + momentum * mu
    running_var  <- (1 - momentum) * running_var  + momentum * var * M / (M - 1)   (unbiased!)

Evaluation normalizes with the running statistics instead, so a sample's output no longer
depends on the rest of its batch. Works for (N, C) and (N, C, H, W) inputs alike.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..registry import CnnkitError


def _axes(x: np.ndarray):
    """Axes reduced per channel (all but axis 1) and the shape that broadcasts (C,) over x."""
    if x.ndim < 2:
        raise CnnkitError(f"batch_norm expects (N, C, ...) input, got shape {x.shape}")
    return (0,) + tuple(range(2, x.ndim)), (1, x.shape[1]) + (1,) * (x.ndim - 2)


def batch_norm(x: np.ndarray, weight: Optional[np.ndarray] = None, bias: Optional[np.ndarray] = None,
               running_mean: Optional[np.ndarray] = None, running_var: Optional[np.ndarray] = None,
               training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
               ) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """Batch norm. x: (N, C, ...); weight (gamma), bias (beta), running stats: (C,).

    Returns (y, new_running_mean, new_running_var). Nothing is modified in place: in training
    the new running statistics are returned (None if none were given); in eval mode they are
    the given ones, unchanged. momentum=None (PyTorch's cumulative average) is not supported.
    """
    axes, shape = _axes(x)
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)    # biased var normalizes the batch
        m = x.size // x.shape[1]
        if m < 2:
            raise CnnkitError("batch_norm in training needs more than one value per channel")
        if running_mean is not None:
            running_mean = (1 - momentum) * running_mean + momentum * mean
        if running_var is not None:
            running_var = (1 - momentum) * running_var + momentum * var * m / (m - 1)
    else:
        if running_mean is None or running_var is None:
            raise CnnkitError("batch_norm in eval mode needs running_mean and running_var")
        mean, var = running_mean, running_var
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)   # x_hat
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y, running_mean, running_var


def batch_norm_backward(dout: np.ndarray, x: np.ndarray, weight: Optional[np.ndarray] = None,
                        eps: float = 1e-5, training: bool = True,
                        running_mean: Optional[np.ndarray] = None,
                        running_var: Optional[np.ndarray] = None,
                        ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dgamma, dbeta) of `batch_norm`, shaped like (x, (C,), (C,)).

    dbeta = sum(dy), dgamma = sum(dy * x_hat). In training, mu and var depend on every x in
    the batch, which gives (g = dy * gamma, means over the M values of a channel):

        dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(var + eps)

    The two subtracted terms are the paths through mu and var. In eval mode the statistics are
    constants (pass the running ones) and dx = g / sqrt(running_var + eps).
    """
    axes, shape = _axes(x)
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        if running_mean is None or running_var is None:
            raise CnnkitError("batch_norm_backward in eval mode needs running_mean and running_var")
        mean, var = running_mean, running_var
    inv_std = (1.0 / np.sqrt(var + eps)).reshape(shape)
    x_hat = (x - mean.reshape(shape)) * inv_std
    g = dout if weight is None else dout * weight.reshape(shape)
    if training:
        dx = inv_std * (g - g.mean(axis=axes).reshape(shape)
                        - x_hat * (g * x_hat).mean(axis=axes).reshape(shape))
    else:
        dx = g * inv_std
    return dx, (dout * x_hat).sum(axis=axes), dout.sum(axis=axes)
