"""Cross-stage partial (CSP) blocks of the modern YOLOs: the split-bottleneck-concat block (C2f) and SPPF.

C2f (a faster CSP block): a 1x1 conv makes 2c maps and splits them in two halves; the second half
goes through n bottlenecks one after the other, and every intermediate result is kept. All the
pieces are concatenated and a 1x1 conv fuses them:

    a, b = split(cv1(x))                 # (B, c, H, W) each, c = out_chs * expansion
    y_1 = m_1(b), ..., y_n = m_n(y_{n-1})  # n bottlenecks (3x3 -> 3x3, residual when asked)
    out = cv2(cat(a, b, y_1, ..., y_n))  # (B, (2 + n) c, H, W) -> (B, out_chs, H, W)

The untouched half `a` carries gradient straight to the input (the "partial" of CSP), and the
concatenation of every bottleneck's output gives the fusing conv several receptive-field sizes.

SPPF (spatial pyramid pooling, fast): three chained k x k stride-1 max-pools on a halved input;
chaining pools of k = 5 sees the same windows as parallel pools of 5, 9 and 13 (SPP) for less work:

    h = cv1(x); p1 = pool(h); p2 = pool(p1); p3 = pool(p2)
    out = cv2(cat(h, p1, p2, p3))        # (B, 4 * in_chs / 2, H, W) -> (B, out_chs, H, W)
"""
from __future__ import annotations

import torch
from torch import nn

from .act import ActLayer
from .conv import ConvNormAct
from .norm import NormLayer


class CSPBottleneck(nn.Module):
    """3x3 conv -> 3x3 conv, plus the input when `shortcut` and the channel counts agree."""

    def __init__(self, in_chs: int, out_chs: int, shortcut: bool = True, expansion: float = 1.0,
                 kernel_size: int = 3, act_layer: ActLayer = "silu", norm_layer: NormLayer = "batch"):
        super().__init__()
        hidden = int(out_chs * expansion)
        self.cv1 = ConvNormAct(in_chs, hidden, kernel_size, act_layer=act_layer, norm_layer=norm_layer)
        self.cv2 = ConvNormAct(hidden, out_chs, kernel_size, act_layer=act_layer, norm_layer=norm_layer)
        self.add = shortcut and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """Split -> n bottlenecks on one half -> concatenate every stage -> 1x1 fuse (see the module docstring).

    `shortcut`: residual bottlenecks (True in a backbone, False in a neck). Parameters, for
    c = out_chs * expansion: in_chs*2c + (2+n)c*out_chs (1x1 convs) + n * 2 * 9c^2 (bottlenecks),
    plus the norms.
    """

    def __init__(self, in_chs: int, out_chs: int, depth: int = 1, shortcut: bool = False, expansion: float = 0.5,
                 act_layer: ActLayer = "silu", norm_layer: NormLayer = "batch"):
        super().__init__()
        self.c = int(out_chs * expansion)
        self.cv1 = ConvNormAct(in_chs, 2 * self.c, 1, act_layer=act_layer, norm_layer=norm_layer)
        self.cv2 = ConvNormAct((2 + depth) * self.c, out_chs, 1, act_layer=act_layer, norm_layer=norm_layer)
        self.m = nn.ModuleList(CSPBottleneck(self.c, self.c, shortcut, 1.0, act_layer=act_layer,
                                             norm_layer=norm_layer) for _ in range(depth))
        self.out_channels = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.cv1(x).chunk(2, 1))  # two (B, c, H, W) halves
        for block in self.m:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, 1))  # (B, (2 + n) c, H, W) -> (B, out_chs, H, W)


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained k x k max-pools (stride 1, same size) and a 1x1 fuse."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 5, act_layer: ActLayer = "silu",
                 norm_layer: NormLayer = "batch"):
        super().__init__()
        hidden = in_chs // 2
        self.cv1 = ConvNormAct(in_chs, hidden, 1, act_layer=act_layer, norm_layer=norm_layer)
        self.cv2 = ConvNormAct(4 * hidden, out_chs, 1, act_layer=act_layer, norm_layer=norm_layer)
        self.pool = nn.MaxPool2d(kernel_size, 1, kernel_size // 2)
        self.out_channels = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [self.cv1(x)]
        for _ in range(3):  # windows of k, 2k - 1, 3k - 2 (5, 9, 13): the three pools of SPP
            parts.append(self.pool(parts[-1]))
        return self.cv2(torch.cat(parts, 1))
