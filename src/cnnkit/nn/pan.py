"""A path-aggregation neck (PAN, Liu et al., CVPR 2018, over an FPN, Lin et al., CVPR 2017), as the modern YOLOs use it.

Input: feature maps of strides s, 2s, 4s, ... (finest first, e.g. 8/16/32), with channels
`in_channels`. An FPN's top-down path brings the coarse maps' semantics down to the fine ones; the
PAN adds a bottom-up path that brings the fine maps' localisation back up:

    top-down   t_L = x_L;   t_i = C2f(cat(upsample(t_{i+1}), x_i))          i = L-1 .. 1
    bottom-up  o_1 = t_1;   o_i = C2f(cat(conv3x3/2(o_{i-1}), t_i))          i = 2 .. L

Fusion is by concatenation and a C2f block (no residual shortcuts), and the strided 3x3 conv is the
down-sampling, as in YOLOv8. Output: one map per input, same strides, with `out_channels`
(by default `in_channels`). The coarsest input is used as it is on the top-down path (no lateral
conv), so a backbone's last block (e.g. SPPF) feeds it directly.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .act import ActLayer
from .conv import ConvNormAct
from .csp import C2f
from .norm import NormLayer


class PAN(nn.Module):
    """Top-down then bottom-up fusion of `len(in_channels)` maps (finest first); see the module docstring."""

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int] | None = None, depth: int = 1,
                 act_layer: ActLayer = "silu", norm_layer: NormLayer = "batch", upsample: str = "nearest"):
        super().__init__()
        in_channels = list(in_channels)
        out_channels = list(out_channels or in_channels)
        if len(out_channels) != len(in_channels) or len(in_channels) < 2:
            raise ValueError(f"PAN needs >= 2 levels and one output width per input, "
                             f"got {in_channels} -> {out_channels}")
        n = len(in_channels)
        kw = dict(act_layer=act_layer, norm_layer=norm_layer)
        self.up = nn.Upsample(scale_factor=2, mode=upsample)
        # top-down: level i (0 = finest) fuses the upsampled level i+1 with the backbone's map i
        td_chs = list(in_channels)  # t_L = x_L keeps its channels
        td_blocks = [None] * (n - 1)
        for i in range(n - 2, -1, -1):
            td_blocks[i] = C2f(td_chs[i + 1] + in_channels[i], out_channels[i], depth, shortcut=False, **kw)
            td_chs[i] = out_channels[i]
        self.top_down = nn.ModuleList(td_blocks)  # top_down[i] makes t_i, i = 0 .. L-2
        # bottom-up: level i (>= 1) fuses the down-sampled output of level i-1 with t_i
        self.downs = nn.ModuleList(ConvNormAct(out_channels[i], out_channels[i], 3, 2, **kw) for i in range(n - 1))
        self.bottom_up = nn.ModuleList(C2f(out_channels[i - 1] + td_chs[i], out_channels[i], depth, shortcut=False,
                                           **kw) for i in range(1, n))
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        n = len(feats)
        td = [None] * n
        td[-1] = feats[-1]
        for i in range(n - 2, -1, -1):
            td[i] = self.top_down[i](torch.cat([self.up(td[i + 1]), feats[i]], 1))
        outs = [td[0]]
        for i in range(1, n):
            outs.append(self.bottom_up[i - 1](torch.cat([self.downs[i - 1](outs[-1]), td[i]], 1)))
        return outs
