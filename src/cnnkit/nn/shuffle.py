"""Channel shuffle and the ShuffleNetV2 unit (Ma et al., ECCV 2018).

Grouped convolutions are cheap but keep information inside its group. Channel shuffle lets the
next layer see every group: with g groups of n channels, view the channels as a (g, n) matrix,
transpose it and flatten, so output channel j = k*g + i comes from input channel i*n + k.

The V2 unit splits the channels in two halves: one passes through untouched, the other goes
through 1x1 -> depthwise 3x3 -> 1x1 (equal widths, no grouped 1x1: the paper's guidelines for
real speed); the halves are concatenated and shuffled. The stride-2 unit feeds the whole input to
both branches (the left one gets a depthwise 3x3 + 1x1), doubling the channels.
"""
from __future__ import annotations

import torch
from torch import nn

from .act import ActLayer
from .conv import ConvNormAct
from .norm import NormLayer


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, g*n, H, W) -> (B, n*g, H, W): output channel k*g + i is input channel i*n + k."""
    b, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels do not split into {groups} groups")
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ShuffleV2Block(nn.Module):
    """ShuffleNetV2 unit. stride 1: (B, C, H, W) -> (B, C, H, W); stride 2: (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, act_layer: ActLayer = "relu",
                 norm_layer: NormLayer = "batch"):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShuffleNetV2 unit stride must be 1 or 2, got {stride}")
        if out_chs % 2 or (stride == 1 and in_chs != out_chs):
            raise ValueError(f"ShuffleNetV2 unit: stride 1 needs in == out (even), got {in_chs} -> {out_chs}")
        self.stride = stride
        half = out_chs // 2
        if stride == 1:
            self.branch1 = nn.Identity()  # the left half passes through unchanged
        else:
            self.branch1 = nn.Sequential(
                ConvNormAct(in_chs, in_chs, 3, stride, groups=in_chs, norm_layer=norm_layer, act_layer=None),
                ConvNormAct(in_chs, half, 1, norm_layer=norm_layer, act_layer=act_layer),
            )
        self.branch2 = nn.Sequential(
            ConvNormAct(in_chs if stride > 1 else half, half, 1, norm_layer=norm_layer, act_layer=act_layer),
            ConvNormAct(half, half, 3, stride, groups=half, norm_layer=norm_layer, act_layer=None),
            ConvNormAct(half, half, 1, norm_layer=norm_layer, act_layer=act_layer),
        )
        self.out_channels = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1) if self.stride == 1 else (x, x)  # split (stride 1) or copy (stride 2)
        out = torch.cat([self.branch1(x1), self.branch2(x2)], dim=1)  # (B, C_out, H/s, W/s)
        return channel_shuffle(out, 2)
