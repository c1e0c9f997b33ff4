"""Squeeze-and-Excitation (Hu et al., 2018): re-weight channels by a gate computed from their means.

    s = gate(fc2(act(fc1(mean_hw(x)))))      # (B, C, 1, 1), each entry in (0, 1)
    y = x * s                                 # (B, C, H, W)

The two "fully connected" layers are 1x1 convolutions on the pooled (B, C, 1, 1) map, so the
block keeps the NCHW layout. The reduced width `rd_chs` is the caller's choice because each
family rounds it differently (EfficientNet: block input // 4; MobileNetV3: expanded / 4 rounded
to a multiple of 8; GhostNet: mid / 4 rounded to a multiple of 4).
"""
from __future__ import annotations

import torch
from torch import nn

from .act import ActLayer, create_act


class SqueezeExcite(nn.Module):
    """Channel attention: `x * gate(fc2(act(fc1(avgpool(x)))))`.

    `gate_layer` is "sigmoid" in the SE paper and EfficientNet, "hardsigmoid" (relu6(x + 3) / 6, cheaper
    on mobile hardware) in MobileNetV3 and GhostNet.
    """

    def __init__(self, chs: int, rd_chs: int, act_layer: ActLayer = "relu", gate_layer: ActLayer = "sigmoid"):
        super().__init__()
        if rd_chs < 1:
            raise ValueError(f"SqueezeExcite needs rd_chs >= 1, got {rd_chs}")
        self.fc1 = nn.Conv2d(chs, rd_chs, 1)  # squeeze: C -> rd_chs
        self.act = create_act(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(rd_chs, chs, 1)  # excite: rd_chs -> C
        self.gate = create_act(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1) squeeze: global average pool
        s = self.gate(self.fc2(self.act(self.fc1(s))))  # (B, C, 1, 1) excitation weights
        return x * s
