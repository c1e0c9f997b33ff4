"""The interface every classification model shares (see DESIGN.md, "Contracts").

Tools (summary, Grad-CAM, backbones for detection) use only this interface:

- `forward_features(x)` -> the last feature map, (B, C, H, W) for CNNs
- `forward_head(features, pre_logits=False)` -> logits (B, num_classes), or pooled features
- `get_classifier()` / `reset_classifier(num_classes)`
- `feature_info`: one dict per stage, {"num_chs", "reduction", "module"}
- `default_cfg`: input size, mean/std, first conv and classifier module names, ...
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..nn.norm import create_global_pool

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def make_cfg(
    input_size=(3, 224, 224),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    first_conv: str = "stem.conv",
    classifier: str = "head.fc",
    **extra: Any,
) -> dict:
    """A default_cfg dict; `mean`/`std` are adapted to `in_chans` by the builder helpers."""
    cfg = dict(input_size=tuple(input_size), mean=tuple(mean), std=tuple(std),
               first_conv=first_conv, classifier=classifier)
    cfg.update(extra)
    return cfg


def adapt_cfg(cfg: dict, in_chans: int, num_classes: int, **overrides: Any) -> dict:
    """Copy `cfg` for a model with `in_chans` channels: grey images get the mean of the channel stats."""
    cfg = dict(cfg)
    mean, std = cfg["mean"], cfg["std"]
    if in_chans != len(mean):
        m, s = sum(mean) / len(mean), sum(std) / len(std)
        cfg["mean"], cfg["std"] = (m,) * in_chans, (s,) * in_chans
    cfg["input_size"] = (in_chans,) + tuple(cfg["input_size"][1:])
    cfg["num_classes"] = num_classes
    cfg.update(overrides)
    return cfg


class ClassifierHead(nn.Module):
    """Global pool -> flatten -> dropout -> linear. `pre_logits` stops before the linear."""

    def __init__(self, in_features: int, num_classes: int, pool: str = "avg", drop_rate: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.pool = create_global_pool(pool) if pool else nn.Identity()
        self.flatten = nn.Flatten(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.flatten(self.pool(x)))  # (B, C)
        return x if pre_logits else self.fc(x)

    def reset(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()


class ClassifierModel(nn.Module):
    """Base class: subclasses set `self.head` (a ClassifierHead or compatible), `feature_info`,
    `default_cfg`, `num_classes` and implement `forward_features`."""

    default_cfg: dict
    feature_info: list

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes)
        self.default_cfg = dict(self.default_cfg, num_classes=num_classes)
