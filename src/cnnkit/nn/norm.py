"""Normalization and pooling layers by name."""
from __future__ import annotations

from functools import partial
from typing import Callable, Union

from torch import nn

from ..registry import suggest

NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "batchnorm": nn.BatchNorm2d,
    "group": lambda c: nn.GroupNorm(min(32, c) if c % min(32, c) == 0 else 1, c),
    "instance": partial(nn.InstanceNorm2d, affine=True),
    "layer": lambda c: nn.GroupNorm(1, c),  # LayerNorm over (C, H, W) for conv features
    "none": lambda c: nn.Identity(),
}

NormLayer = Union[str, Callable[[int], nn.Module], None]


def get_norm_layer(norm: NormLayer) -> Callable[[int], nn.Module]:
    if norm is None:
        return NORMS["none"]
    if isinstance(norm, str):
        if norm.lower() not in NORMS:
            raise suggest(norm, NORMS, "norm layer")
        return NORMS[norm.lower()]
    return norm


POOLS: dict[str, Callable[..., nn.Module]] = {
    "max": nn.MaxPool2d,
    "avg": nn.AvgPool2d,
}

GLOBAL_POOLS: dict[str, Callable[[], nn.Module]] = {
    "avg": lambda: nn.AdaptiveAvgPool2d(1),  # global average pooling (GAP): replaces FC stacks, enables CAM
    "max": lambda: nn.AdaptiveMaxPool2d(1),
}


def create_pool(kind: str, kernel_size: int = 2, stride: int | None = None, padding: int = 0) -> nn.Module:
    if kind not in POOLS:
        raise suggest(kind, POOLS, "pooling")
    return POOLS[kind](kernel_size, stride=stride, padding=padding)


def create_global_pool(kind: str = "avg") -> nn.Module:
    if kind not in GLOBAL_POOLS:
        raise suggest(kind, GLOBAL_POOLS, "global pooling")
    return GLOBAL_POOLS[kind]()
