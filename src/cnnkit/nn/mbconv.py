"""Inverted residual / MBConv (MobileNetV2, MobileNetV3, EfficientNet).

    x (B, C_in, H, W)
      -> 1x1 expand to C_mid, norm, act          (skipped when C_mid == C_in, e.g. expand ratio 1)
      -> KxK depthwise, stride s, norm, act       (spatial filtering, one filter per channel)
      -> squeeze-excitation on C_mid              (optional: MobileNetV3, EfficientNet)
      -> 1x1 project to C_out, norm, NO act       (the "linear bottleneck": ReLU on a thin tensor loses information)
      -> + x when s == 1 and C_in == C_out        (residual between the thin ends: "inverted" vs ResNet's wide ends)

Residual branches can be dropped per sample during training (stochastic depth, `DropPath` from drop.py).
"""
from __future__ import annotations

import torch
from torch import nn

from .act import ActLayer
from .conv import ConvNormAct
from .drop import DropPath, drop_path  # noqa: F401  (drop_path: also importable from here)
from .norm import NormLayer
from .se import SqueezeExcite


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of `divisor` (hardware-friendly widths), never
    going below `min_value` (default `divisor`) nor more than 10% below `v`. MobileNet/EfficientNet's rule."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class InvertedResidual(nn.Module):
    """MBConv: expand 1x1 -> depthwise KxK -> [SE] -> project 1x1 (linear), residual when shapes allow.

    `mid_chs` is given explicitly because each family rounds it its own way (MobileNetV2:
    round(C_in * t), EfficientNet: make_divisible(C_in * t, 8), MobileNetV3: listed in its table).
    `se_chs` > 0 adds squeeze-excitation with that reduced width.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        mid_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act_layer: ActLayer = "relu6",
        norm_layer: NormLayer = "batch",
        se_chs: int = 0,
        se_act: ActLayer = "relu",
        se_gate: ActLayer = "sigmoid",
        drop_path: float = 0.0,
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"inverted residual stride must be 1 or 2, got {stride}")
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_pw = (ConvNormAct(in_chs, mid_chs, 1, norm_layer=norm_layer, act_layer=act_layer)
                        if mid_chs != in_chs else nn.Identity())
        self.conv_dw = ConvNormAct(mid_chs, mid_chs, kernel_size, stride, dilation=dilation, groups=mid_chs,
                                   norm_layer=norm_layer, act_layer=act_layer)
        self.se = SqueezeExcite(mid_chs, se_chs, se_act, se_gate) if se_chs > 0 else nn.Identity()
        self.conv_pwl = ConvNormAct(mid_chs, out_chs, 1, norm_layer=norm_layer, act_layer=None)
        self.drop_path = DropPath(drop_path) if self.has_skip and drop_path > 0 else nn.Identity()
        self.out_channels = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_pw(x)  # (B, C_mid, H, W)
        x = self.conv_dw(x)  # (B, C_mid, H/s, W/s)
        x = self.se(x)
        x = self.conv_pwl(x)  # (B, C_out, H/s, W/s)
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


MBConv = InvertedResidual
