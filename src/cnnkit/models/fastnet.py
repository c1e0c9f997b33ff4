"""FastNet: cnnkit's default network for small images (28-64 px), built for speed on a CPU.

A residual design in the spirit of the DAWNBench "ResNet-9" family, narrowed for laptops:

    stem     ConvNormAct(in, w)                       (B, w,  H,   W)
    layer1   ConvNormAct(w, 2w)  + MaxPool + Residual (B, 2w, H/2, W/2)
    layer2   ConvNormAct(2w, 4w) + MaxPool            (B, 4w, H/4, W/4)
    layer3   ConvNormAct(4w, 8w) + MaxPool + Residual (B, 8w, H/8, W/8)
    head     global max pool -> Linear (scaled logits)

Only 3x3 convolutions, few layers at full resolution and max-pooling for down-sampling keep
the work per image small; the residual blocks keep it trainable in a few epochs.
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn import ConvNormAct
from ..registry import register_model
from ._base import ClassifierHead, ClassifierModel, adapt_cfg, make_cfg


class Residual(nn.Module):
    """x + f(x) with f = two ConvNormAct at the same width."""

    def __init__(self, chs: int, act_layer="relu"):
        super().__init__()
        self.conv1 = ConvNormAct(chs, chs, 3, act_layer=act_layer)
        self.conv2 = ConvNormAct(chs, chs, 3, act_layer=act_layer)

    def forward(self, x):
        return x + self.conv2(self.conv1(x))


class FastNet(ClassifierModel):
    def __init__(self, num_classes=10, in_chans=3, width=16, act_layer="relu", drop_rate=0.0,
                 logit_scale: float = 0.125):
        super().__init__()
        self.num_classes = num_classes
        w = width
        self.stem = ConvNormAct(in_chans, w, 3, act_layer=act_layer)
        self.layer1 = nn.Sequential(ConvNormAct(w, 2 * w, 3, act_layer=act_layer), nn.MaxPool2d(2),
                                    Residual(2 * w, act_layer))
        self.layer2 = nn.Sequential(ConvNormAct(2 * w, 4 * w, 3, act_layer=act_layer), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(ConvNormAct(4 * w, 8 * w, 3, act_layer=act_layer), nn.MaxPool2d(2),
                                    Residual(8 * w, act_layer))
        # Max pooling suits "is the pattern anywhere" evidence; the fixed logit scale keeps the
        # initial softmax soft, which lets a high learning rate work from the first step.
        self.head = ClassifierHead(8 * w, num_classes, pool="max", drop_rate=drop_rate)
        self.logit_scale = logit_scale
        self.feature_info = [
            dict(num_chs=w, reduction=1, module="stem"),
            dict(num_chs=2 * w, reduction=2, module="layer1"),
            dict(num_chs=4 * w, reduction=4, module="layer2"),
            dict(num_chs=8 * w, reduction=8, module="layer3"),
        ]

    def forward_features(self, x):
        return self.layer3(self.layer2(self.layer1(self.stem(x))))

    def forward_head(self, x, pre_logits: bool = False):
        x = self.head(x, pre_logits=pre_logits)
        return x if pre_logits else x * self.logit_scale


def _fastnet(name, width, num_classes, in_chans, **kwargs):
    model = FastNet(num_classes, in_chans, width=width, **kwargs)
    cfg = make_cfg((3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3, first_conv="stem.conv", classifier="head.fc",
                   paper="cnnkit (after Page's ResNet-9, 2018)")
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture=name, tv_name=None)
    return model


@register_model
def fastnet(num_classes: int = 10, in_chans: int = 3, **kwargs):
    """The default small-image model: width 16, 0.41 M parameters, 17 M MACs at 28 px."""
    return _fastnet("fastnet", 16, num_classes, in_chans, **kwargs)


@register_model
def fastnet_wide(num_classes: int = 10, in_chans: int = 3, **kwargs):
    """Twice as wide: width 32, 1.6 M parameters, 69 M MACs at 28 px (4x the work)."""
    return _fastnet("fastnet_wide", 32, num_classes, in_chans, **kwargs)
