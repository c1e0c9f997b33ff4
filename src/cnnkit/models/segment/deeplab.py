"""DeepLabv3 (Chen, Papandreou, Schroff & Adam, "Rethinking Atrous Convolution for Semantic Image
Segmentation", 2017) and DeepLabv3+ (Chen, Zhu, Papandreou, Schroff & Adam, "Encoder-Decoder with
Atrous Separable Convolution for Semantic Image Segmentation", ECCV 2018).

DeepLabv3 (torchvision's layout):

    x (B, C, H, W)
      -> body at output stride 8 or 16 (a ResNet whose last one or two stages keep stride 1 and
         dilate instead; MobileNetV3 with its last stage dilated: 16)
      -> ASPP (cnnkit.nn.aspp): 1x1, three 3x3 atrous convs and image pooling, 256 wide each,
         concatenated, projected to 256, dropout 0.5. Rates 6 / 12 / 18 at output stride 16,
         doubled (12 / 24 / 36) at output stride 8, as the paper
      -> 3x3 conv 256 + BN + ReLU -> 1x1 conv -> K                  (torchvision's DeepLabHead)
      -> bilinear upsampling to H x W
      training only: an auxiliary FCNHead on an earlier stage (ResNet: layer3)

The paper's head is ASPP then the 1x1 classifier; the extra 3x3 conv is torchvision's, kept so
that `deeplabv3_resnet50`, `deeplabv3_resnet101` and `deeplabv3_mobilenet_v3_large` are exactly
torchvision's (state dicts load, outputs match). torchvision's MobileNetV3 model keeps rates
12 / 24 / 36 although it runs at output stride 16, and takes its aux features from the first
block of the stride-8 stage (40 channels); both are reproduced.

DeepLabv3+ adds a decoder to DeepLabv3 (the ResNet variant of the paper, section 3.2):

    body at output stride 16 -> ASPP (rates 6 / 12 / 18) -> upsample to the stride-4 map (4x)
    stride-4 features (ResNet's layer1) -> 1x1 conv 48 + BN + ReLU
    concatenate (256 + 48) -> two 3x3 convs 256 + BN + ReLU -> 1x1 conv -> K -> upsample 4x

The paper's Xception body and depthwise separable ASPP / decoder convs are not used here: the
convs are regular 3x3 ones, as in the paper's ResNet-101 experiments.
"""
from __future__ import annotations

import torch
from torch import nn

from ...nn.aspp import ASPP
from ...nn.conv import ConvNormAct
from ...registry import register_model
from .._tv import register_tv_converter
from ..mobilenet import MobileNetV3, _flat_tv_pairs, _rename
from ..vgg import rename_prefixes
from ._base import (Encoder, FCNHead, SegmentationModel, SimpleSegmenter, aux_stage_of, body_first_conv,
                    make_body, module_at, new_classifier, resize_to, scaled_rates, segment_cfg, stage_at,
                    stages_by_stride, with_doc)
from .fcn import DILATED_DOC, check_output_stride, fcn_head_pairs

PAPERS = {
    "v3": "Chen et al., Rethinking Atrous Convolution for Semantic Image Segmentation, arXiv 2017",
    "v3+": "Chen et al., Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation, "
           "ECCV 2018",
}
BASE_RATES = (6, 12, 18)  # the paper's, at output stride 16


class DeepLabHead(nn.Module):
    """ASPP -> 3x3 ConvNormAct 256 -> 1x1 conv -> K. (B, C, h, w) -> (B, K, h, w)."""

    def __init__(self, in_chs: int, num_classes: int, rates=(12, 24, 36), width: int = 256):
        super().__init__()
        self.aspp = ASPP(in_chs, rates, width)
        self.block = ConvNormAct(width, width, 3)
        self.cls = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.block(self.aspp(x)))


class DeepLabV3PlusHead(nn.Module):
    """ASPP on the deep map, upsampled to the low-level map, concatenated with its 48-channel
    projection, two 3x3 ConvNormAct 256, 1x1 conv -> K. (deep, low) -> (B, K, h_low, w_low)."""

    def __init__(self, in_chs: int, low_chs: int, num_classes: int, rates=BASE_RATES, width: int = 256,
                 low_width: int = 48):
        super().__init__()
        self.aspp = ASPP(in_chs, rates, width)
        self.low_proj = ConvNormAct(low_chs, low_width, 1)
        self.decoder = nn.Sequential(ConvNormAct(width + low_width, width, 3), ConvNormAct(width, width, 3))
        self.cls = nn.Conv2d(width, num_classes, 1)

    def forward(self, deep: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        x = resize_to(self.aspp(deep), low.shape[-2:])  # (B, 256, H/4, W/4)
        x = torch.cat([x, self.low_proj(low)], dim=1)  # (B, 304, H/4, W/4)
        return self.cls(self.decoder(x))


class DeepLabV3Plus(SegmentationModel):
    """Encoder (deep and stride-4 stages) -> DeepLabV3PlusHead; optional aux FCNHead (training only)."""

    def __init__(self, body: nn.Module, deep: dict, low: dict, num_classes: int, rates, aux_stage: dict | None):
        super().__init__()
        self.num_classes = num_classes
        self.encoder = Encoder(body, [deep, low] + ([aux_stage] if aux_stage else []))
        self.head = DeepLabV3PlusHead(deep["num_chs"], low["num_chs"], num_classes, rates)
        self.aux_head = FCNHead(aux_stage["num_chs"], num_classes) if aux_stage else None

    def forward_logits(self, x: torch.Tensor, aux: bool = False):
        feats = self.encoder(x)
        out = self.head(feats[0], feats[1])
        return out, (self.aux_head(feats[2]) if aux and self.aux_head is not None else None)

    def reset_classifier(self, num_classes: int) -> None:
        self.head.cls = new_classifier(self.head.cls, num_classes)
        if self.aux_head is not None:
            self.aux_head.cls = new_classifier(self.aux_head.cls, num_classes)
        self._set_classes(num_classes)


def mobilenet_low_stage(body: nn.Module) -> dict:
    """torchvision's low-level / aux features of a MobileNetV3: the output of the first block of the
    stride-8 stage (MobileNetV3-Large: stages.2.0, 40 channels); other bodies: their stride-8 stage."""
    s8 = stage_at(body.feature_info, 8)
    if not isinstance(body, MobileNetV3):
        return s8
    path = f"{s8['module']}.0"
    return dict(num_chs=module_at(body, path).out_channels, reduction=8, module=path)


def _deeplabv3(name: str, default_backbone: str, num_classes: int, in_chans: int, *, default_os: int,
               aux_default: bool, tv: bool, image_size, default_rates=None, backbone=None, backbone_args=None,
               output_stride: int | None = None, aux_loss: bool | None = None,
               atrous_rates=None) -> SimpleSegmenter:
    aux = aux_default if aux_loss is None else bool(aux_loss)
    os_ = check_output_stride(default_os if output_stride is None else output_stride)
    body, bname = make_body(backbone or default_backbone, in_chans, os_, backbone_args)
    out = body.feature_info[-1]
    real_os = out["reduction"]
    rates = tuple(atrous_rates or default_rates or scaled_rates(BASE_RATES, real_os))
    aux_stage = None
    if aux:
        aux_stage = mobilenet_low_stage(body) if isinstance(body, MobileNetV3) else aux_stage_of(body)
    model = SimpleSegmenter(body, DeepLabHead(out["num_chs"], num_classes, rates), out, num_classes, aux_stage,
                            FCNHead(aux_stage["num_chs"], num_classes) if aux else None)
    exact = tv and backbone is None and not backbone_args and os_ == default_os and atrous_rates is None
    model.default_cfg = segment_cfg(
        name, num_classes, in_chans, image_size=image_size, first_conv=body_first_conv(body, "encoder.body."),
        classifier="head.cls", paper=PAPERS["v3"], backbone=bname, tv_name=name if exact else None,
        output_stride=real_os, aux=aux, atrous_rates=rates,
        notes="torchvision's DeepLabHead: ASPP (1x1, three atrous 3x3, image pooling; 256) + 3x3 conv 256 + 1x1")
    return model


_V3_OPTIONS = DILATED_DOC[:-1] + """; atrous_rates (default: 6 / 12 / 18 scaled by
    16 / output stride)."""


@register_model
@with_doc("""torchvision's DeepLabv3-ResNet-50: ResNet-50 at output stride 8, ASPP rates 12 / 24 / 36, aux FCNHead
    on layer3 (on by default). 42,004,074 parameters at 21 classes (= torchvision), 39,638,869 with
    aux_loss=False.""", _V3_OPTIONS)
def deeplabv3_resnet50(num_classes: int = 21, in_chans: int = 3, **kwargs) -> SimpleSegmenter:
    return _deeplabv3("deeplabv3_resnet50", "resnet50", num_classes, in_chans, default_os=8, aux_default=True,
                      tv=True, image_size=kwargs.pop("image_size", 520), **kwargs)


@register_model
@with_doc("""torchvision's DeepLabv3-ResNet-101: as deeplabv3_resnet50 on ResNet-101. 60,996,202 parameters at 21
    classes (= torchvision), 58,630,997 with aux_loss=False.""", _V3_OPTIONS)
def deeplabv3_resnet101(num_classes: int = 21, in_chans: int = 3, **kwargs) -> SimpleSegmenter:
    return _deeplabv3("deeplabv3_resnet101", "resnet101", num_classes, in_chans, default_os=8, aux_default=True,
                      tv=True, image_size=kwargs.pop("image_size", 520), **kwargs)


@register_model
@with_doc("""torchvision's DeepLabv3-MobileNetV3-Large: last stage dilated (output stride 16, C5 = 960 channels),
    ASPP rates 12 / 24 / 36 (torchvision's), aux FCNHead on the first stride-8 block (40 channels, on by
    default). 11,029,328 parameters at 21 classes (= torchvision), 11,025,477 with aux_loss=False.""",
      _V3_OPTIONS)
def deeplabv3_mobilenet_v3_large(num_classes: int = 21, in_chans: int = 3, **kwargs) -> SimpleSegmenter:
    return _deeplabv3("deeplabv3_mobilenet_v3_large", "mobilenet_v3_large", num_classes, in_chans, default_os=16,
                      aux_default=True, tv=True, image_size=kwargs.pop("image_size", 520),
                      default_rates=(12, 24, 36), **kwargs)


@register_model
@with_doc("""DeepLabv3 on ResNet-18 for small images: output stride 16 (the paper's training setting; layer4
    dilated), ASPP rates 6 / 12 / 18, torchvision's head; no aux head by default. 15,904,085 parameters at
    21 classes.""", _V3_OPTIONS)
def deeplabv3_resnet18(num_classes: int = 21, in_chans: int = 3, **kwargs) -> SimpleSegmenter:
    return _deeplabv3("deeplabv3_resnet18", "resnet18", num_classes, in_chans, default_os=16, aux_default=False,
                      tv=False, image_size=kwargs.pop("image_size", 128), **kwargs)


# ------------------------------------------------------------------ DeepLabv3+


def _deeplabv3plus(name: str, default_backbone: str, num_classes: int, in_chans: int, *, image_size,
                   backbone=None, backbone_args=None, output_stride: int = 16, aux_loss: bool = False,
                   atrous_rates=None) -> DeepLabV3Plus:
    body, bname = make_body(backbone or default_backbone, in_chans, check_output_stride(output_stride),
                            backbone_args)
    deep = body.feature_info[-1]
    low = next(s for s in stages_by_stride(body.feature_info) if s["reduction"] >= 4)  # stride 4 if it has one
    rates = tuple(atrous_rates or scaled_rates(BASE_RATES, deep["reduction"]))
    model = DeepLabV3Plus(body, deep, low, num_classes, rates, aux_stage_of(body) if aux_loss else None)
    model.default_cfg = segment_cfg(
        name, num_classes, in_chans, image_size=image_size, first_conv=body_first_conv(body, "encoder.body."),
        classifier="head.cls", paper=PAPERS["v3+"], backbone=bname, tv_name=None,
        output_stride=deep["reduction"], aux=bool(aux_loss), atrous_rates=rates, low_level_stride=low["reduction"],
        notes="regular (not separable) 3x3 convs in ASPP and decoder, as the paper's ResNet variant")
    return model


_PLUS_OPTIONS = """ Keyword options: output_stride (16; 8 doubles the rates), atrous_rates, aux_loss
    (off; an FCNHead on the stage before the last), backbone (a cnnkit model name or built model; its
    stride-4 stage, or the finest one at stride >= 4, feeds the decoder), backbone_args, image_size
    (default_cfg only)."""


@register_model
@with_doc("""DeepLabv3+ on ResNet-50 (Chen et al. 2018): output stride 16, ASPP 6 / 12 / 18, decoder on layer1
    (256 -> 48 channels), two 3x3 convs 256. 40,352,181 parameters at 21 classes.""", _PLUS_OPTIONS)
def deeplabv3plus_resnet50(num_classes: int = 21, in_chans: int = 3, **kwargs) -> DeepLabV3Plus:
    return _deeplabv3plus("deeplabv3plus_resnet50", "resnet50", num_classes, in_chans,
                          image_size=kwargs.pop("image_size", 512), **kwargs)


@register_model
@with_doc("""DeepLabv3+ on ResNet-18 for small images: as deeplabv3plus_resnet50, decoder on layer1 (64 -> 48
    channels). 16,608,181 parameters at 21 classes.""", _PLUS_OPTIONS)
def deeplabv3plus_resnet18(num_classes: int = 21, in_chans: int = 3, **kwargs) -> DeepLabV3Plus:
    return _deeplabv3plus("deeplabv3plus_resnet18", "resnet18", num_classes, in_chans,
                          image_size=kwargs.pop("image_size", 128), **kwargs)


# ------------------------------------------------------------------ torchvision weights


def deeplab_head_pairs() -> dict:
    """torchvision's DeepLabHead: 0 ASPP (convs.0: 1x1 Sequential, convs.1-3: ASPPConv, convs.4: ASPPPooling
    (0 pool, 1 conv, 2 BN), project (0 conv, 1 BN)), 1 conv, 2 BN, 3 ReLU, 4 conv."""
    pairs = {f"classifier.0.convs.{i}.{j}.": f"head.aspp.branches.{i}.{part}."
             for i in range(4) for j, part in ((0, "conv"), (1, "bn"))}
    pairs.update({"classifier.0.convs.4.1.": "head.aspp.branches.4.conv.conv.",
                  "classifier.0.convs.4.2.": "head.aspp.branches.4.conv.bn.",
                  "classifier.0.project.0.": "head.aspp.project.conv.",
                  "classifier.0.project.1.": "head.aspp.project.bn.",
                  "classifier.1.": "head.block.conv.", "classifier.2.": "head.block.bn.", "classifier.4.": "head.cls."})
    return pairs


def mobilenet_backbone_keys(sd: dict, body: nn.Module, prefix: str = "encoder.body.") -> dict:
    """torchvision's segmentation MobileNetV3 backbone is its flat `features` (backbone.0 stem, backbone.1-15
    blocks, backbone.16 last conv); ours is cnnkit's MobileNetV3 (stem, stages.i.j, conv_head)."""
    feats = {"features." + k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    rest = {k: v for k, v in sd.items() if not k.startswith("backbone.")}
    renamed = _rename(feats, _flat_tv_pairs(body, "block", split_pwl=False))
    return {**{prefix + k: v for k, v in renamed.items()}, **rest}


@register_tv_converter("deeplabv3_resnet50", "deeplabv3_resnet101")
def _from_torchvision_resnet(sd, model):
    table = {"backbone.": "encoder.body.", **deeplab_head_pairs(), **fcn_head_pairs("aux_classifier", "aux_head")}
    return rename_prefixes(sd, table)


@register_tv_converter("deeplabv3_mobilenet_v3_large")
def _from_torchvision_mobilenet(sd, model):
    sd = mobilenet_backbone_keys(sd, model.encoder.body)
    return rename_prefixes(sd, {**deeplab_head_pairs(), **fcn_head_pairs("aux_classifier", "aux_head")})
