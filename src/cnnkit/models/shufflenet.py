"""ShuffleNetV2 (Ma et al., ECCV 2018): channel split + channel shuffle (the guide's section 7.2).

Layout: `stem` (conv 3x3 s2) -> `maxpool` (3x3 s2) -> `stages` (three, each a stride-2 unit then
stride-1 units, Table 5) -> `conv_head` (1x1) -> `head`. Units: `cnnkit.nn.shuffle.ShuffleV2Block`.
Same layout and weights as torchvision's `shufflenet_v2_x*` (converter below).
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.act import ActLayer
from ..nn.conv import ConvNormAct
from ..nn.norm import NormLayer
from ..nn.shuffle import ShuffleV2Block
from ..registry import register_model
from ._base import ClassifierHead, ClassifierModel, adapt_cfg, make_cfg
from ._tv import register_tv_converter
from .mobilenet import _cna, _rename


class ShuffleNetV2(ClassifierModel):
    """ShuffleNetV2 with `repeats` units per stage and `channels` = (stem, stage 2, 3, 4, last conv).

    `small_input=True`: stride-1 stem and no stem max-pool (total stride 8 instead of 32)."""

    def __init__(self, repeats, channels, num_classes: int = 1000, in_chans: int = 3, act_layer: ActLayer = "relu",
                 norm_layer: NormLayer = "batch", drop_rate: float = 0.0, small_input: bool = False):
        super().__init__()
        if len(repeats) != 3 or len(channels) != 5:
            raise ValueError("ShuffleNetV2 needs 3 stage repeats and 5 channel widths")
        self.stem = ConvNormAct(in_chans, channels[0], 3, 1 if small_input else 2, norm_layer=norm_layer,
                                act_layer=act_layer)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1)
        c_in, red, stages, self.feature_info = channels[0], 1 if small_input else 4, [], []
        for i, (n, c) in enumerate(zip(repeats, channels[1:4])):
            blocks = [ShuffleV2Block(c_in, c, 2, act_layer, norm_layer)]
            blocks += [ShuffleV2Block(c, c, 1, act_layer, norm_layer) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in, red = c, red * 2
            self.feature_info.append(dict(num_chs=c, reduction=red, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = channels[4]
        self.conv_head = ConvNormAct(c_in, self.num_features, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.feature_info.append(dict(num_chs=self.num_features, reduction=red, module="conv_head"))
        self.num_classes = num_classes
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate=drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.stem(x))  # (B, 24, H/4, W/4)
        return self.conv_head(self.stages(x))  # (B, C_last, H/32, W/32)


def _shufflenet(name: str, channels, num_classes: int, in_chans: int, **kwargs) -> ShuffleNetV2:
    repeats = (4, 8, 4)  # units per stage (Table 5: 1 stride-2 + 3, 1 + 7, 1 + 3)
    model = ShuffleNetV2(repeats, channels, num_classes, in_chans, **kwargs)
    small = kwargs.get("small_input", False)
    cfg = make_cfg(input_size=(3, 32, 32) if small else (3, 224, 224), first_conv="stem.conv", classifier="head.fc",
                   small_input=small, paper="Ma et al., ShuffleNet V2: Practical Guidelines for Efficient CNN "
                                            "Architecture Design, ECCV 2018")
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture=name, tv_name=name)
    return model


@register_model
def shufflenet_v2_x0_5(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ShuffleNetV2:
    """ShuffleNetV2 0.5x. kwargs: act_layer, norm_layer, drop_rate, small_input."""
    return _shufflenet("shufflenet_v2_x0_5", (24, 48, 96, 192, 1024), num_classes, in_chans, **kwargs)


@register_model
def shufflenet_v2_x1_0(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ShuffleNetV2:
    """ShuffleNetV2 1.0x: 2,278,604 parameters (= torchvision)."""
    return _shufflenet("shufflenet_v2_x1_0", (24, 116, 232, 464, 1024), num_classes, in_chans, **kwargs)


@register_model
def shufflenet_v2_x1_5(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ShuffleNetV2:
    """ShuffleNetV2 1.5x."""
    return _shufflenet("shufflenet_v2_x1_5", (24, 176, 352, 704, 1024), num_classes, in_chans, **kwargs)


@register_model
def shufflenet_v2_x2_0(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ShuffleNetV2:
    """ShuffleNetV2 2.0x (wider last conv: 2048)."""
    return _shufflenet("shufflenet_v2_x2_0", (24, 244, 488, 976, 2048), num_classes, in_chans, **kwargs)


@register_tv_converter("shufflenet_v2_*")
def _convert(sd, model):
    """torchvision numbers the layers inside each branch (conv, BN, [ReLU]); here each is a ConvNormAct."""
    pairs = {**_cna("conv1", "stem"), **_cna("conv5", "conv_head"), "fc": "head.fc"}
    for i, stage in enumerate(model.stages):
        for j in range(len(stage)):
            tv, ours = f"stage{i + 2}.{j}", f"stages.{i}.{j}"
            # branch1 (stride 2 only): 0 dw conv, 1 BN, 2 pw conv, 3 BN
            pairs.update({f"{tv}.branch1.0": f"{ours}.branch1.0.conv", f"{tv}.branch1.1": f"{ours}.branch1.0.bn",
                          f"{tv}.branch1.2": f"{ours}.branch1.1.conv", f"{tv}.branch1.3": f"{ours}.branch1.1.bn"})
            # branch2: 0 pw conv, 1 BN, (2 ReLU), 3 dw conv, 4 BN, 5 pw conv, 6 BN
            for k, (c, b) in enumerate(((0, 1), (3, 4), (5, 6))):
                pairs.update({f"{tv}.branch2.{c}": f"{ours}.branch2.{k}.conv",
                              f"{tv}.branch2.{b}": f"{ours}.branch2.{k}.bn"})
    return _rename(sd, pairs)
