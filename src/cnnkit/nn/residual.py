"""Residual blocks (He et al., "Deep Residual Learning for Image Recognition", 2015).

A residual block learns the change F(x) instead of the whole mapping: y = act(F(x) + shortcut(x)).
The shortcut is the identity, or a strided 1x1 conv + norm ("projection", option B of the paper)
when the shape changes. `dilation` > 1 spaces the taps of the 3x3 convs (atrous convolution, for dense
prediction: a stage that keeps stride 1 but dilates sees as far as the strided one). If F's last norm has gamma = 0 the block starts as act(x) -- the identity
for the non-negative outputs of a previous ReLU -- which is why `zero_init_last()` helps very deep
nets train (Goyal et al., 2017).

Module names (conv1, bn1, ..., downsample.0/1) are torchvision's, so its weights load unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from .act import ActLayer, create_act
from .norm import NormLayer, get_norm_layer


def make_downsample(in_chs: int, out_chs: int, stride: int, norm_layer: NormLayer = "batch") -> nn.Module | None:
    """Projection shortcut (1x1 conv, stride, norm) when the shape changes; None means identity."""
    if stride == 1 and in_chs == out_chs:
        return None
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), get_norm_layer(norm_layer)(out_chs))


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34). (B, in_chs, H, W) -> (B, planes, H/stride, W/stride).

    Parameters: 9*in*planes + 9*planes^2 (+ norms, + the projection when present). `dilation` dilates
    both 3x3 convs (torchvision's BasicBlock has no dilation; its Bottleneck dilates its one 3x3).
    """

    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, norm_layer: NormLayer = "batch", act_layer: ActLayer = "relu",
                 dilation: int = 1):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        norm = get_norm_layer(norm_layer)
        self.conv1 = nn.Conv2d(in_chs, planes, 3, stride, dilation, dilation, bias=False)
        self.bn1 = norm(planes)
        self.act1 = create_act(act_layer, inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
        self.bn2 = norm(planes)
        self.act2 = create_act(act_layer, inplace=True)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        """gamma = 0 in the last norm: F(x) = 0 and the block is act(shortcut(x))."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4) (ResNet-50/101/152).

    (B, in_chs, H, W) -> (B, 4*planes, H/stride, W/stride). The stride sits on the 3x3 conv
    ("ResNet v1.5", as torchvision and most later work); the paper put it on the first 1x1, which
    skips three quarters of the input positions and is slightly less accurate. `groups` and
    `base_width` give the ResNeXt / wide variants: width = planes * base_width/64 * groups.
    `dilation` dilates the 3x3 conv (padding = dilation keeps the size).
    """

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, norm_layer: NormLayer = "batch", act_layer: ActLayer = "relu",
                 dilation: int = 1):
        super().__init__()
        norm = get_norm_layer(norm_layer)
        width = int(planes * base_width / 64) * groups
        self.conv1 = nn.Conv2d(in_chs, width, 1, bias=False)
        self.bn1 = norm(width)
        self.act1 = create_act(act_layer, inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, stride, dilation, dilation, groups=groups, bias=False)
        self.bn2 = norm(width)
        self.act2 = create_act(act_layer, inplace=True)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = norm(planes * self.expansion)
        self.act3 = create_act(act_layer, inplace=True)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))  # (B, width, H, W)
        x = self.act2(self.bn2(self.conv2(x)))  # (B, width, H/s, W/s)
        x = self.bn3(self.conv3(x))             # (B, 4*planes, H/s, W/s)
        return self.act3(x + shortcut)


def make_res_stage(block: type, in_chs: int, planes: int, depth: int, stride: int = 1, dilation: int = 1,
                   first_dilation: int | None = None, **kwargs) -> nn.Sequential:
    """`depth` blocks; the first changes the stride / width (with a projection shortcut), the rest keep it.

    `dilation` for the blocks' 3x3 convs; the first block uses `first_dilation` (default: `dilation`).
    torchvision's dilated ResNet gives the first block the previous stage's dilation."""
    out_chs = planes * block.expansion
    norm_layer = kwargs.get("norm_layer", "batch")
    first = dilation if first_dilation is None else first_dilation
    blocks = [block(in_chs, planes, stride, make_downsample(in_chs, out_chs, stride, norm_layer), dilation=first,
                    **kwargs)]
    blocks += [block(out_chs, planes, 1, None, dilation=dilation, **kwargs) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)
