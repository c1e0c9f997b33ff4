"""Dense blocks (Huang et al., "Densely Connected Convolutional Networks", 2017).

Inside a dense block every layer receives the concatenation of all earlier feature maps and adds
`growth_rate` new channels: layer l sees in_chs + l*k channels. DenseNet-BC puts a 1x1 "bottleneck"
(bn_size*k channels) before each 3x3 conv, and a transition (norm, act, 1x1 conv halving the
channels, 2x2 average pool) between blocks. The layers are pre-activation: norm -> act -> conv.

Module names (denselayer1.norm1, transition1.conv, ...) are torchvision's, so its weights load
unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn

from .act import ActLayer, create_act
from .norm import NormLayer, get_norm_layer


class DenseLayer(nn.Module):
    """A list of maps [(B, C_i, H, W)] -> (B, growth_rate, H, W): norm-act-conv1x1, norm-act-conv3x3.

    `memory_efficient` recomputes the concatenation + bottleneck in the backward pass (gradient
    checkpointing) instead of storing it: same result, much less memory for deep DenseNets.
    """

    def __init__(self, in_chs: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0,
                 memory_efficient: bool = False, norm_layer: NormLayer = "batch", act_layer: ActLayer = "relu"):
        super().__init__()
        norm = get_norm_layer(norm_layer)
        self.norm1 = norm(in_chs)
        self.act1 = create_act(act_layer, inplace=True)
        self.conv1 = nn.Conv2d(in_chs, bn_size * growth_rate, 1, bias=False)
        self.norm2 = norm(bn_size * growth_rate)
        self.act2 = create_act(act_layer, inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.memory_efficient = memory_efficient

    def bottleneck(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.act1(self.norm1(torch.cat(inputs, 1))))  # (B, bn_size*k, H, W)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and self.training and any(t.requires_grad for t in inputs):
            x = cp.checkpoint(self.bottleneck, *inputs, use_reentrant=False)
        else:
            x = self.bottleneck(*inputs)
        x = self.conv2(self.act2(self.norm2(x)))  # (B, k, H, W)
        return F.dropout(x, p=self.drop_rate, training=self.training) if self.drop_rate > 0 else x


class DenseBlock(nn.ModuleDict):
    """(B, in_chs, H, W) -> (B, in_chs + num_layers*growth_rate, H, W)."""

    def __init__(self, num_layers: int, in_chs: int, growth_rate: int, **layer_kwargs):
        super().__init__()
        for i in range(num_layers):
            self[f"denselayer{i + 1}"] = DenseLayer(in_chs + i * growth_rate, growth_rate, **layer_kwargs)
        self.out_channels = in_chs + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """(B, in_chs, H, W) -> (B, out_chs, H/2, W/2): norm -> act -> 1x1 conv -> 2x2 average pool."""

    def __init__(self, in_chs: int, out_chs: int, norm_layer: NormLayer = "batch", act_layer: ActLayer = "relu"):
        super().__init__()
        self.norm = get_norm_layer(norm_layer)(in_chs)
        self.act = create_act(act_layer, inplace=True)
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)
