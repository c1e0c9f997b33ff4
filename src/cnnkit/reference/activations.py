"""Activations (guide §3.2), forward and backward. Every backward takes (dout, x): dL/dx = dout * f'(x).

    sigmoid     1 / (1 + e^-x)                  f' = s(1 - s)      in (0, 1); saturates -> vanishing gradients
    tanh        (e^x - e^-x) / (e^x + e^-x)     f' = 1 - t^2       zero-centred; still saturates
    relu        max(0, x)                       f' = [x > 0]       cheap, no saturation for x > 0; "dead" units
    leaky_relu  x if x > 0 else a*x             f' = 1 or a        keeps a small gradient for x < 0
    elu         x if x > 0 else a(e^x - 1)      f' = 1 or a*e^x    smooth, mean output near 0
    gelu        x * Phi(x)                      f' = Phi + x*phi   (Phi, phi: standard normal cdf, pdf)

`ACTIVATIONS` maps each name to its (forward, backward) pair; `get_activation(name)` looks one up.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Tuple

import numpy as np

from ..registry import suggest


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), computed without overflow: only e^-|x| (<= 1) is ever evaluated."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    s = sigmoid(x)
    return dout * s * (1.0 - s)


def tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def tanh_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    return dout * (1.0 - np.tanh(x) ** 2)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def relu_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Gradient passes where x > 0 (at exactly 0 PyTorch uses 0, and so do we)."""
    return dout * (x > 0)


def leaky_relu(x: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    return np.where(x > 0, x, negative_slope * x)


def leaky_relu_backward(dout: np.ndarray, x: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    return dout * np.where(x > 0, 1.0, negative_slope)


def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """expm1 keeps precision near 0; min(x, 0) avoids overflowing e^x on the unused branch."""
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def elu_backward(dout: np.ndarray, x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return dout * np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0)))


_erf = np.vectorize(math.erf, otypes=[float])   # NumPy has no erf; the standard library does
_SQRT_2_PI = math.sqrt(2.0 / math.pi)


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """x * Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2; approximate="tanh" uses
    Phi(x) ~ (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2 (both as in PyTorch)."""
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(_SQRT_2_PI * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def gelu_backward(dout: np.ndarray, x: np.ndarray, approximate: str = "none") -> np.ndarray:
    if approximate == "tanh":
        t = np.tanh(_SQRT_2_PI * (x + 0.044715 * x ** 3))
        dt = (1.0 - t ** 2) * _SQRT_2_PI * (1.0 + 3 * 0.044715 * x ** 2)
        return dout * (0.5 * (1.0 + t) + 0.5 * x * dt)
    cdf = 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * x ** 2) / math.sqrt(2.0 * math.pi)
    return dout * (cdf + x * pdf)


ACTIVATIONS: Dict[str, Tuple[Callable, Callable]] = {
    "sigmoid": (sigmoid, sigmoid_backward),
    "tanh": (tanh, tanh_backward),
    "relu": (relu, relu_backward),
    "leaky_relu": (leaky_relu, leaky_relu_backward),
    "elu": (elu, elu_backward),
    "gelu": (gelu, gelu_backward),
}


def get_activation(name: str) -> Tuple[Callable, Callable]:
    """(forward, backward) for an activation name; unknown names suggest the closest ones."""
    if name not in ACTIVATIONS:
        raise suggest(name, ACTIVATIONS, "activation")
    return ACTIVATIONS[name]
