"""Loading torchvision weights into cnnkit models.

Each architecture family registers a converter that renames a torchvision state dict to the
cnnkit model's keys. `load_torchvision_weights` finds it by the model's
`default_cfg["architecture"]` (the registered name) and checks that every key and shape match.
"""
from __future__ import annotations

import fnmatch
from typing import Callable, Dict

import torch
from torch import nn

from ..registry import CnnkitError

Converter = Callable[[Dict[str, torch.Tensor], nn.Module], Dict[str, torch.Tensor]]
_CONVERTERS: dict[str, Converter] = {}


def register_tv_converter(*patterns: str):
    """Register `fn(tv_state_dict, model) -> cnnkit_state_dict` for model names matching `patterns`."""

    def deco(fn: Converter) -> Converter:
        for p in patterns:
            if p in _CONVERTERS:
                raise ValueError(f"torchvision converter for {p!r} registered twice")
            _CONVERTERS[p] = fn
        return fn

    return deco


def identity_converter(sd, model):
    return dict(sd)


def load_torchvision_weights(model: nn.Module, state_dict: Dict[str, torch.Tensor], strict: bool = True) -> nn.Module:
    """Copy a torchvision state dict into `model` (a cnnkit model of the same architecture)."""
    from . import _load_all

    _load_all()
    arch = getattr(model, "default_cfg", {}).get("architecture")
    conv = next((fn for p, fn in _CONVERTERS.items() if arch and fnmatch.fnmatch(arch, p)), None)
    if conv is None:
        raise CnnkitError(f"no torchvision weight mapping for model {arch!r}")
    new = conv(dict(state_dict), model)
    own = model.state_dict()
    missing = [k for k in own if k not in new]
    unexpected = [k for k in new if k not in own]
    bad = [k for k in new if k in own and tuple(new[k].shape) != tuple(own[k].shape)]
    if strict and (missing or unexpected or bad):
        raise CnnkitError(
            f"torchvision weights do not fit {arch!r}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"shape mismatch {bad[:3]}"
        )
    model.load_state_dict(new, strict=strict)
    return model
