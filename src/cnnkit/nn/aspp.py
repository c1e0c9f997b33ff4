"""Atrous Spatial Pyramid Pooling (Chen et al., "Rethinking Atrous Convolution for Semantic Image
Segmentation", 2017 -- DeepLabv3, section 3.3).

    x (B, C, h, w)
      -> five parallel branches, each `out_chs` wide, BN + ReLU:
           1x1 conv
           3x3 conv, dilation r1      (r = 6, 12, 18 at output stride 16; doubled at output stride 8)
           3x3 conv, dilation r2
           3x3 conv, dilation r3
           image pooling: global average pool -> 1x1 conv -> BN -> ReLU -> broadcast back to h x w
      -> concatenate (B, 5 * out_chs, h, w) -> 1x1 conv to out_chs -> BN -> ReLU -> dropout 0.5

A 3x3 conv with dilation r sees a (2r + 1) x (2r + 1) window with nine weights; the parallel rates
look at several context sizes at once. When the rate approaches the map size only the centre tap
stays on the map and the conv degenerates to a 1x1 conv; the image-pooling branch adds the
global context instead (the paper's argument for it).

The image-pooling branch normalises a 1 x 1 map with BatchNorm: in training mode that needs more
than one image per batch.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .conv import ConvNormAct
from .norm import NormLayer


class ImagePool(nn.Module):
    """Global average pool -> 1x1 ConvNormAct -> the (B, C, 1, 1) vector repeated over h x w (the same
    as bilinear upsampling of a 1 x 1 map)."""

    def __init__(self, in_chs: int, out_chs: int, norm_layer: NormLayer = "batch"):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvNormAct(in_chs, out_chs, 1, norm_layer=norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.conv(self.pool(x)).expand(-1, -1, h, w)


class ASPP(nn.Module):
    """(B, in_chs, h, w) -> (B, out_chs, h, w). `rates`: the dilations of the 3x3 branches.

    Parameters: in*out (1x1) + 9*in*out per rate + in*out (pooling) + 5*out*out (projection),
    plus 2*out per BatchNorm; no conv has a bias."""

    def __init__(self, in_chs: int, rates: Sequence[int] = (6, 12, 18), out_chs: int = 256, drop_rate: float = 0.5,
                 norm_layer: NormLayer = "batch"):
        super().__init__()
        self.rates = tuple(int(r) for r in rates)
        branches = [ConvNormAct(in_chs, out_chs, 1, norm_layer=norm_layer)]
        branches += [ConvNormAct(in_chs, out_chs, 3, dilation=r, norm_layer=norm_layer) for r in self.rates]
        branches.append(ImagePool(in_chs, out_chs, norm_layer))
        self.branches = nn.ModuleList(branches)
        self.project = ConvNormAct(len(branches) * out_chs, out_chs, 1, norm_layer=norm_layer)
        self.drop = nn.Dropout(drop_rate)
        self.out_channels = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([b(x) for b in self.branches], dim=1)  # (B, 5 * out, h, w)
        return self.drop(self.project(x))
