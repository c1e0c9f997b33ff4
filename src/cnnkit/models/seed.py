"""The guide's own network (§9, "a complete CNN project"), exactly as written there.

Three Conv-BN-ReLU stages (32, 64, 128 channels), max-pool after the first two, global
average pooling after the third, then Dropout(0.5) and Linear(128 -> num_classes).
"""
from __future__ import annotations

from torch import nn

from ..nn import ConvNormAct
from ..registry import register_model
from ._base import ClassifierHead, ClassifierModel, adapt_cfg, make_cfg


class SeedCNN(ClassifierModel):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths=(32, 64, 128), drop_rate: float = 0.5,
                 act_layer="relu"):
        super().__init__()
        self.num_classes = num_classes
        c1, c2, c3 = widths
        # The guide's Conv2d(…, 3, padding=1) keeps its bias before BN; so do we, to match its parameter count.
        self.features = nn.Sequential(
            ConvNormAct(in_chans, c1, 3, act_layer=act_layer, bias=True), nn.MaxPool2d(2),  # (B, 32, H/2, W/2)
            ConvNormAct(c1, c2, 3, act_layer=act_layer, bias=True), nn.MaxPool2d(2),        # (B, 64, H/4, W/4)
            ConvNormAct(c2, c3, 3, act_layer=act_layer, bias=True),                         # (B, 128, H/4, W/4)
        )
        self.head = ClassifierHead(c3, num_classes, pool="avg", drop_rate=drop_rate)
        self.feature_info = [
            dict(num_chs=c1, reduction=1, module="features.0"),
            dict(num_chs=c2, reduction=2, module="features.2"),
            dict(num_chs=c3, reduction=4, module="features.4"),
        ]

    def forward_features(self, x):
        return self.features(x)


@register_model
def seed_cnn(num_classes: int = 10, in_chans: int = 3, **kwargs):
    """The guide's §9 CNN (32-64-128 Conv-BN-ReLU, GAP, Dropout 0.5, Linear)."""
    model = SeedCNN(num_classes, in_chans, **kwargs)
    cfg = make_cfg((3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, first_conv="features.0.conv",
                   classifier="head.fc", paper="the guide, §9")
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture="seed_cnn", tv_name=None)
    return model
