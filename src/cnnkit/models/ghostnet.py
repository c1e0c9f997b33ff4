"""GhostNet (Han et al., CVPR 2020): cheap depthwise "ghost" feature maps (the guide's section 7.2).

Layout: `stem` (conv 3x3 s2, 16) -> `stages` (ghost bottlenecks of Table 1, a new stage at each
stride 2) -> `conv_head` (1x1 to 960, on the map) -> `head` (pool -> 1280 -> ReLU -> dropout -> fc).
Blocks: `cnnkit.nn.ghost` (GhostModule with s = 2, d = 3; GhostBottleneck).

torchvision has no GhostNet. Compared instead: the paper's parameter counts (Table 7: 0.5x 2.6M,
1.0x 5.2M, 1.3x 7.3M; here 2,587,292 / 5,182,508 / 7,358,820 at 1000 classes) and, for 1.0x, the
same parameters in the same order and the same outputs as timm's `ghostnet_100` (the authors'
layout), checked in tests/models/test_ghostnet.py. The cheap operation with s = 2 (tests/nn):
a ghost module costs 1/s of the ordinary conv it replaces, up to the small depthwise term.
Departure: the paper's 1x1 conv (with bias) after global pooling is a Linear here (same weights
and output, since it acts on a 1x1 map).
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.act import ActLayer
from ..nn.conv import ConvNormAct
from ..nn.ghost import GhostBottleneck
from ..nn.mbconv import make_divisible
from ..nn.norm import NormLayer
from ..registry import register_model
from ._base import ClassifierModel, adapt_cfg, make_cfg
from .mobilenet import PreLogitsHead


class GhostNet(ClassifierModel):
    """GhostNet: rows (k, exp, c, se_ratio, s) of ghost bottlenecks; `width` scales every width (to multiples of 4)."""

    def __init__(self, arch, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0, stem_chs: int = 16,
                 last_chs: int = 960, head_hidden: int = 1280, act_layer: ActLayer = "relu",
                 norm_layer: NormLayer = "batch", drop_rate: float = 0.2, small_input: bool = False):
        super().__init__()
        ch = lambda c: make_divisible(c * width, 4)  # noqa: E731
        red = 1 if small_input else 2
        c_in = ch(stem_chs)
        self.stem = ConvNormAct(in_chans, c_in, 3, red, norm_layer=norm_layer, act_layer=act_layer)
        stages, self.feature_info = [], []
        for k, exp, c, se, s in arch:
            if not stages or s > 1:
                stages.append([])
                red *= s
                self.feature_info.append(dict(num_chs=0, reduction=red, module=f"stages.{len(stages) - 1}"))
            stages[-1].append(GhostBottleneck(c_in, ch(exp), ch(c), k, s, se, act_layer, norm_layer))
            c_in = self.feature_info[-1]["num_chs"] = ch(c)
        self.stages = nn.Sequential(*[nn.Sequential(*b) for b in stages])
        self.num_features = ch(last_chs)
        self.conv_head = ConvNormAct(c_in, self.num_features, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.feature_info.append(dict(num_chs=self.num_features, reduction=red, module="conv_head"))
        self.num_classes = num_classes
        self.head = PreLogitsHead(self.num_features, head_hidden, num_classes, act_layer, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_head(self.stages(self.stem(x)))  # (B, 960, H/32, W/32)


@register_model
def ghostnet(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> GhostNet:
    """GhostNet 1.0x: 5,182,508 parameters at 1000 classes (paper: 5.2M). kwargs: width (0.5, 1.3, ...),
    act_layer, norm_layer, drop_rate, small_input."""
    arch = (  # dw kernel, expansion width (#exp), out (#out), SE ratio, stride: Table 1
        (3, 16, 16, 0, 1),
        (3, 48, 24, 0, 2),
        (3, 72, 24, 0, 1),
        (5, 72, 40, 0.25, 2),
        (5, 120, 40, 0.25, 1),
        (3, 240, 80, 0, 2),
        (3, 200, 80, 0, 1),
        (3, 184, 80, 0, 1),
        (3, 184, 80, 0, 1),
        (3, 480, 112, 0.25, 1),
        (3, 672, 112, 0.25, 1),
        (5, 672, 160, 0.25, 2),
        (5, 960, 160, 0, 1),
        (5, 960, 160, 0.25, 1),
        (5, 960, 160, 0, 1),
        (5, 960, 160, 0.25, 1),
    )
    model = GhostNet(arch, num_classes, in_chans, **kwargs)
    small = kwargs.get("small_input", False)
    cfg = make_cfg(input_size=(3, 32, 32) if small else (3, 224, 224), first_conv="stem.conv", classifier="head.fc",
                   small_input=small, paper="Han et al., GhostNet: More Features from Cheap Operations, CVPR 2020",
                   notes="post-pool 1x1 conv 960->1280 written as a Linear (same weights); ghost ratio s=2, d=3")
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture="ghostnet", tv_name=None)
    return model
