"""Stochastic depth (Huang et al. 2016): drop a residual branch per sample during training.

Used by the inverted residuals (EfficientNet, MobileNetV3) and the transformer blocks (ViT, Swin);
`drop_path_rate` in those models ramps `p` linearly with depth.
"""
from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability `p` and scale the survivors by
    1/(1-p), so the expectation is unchanged and eval needs no rescaling. Works for any rank:
    (B, C, H, W) feature maps and (B, N, D) token sequences alike."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, ...): one draw per sample
    return x * mask / keep if keep > 0 else x * mask  # p == 1: every branch dropped, no 0/0


class DropPath(nn.Module):
    """`drop_path` as a module, so `model.train()` / `model.eval()` switch it on and off."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"drop path probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
