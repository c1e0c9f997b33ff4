"""Activations by name: the guide's five (sigmoid, tanh, relu, leaky_relu, elu) and the modern ones.

Blocks take `act_layer` as a name, a class or None and call `get_act(...)`; none hard-codes nn.ReLU.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Union

from torch import nn

from ..registry import suggest

ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": partial(nn.LeakyReLU, 0.1),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "hardswish": nn.Hardswish,
    "hardsigmoid": nn.Hardsigmoid,
    "mish": nn.Mish,
    "prelu": nn.PReLU,
    "identity": nn.Identity,
}

# activations that accept inplace=True
_INPLACE = {"relu", "relu6", "leaky_relu", "elu", "silu", "swish", "hardswish", "hardsigmoid", "mish"}

ActLayer = Union[str, Callable[..., nn.Module], None]


def get_act_layer(act: ActLayer) -> Callable[..., nn.Module]:
    """Resolve a name or class to a constructor; None means identity."""
    if act is None:
        return nn.Identity
    if isinstance(act, str):
        key = act.lower()
        if key not in ACTIVATIONS:
            raise suggest(act, ACTIVATIONS, "activation")
        return ACTIVATIONS[key]
    return act


def create_act(act: ActLayer, inplace: bool = False) -> nn.Module:
    """Instantiate an activation; `inplace` is passed only where the activation supports it."""
    if isinstance(act, str) and act.lower() in _INPLACE and inplace:
        return get_act_layer(act)(inplace=True)
    return get_act_layer(act)()
