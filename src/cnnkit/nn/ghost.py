"""Ghost module and ghost bottleneck (GhostNet, Han et al., CVPR 2020).

Feature maps of a trained CNN contain many near-copies ("ghosts") of each other. A ghost module makes
only m = ceil(n / s) "intrinsic" maps with an ordinary convolution and derives the other (s - 1) * m
from them with a cheap depthwise d x d convolution:

    Y' = primary_conv(X)                   # (B, m, H, W)         ordinary k x k conv: m * C_in * k^2 weights
    Y  = cat(Y', cheap_operation(Y'))[:n]  # (B, n, H, W)         depthwise d x d: (s - 1) * m * d^2 weights

Multiply-adds against an ordinary k x k conv with n outputs (same H, W):
    ratio = n*C*k^2 / (m*C*k^2 + (s-1)*m*d^2) = s*C*k^2 / (C*k^2 + (s-1)*d^2)  ~  s   (when d ~ k, C >> s)
so s = 2 halves the cost of the layer it replaces.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .act import ActLayer
from .conv import ConvNormAct
from .mbconv import make_divisible
from .norm import NormLayer
from .se import SqueezeExcite


class GhostModule(nn.Module):
    """`out_chs` maps from `ceil(out_chs / ratio)` intrinsic ones plus cheap depthwise "ghosts"."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        ratio: int = 2,
        dw_size: int = 3,
        stride: int = 1,
        act_layer: ActLayer = "relu",
        norm_layer: NormLayer = "batch",
    ):
        super().__init__()
        if ratio < 2:
            raise ValueError(f"ghost ratio s must be >= 2, got {ratio}")
        self.out_chs = out_chs
        init_chs = math.ceil(out_chs / ratio)  # m intrinsic maps
        self.primary_conv = ConvNormAct(in_chs, init_chs, kernel_size, stride, norm_layer=norm_layer,
                                        act_layer=act_layer)
        self.cheap_operation = ConvNormAct(init_chs, init_chs * (ratio - 1), dw_size, 1, groups=init_chs,
                                           norm_layer=norm_layer, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)  # (B, m, H, W)
        x2 = self.cheap_operation(x1)  # (B, (s-1)m, H, W)
        return torch.cat([x1, x2], dim=1)[:, : self.out_chs]  # (B, n, H, W)


class GhostBottleneck(nn.Module):
    """Ghost module (expand, act) -> [depthwise stride-2 conv] -> [SE] -> ghost module (project, linear) + shortcut.

    Like an inverted residual with its two 1x1 convs replaced by ghost modules. The shortcut is the
    identity when shapes allow, otherwise depthwise KxK (stride s) -> BN -> 1x1 -> BN.
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        dw_kernel_size: int = 3,
        stride: int = 1,
        se_ratio: float = 0.0,
        act_layer: ActLayer = "relu",
        norm_layer: NormLayer = "batch",
    ):
        super().__init__()
        self.ghost1 = GhostModule(in_chs, mid_chs, act_layer=act_layer, norm_layer=norm_layer)
        self.conv_dw = (ConvNormAct(mid_chs, mid_chs, dw_kernel_size, stride, groups=mid_chs, norm_layer=norm_layer,
                                    act_layer=None) if stride > 1 else nn.Identity())
        self.se = (SqueezeExcite(mid_chs, make_divisible(mid_chs * se_ratio, 4), "relu", "hardsigmoid")
                   if se_ratio > 0 else nn.Identity())
        self.ghost2 = GhostModule(mid_chs, out_chs, act_layer=None, norm_layer=norm_layer)
        if in_chs == out_chs and stride == 1:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                ConvNormAct(in_chs, in_chs, dw_kernel_size, stride, groups=in_chs, norm_layer=norm_layer,
                            act_layer=None),
                ConvNormAct(in_chs, out_chs, 1, norm_layer=norm_layer, act_layer=None),
            )
        self.out_channels = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost1(x)  # (B, mid, H, W)
        y = self.se(self.conv_dw(y))  # (B, mid, H/s, W/s)
        y = self.ghost2(y)  # (B, out, H/s, W/s)
        return y + self.shortcut(x)
