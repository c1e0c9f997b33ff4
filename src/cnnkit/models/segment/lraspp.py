"""Lite R-ASPP (Howard et al., "Searching for MobileNetV3", ICCV 2019, section 6.4), torchvision's layout.

    x (B, C, H, W)
      -> MobileNetV3-Large with its last stage dilated (output stride 16)
         low:  the first block of the stride-8 stage (40 channels)
         high: the last 1x1 conv (960 channels, stride 16)
      -> high: 1x1 conv 128 + BN + ReLU, times a gate: global average pool -> 1x1 conv 128 -> sigmoid
         (squeeze-excitation-like attention over the whole image)
      -> upsampled (bilinear) to the low map; 1x1 conv -> K on it, plus 1x1 conv -> K on low
      -> bilinear upsampling to H x W

The paper pools with a 49x49 kernel and stride (16, 20) on 1024 x 2048 Cityscapes images;
torchvision (and this build) pool globally. No auxiliary head.
"""
from __future__ import annotations

import torch
from torch import nn

from ...nn.conv import ConvNormAct
from ...registry import register_model
from .._tv import register_tv_converter
from ..vgg import rename_prefixes
from ._base import (Encoder, SegmentationModel, body_first_conv, make_body, new_classifier, resize_to,
                    segment_cfg, with_doc)
from .deeplab import mobilenet_backbone_keys, mobilenet_low_stage
from .fcn import check_output_stride

PAPER = "Howard et al., Searching for MobileNetV3, ICCV 2019 (LR-ASPP, section 6.4)"


class LRASPPHead(nn.Module):
    """(low (B, C_low, h8, w8), high (B, C_high, h16, w16)) -> (B, K, h8, w8)."""

    def __init__(self, low_chs: int, high_chs: int, num_classes: int, width: int = 128):
        super().__init__()
        self.cbr = ConvNormAct(high_chs, width, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.scale = ConvNormAct(high_chs, width, 1, norm_layer=None, act_layer="sigmoid", bias=False)
        self.low_cls = nn.Conv2d(low_chs, num_classes, 1)
        self.high_cls = nn.Conv2d(width, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.cbr(high) * self.scale(self.pool(high))  # (B, 128, h16, w16), gated per channel
        x = resize_to(x, low.shape[-2:])
        return self.low_cls(low) + self.high_cls(x)


class LRASPP(SegmentationModel):
    def __init__(self, body: nn.Module, low: dict, high: dict, num_classes: int, width: int = 128):
        super().__init__()
        self.num_classes = num_classes
        self.encoder = Encoder(body, [low, high])
        self.head = LRASPPHead(low["num_chs"], high["num_chs"], num_classes, width)
        self.aux_head = None

    def forward_logits(self, x: torch.Tensor, aux: bool = False):
        low, high = self.encoder(x)
        return self.head(low, high), None

    def reset_classifier(self, num_classes: int) -> None:
        self.head.low_cls = new_classifier(self.head.low_cls, num_classes)
        self.head.high_cls = new_classifier(self.head.high_cls, num_classes)
        self._set_classes(num_classes)


@register_model
@with_doc("""torchvision's LR-ASPP on MobileNetV3-Large (last stage dilated, output stride 16): low features from
    the first stride-8 block (40 channels), high from the last conv (960); no aux head. 3,221,538 parameters
    at 21 classes (= torchvision).""",
      """ Keyword options: backbone (a cnnkit model name, dilated to output stride 16
    where it can be, or a built model; low = its stride-8 stage, high = its last), backbone_args,
    output_stride (16, or 32 for an undilated body), width (128), image_size (default_cfg only).""")
def lraspp_mobilenet_v3_large(num_classes: int = 21, in_chans: int = 3, backbone=None, backbone_args=None,
                              output_stride: int = 16, width: int = 128, image_size=520) -> LRASPP:
    body, bname = make_body(backbone or "mobilenet_v3_large", in_chans, check_output_stride(output_stride),
                            backbone_args)
    high = body.feature_info[-1]
    model = LRASPP(body, mobilenet_low_stage(body), high, num_classes, width)
    exact = backbone is None and not backbone_args and output_stride == 16 and width == 128
    name = "lraspp_mobilenet_v3_large"
    model.default_cfg = segment_cfg(
        name, num_classes, in_chans, image_size=image_size, first_conv=body_first_conv(body, "encoder.body."),
        classifier="head.high_cls", paper=PAPER, backbone=bname, tv_name=name if exact else None,
        output_stride=high["reduction"], aux=False,
        notes="global pooling for the gate (the paper: 49x49, stride (16, 20)); head.low_cls is the other classifier")
    return model


@register_tv_converter("lraspp_mobilenet_v3_large")
def _from_torchvision(sd, model):
    """torchvision's head: cbr (0 conv, 1 BN), scale (0 pool, 1 conv, 2 sigmoid), low_classifier, high_classifier."""
    sd = mobilenet_backbone_keys(sd, model.encoder.body)
    return rename_prefixes(sd, {"classifier.cbr.0.": "head.cbr.conv.", "classifier.cbr.1.": "head.cbr.bn.",
                                "classifier.scale.1.": "head.scale.conv.",
                                "classifier.low_classifier.": "head.low_cls.",
                                "classifier.high_classifier.": "head.high_cls."})
