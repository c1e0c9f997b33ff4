"""The Inception module (Szegedy et al., "Going Deeper with Convolutions", 2014).

Four parallel branches see the same input at different scales and are concatenated on channels:

    1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max-pool -> 1x1

The 1x1 convs in front of the 3x3 / 5x5 convs (and after the pool) are "bottlenecks": they shrink
the channels first, so the expensive convs work on few channels. `NaiveInception` is the module
without them (the paper's Figure 2a): for GoogLeNet's inception(3a) on 192 channels the naive form
has 387,072 conv weights, the bottleneck form 163,328 (`inception_conv_params` counts both).

Module names (branch1, branch2.0, ...) are torchvision's, so its weights load unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from .act import ActLayer
from .conv import ConvNormAct
from .norm import NormLayer


class Inception(nn.Module):
    """(B, in_chs, H, W) -> (B, c1x1 + c3x3 + c5x5 + pool_proj, H, W).

    `kernel_5x5` is the kernel of the third branch: 5 as in the paper; torchvision's GoogLeNet (and
    its ImageNet weights) uses 3 there, so `cnnkit.models.googlenet` passes 3 by default.
    """

    def __init__(self, in_chs: int, c1x1: int, c3x3_red: int, c3x3: int, c5x5_red: int, c5x5: int, pool_proj: int,
                 kernel_5x5: int = 5, norm_layer: NormLayer = "batch", act_layer: ActLayer = "relu"):
        super().__init__()
        cna = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.branch1 = ConvNormAct(in_chs, c1x1, 1, **cna)
        self.branch2 = nn.Sequential(ConvNormAct(in_chs, c3x3_red, 1, **cna), ConvNormAct(c3x3_red, c3x3, 3, **cna))
        self.branch3 = nn.Sequential(ConvNormAct(in_chs, c5x5_red, 1, **cna),
                                     ConvNormAct(c5x5_red, c5x5, kernel_5x5, **cna))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     ConvNormAct(in_chs, pool_proj, 1, **cna))
        self.out_channels = c1x1 + c3x3 + c5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class NaiveInception(nn.Module):
    """The module without 1x1 bottlenecks: 1x1 | 3x3 | 5x5 | 3x3 max-pool, all on the full input.

    (B, in_chs, H, W) -> (B, c1x1 + c3x3 + c5x5 + in_chs, H, W): the pool branch passes all input
    channels through, so the width grows with every module -- the second reason for the bottlenecks.
    """

    def __init__(self, in_chs: int, c1x1: int, c3x3: int, c5x5: int,
                 norm_layer: NormLayer = "batch", act_layer: ActLayer = "relu"):
        super().__init__()
        cna = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.branch1 = ConvNormAct(in_chs, c1x1, 1, **cna)
        self.branch2 = ConvNormAct(in_chs, c3x3, 3, **cna)
        self.branch3 = ConvNormAct(in_chs, c5x5, 5, **cna)
        self.branch4 = nn.MaxPool2d(3, stride=1, padding=1)
        self.out_channels = c1x1 + c3x3 + c5x5 + in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


def inception_conv_params(in_chs: int, c1x1: int, c3x3_red: int, c3x3: int, c5x5_red: int, c5x5: int,
                          pool_proj: int, naive: bool = False, kernel_5x5: int = 5) -> int:
    """Conv weights of one module (no norms, no biases): K*K*C_in*C_out summed over its convs."""
    k5 = kernel_5x5 * kernel_5x5
    if naive:
        return in_chs * (c1x1 + 9 * c3x3 + k5 * c5x5)
    return in_chs * (c1x1 + c3x3_red + c5x5_red + pool_proj) + 9 * c3x3_red * c3x3 + k5 * c5x5_red * c5x5
