"""Depthwise separable convolution (the guide's section 3; MobileNet's building block).

A standard KxK convolution mixes space and channels at once: K*K*C_in*C_out weights. The separable
version factors it into

    1. depthwise KxK: one filter per input channel (a grouped conv with groups = C_in): K*K*C_in weights
    2. pointwise 1x1: mixes channels:                                                   C_in*C_out weights

so (without bias and norm) it has  (K*K*C_in + C_in*C_out) / (K*K*C_in*C_out) = 1/C_out + 1/K^2  of the
weights and of the multiply-adds: about 8-9x fewer for K=3. It equals a standard convolution whose
kernel is the rank-1-per-channel product W[o, i] = pw[o, i] * dw[i] (with no non-linearity between the
two steps), which is what makes it a restriction of the standard conv rather than a new operation.
"""
from __future__ import annotations

import torch
from torch import nn

from .act import ActLayer
from .conv import ConvNormAct
from .norm import NormLayer


def separable_param_ratio(out_chs: int, kernel_size: int) -> float:
    """Weights of a depthwise separable conv over those of a standard conv: 1/C_out + 1/K^2."""
    return 1.0 / out_chs + 1.0 / kernel_size**2


class DepthwiseSeparableConv(nn.Module):
    """Depthwise KxK conv -> norm -> act, then pointwise 1x1 conv -> norm -> act (MobileNetV1).

    `norm_layer=None, act_layer=None, bias=False` gives the bare factorised convolution (the one the
    parameter ratio 1/C_out + 1/K^2 is about). `pw_act=False` makes the pointwise step linear.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        norm_layer: NormLayer = "batch",
        act_layer: ActLayer = "relu",
        pw_act: bool = True,
        bias: bool | None = None,
    ):
        super().__init__()
        self.conv_dw = ConvNormAct(in_chs, in_chs, kernel_size, stride, dilation=dilation, groups=in_chs,
                                   norm_layer=norm_layer, act_layer=act_layer, bias=bias)
        self.conv_pw = ConvNormAct(in_chs, out_chs, 1, norm_layer=norm_layer,
                                   act_layer=act_layer if pw_act else None, bias=bias)
        self.out_channels = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.conv_dw(x))  # (B, C_in, H, W) -> (B, C_in, H/s, W/s) -> (B, C_out, H/s, W/s)
