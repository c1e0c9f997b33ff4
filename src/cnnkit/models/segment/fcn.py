"""Fully convolutional networks (Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015) and torchvision's FCN on a dilated ResNet.

FCN-32s / 16s / 8s on VGG-16 (the paper's section 4):

    x (B, C, H, W), zero-padded at the bottom / right to a multiple of 32
      -> VGG-16 conv1 .. conv5 (cnnkit's VGG): pool3 (256, /8), pool4 (512, /16), pool5 (512, /32)
      -> fc6: 7x7 conv 4096, ReLU, dropout 0.5 -> fc7: 1x1 conv 4096, ReLU, dropout 0.5
         (VGG's fully connected layers as convolutions: the classifier slides over the image)
      -> score_fr: 1x1 conv -> K class scores at stride 32
      -> FCN-32s: upsample 32x                                            (upscore, fixed bilinear)
         FCN-16s: 2x (upscore2) + score_pool4 (1x1 on pool4), then 16x   (upscore)
         FCN-8s:  ... 2x again (upscore_pool4) + score_pool3 (1x1 on pool3), then 8x (upscore)
      -> crop to H x W

Upsampling is transposed convolution (K -> K, kernel 2f, stride f, no bias) initialised to
bilinear interpolation; the 2x steps are learned, the final one stays bilinear (requires_grad
False), as in the paper. The new score layers start at zero (the paper's zero init).

Departure from the paper: it pads conv1_1 by 100 pixels and crops every fused map by an offset
(so that fc6's unpadded 7x7 conv fits any image). Here the input is padded to a multiple of 32,
fc6 pads by 3, every map is exactly H/8, H/16, H/32 and the output is cropped back: any size
works and no crop offsets are needed.

torchvision's FCN (`fcn_resnet50`, `fcn_resnet101`): a ResNet dilated to output stride 8
(layer3 and layer4 keep stride 1, dilation 2 and 4) -> FCNHead (3x3 conv 2048 -> 512, BN, ReLU,
dropout 0.1, 1x1 conv -> K) -> bilinear upsampling to the input size; in training an auxiliary
FCNHead on layer3 (1024 -> 256 -> K). The same layout and module order, so torchvision's state
dicts load (`cnnkit.models.load_torchvision_weights`) and the outputs match.
"""
from __future__ import annotations

import torch
from torch import nn

from ...nn.conv import ConvNormAct
from ...registry import CnnkitError, register_model
from .._tv import register_tv_converter
from ..vgg import rename_prefixes
from ._base import (Encoder, FCNHead, SegmentationModel, SimpleSegmenter, aux_stage_of, bilinear_upsampler,
                    body_first_conv, make_body, pad_to_multiple, segment_cfg, stage_at, with_doc)

PAPER = "Long, Shelhamer & Darrell, Fully Convolutional Networks for Semantic Segmentation, CVPR 2015"


class FCN(SegmentationModel):
    """FCN-32s / 16s / 8s (`stride` 32, 16, 8) over a body with stages at strides 8, 16, 32 (VGG-16's
    pool3, pool4, pool5, or any cnnkit backbone's). See the module docstring for the layout."""

    def __init__(self, body: nn.Module, stride: int, num_classes: int, fc_width: int = 4096,
                 drop_rate: float = 0.5):
        super().__init__()
        if stride not in (8, 16, 32):
            raise CnnkitError(f"FCN stride must be 32, 16 or 8, got {stride}")
        self.stride, self.num_classes = stride, num_classes
        stages = [stage_at(body.feature_info, r) for r in (8, 16, 32) if r >= stride]  # coarsest last
        self.encoder = Encoder(body, stages)
        self.skip_chs = dict(zip(self.encoder.reductions, self.encoder.channels))
        c5 = self.skip_chs[32]
        self.fc6 = ConvNormAct(c5, fc_width, 7, norm_layer=None)  # 7x7, padding 3, bias
        self.drop6 = nn.Dropout(drop_rate)
        self.fc7 = ConvNormAct(fc_width, fc_width, 1, norm_layer=None)
        self.drop7 = nn.Dropout(drop_rate)
        self.aux_head = None
        self._make_scores(num_classes)

    def _make_scores(self, k: int) -> None:
        """Every layer that is K wide: the score convs and the upsamplers (K -> K)."""
        device = self.fc7.conv.weight.device
        with torch.device(device):
            self.score_fr = nn.Conv2d(self.fc7.conv.out_channels, k, 1)
            if self.stride <= 16:
                self.upscore2 = bilinear_upsampler(k, 2)
                self.score_pool4 = nn.Conv2d(self.skip_chs[16], k, 1)
            if self.stride == 8:
                self.upscore_pool4 = bilinear_upsampler(k, 2)
                self.score_pool3 = nn.Conv2d(self.skip_chs[8], k, 1)
            self.upscore = bilinear_upsampler(k, self.stride, learnable=False)
            for name in ("score_fr", "score_pool4", "score_pool3"):
                if hasattr(self, name):
                    nn.init.zeros_(getattr(self, name).weight)
                    nn.init.zeros_(getattr(self, name).bias)

    def forward_logits(self, x: torch.Tensor, aux: bool = False):
        h, w = x.shape[-2:]
        feats = dict(zip(self.encoder.reductions, self.encoder(pad_to_multiple(x, 32))))
        s = self.score_fr(self.drop7(self.fc7(self.drop6(self.fc6(feats[32])))))  # (B, K, H/32, W/32)
        if self.stride <= 16:
            s = self.upscore2(s) + self.score_pool4(feats[16])  # (B, K, H/16, W/16)
        if self.stride == 8:
            s = self.upscore_pool4(s) + self.score_pool3(feats[8])  # (B, K, H/8, W/8)
        return self.upscore(s)[..., :h, :w], None  # (B, K, H, W)

    def reset_classifier(self, num_classes: int) -> None:
        self._make_scores(num_classes)
        self._set_classes(num_classes)


def _fcn_vgg(name: str, stride: int, num_classes: int, in_chans: int, backbone=None, backbone_args=None,
             image_size=512, fc_width: int = 4096, drop_rate: float = 0.5) -> FCN:
    if backbone is None:  # VGG's classifier is dropped: build it 8 wide, not 102 M weights to throw away
        backbone_args = {"hidden": 8, **(backbone_args or {})}
    body, bname = make_body(backbone or "vgg16", in_chans, None, backbone_args)
    model = FCN(body, stride, num_classes, fc_width, drop_rate)
    model.default_cfg = segment_cfg(
        name, num_classes, in_chans, image_size=image_size, first_conv=body_first_conv(body, "encoder.body."),
        classifier="score_fr", paper=PAPER, backbone=bname, tv_name=None, output_stride=32, aux=False,
        skips={32: (), 16: ("pool4",), 8: ("pool4", "pool3")}[stride],
        notes="input zero-padded to a multiple of 32 and the output cropped (the paper pads conv1_1 by 100 and "
              "crops); fc6 pads by 3; final upsampling fixed bilinear, 2x steps learned, score layers zero-init")
    return model


_VGG_DOC = """ Keyword options: backbone (a cnnkit model name or built
    model with stages at strides 8 / 16 / 32, default "vgg16"), backbone_args, fc_width (4096),
    drop_rate (0.5), image_size (default_cfg only)."""
DILATED_DOC = """ Keyword options: aux_loss (the auxiliary FCNHead on the stage before the last,
    ResNet's layer3; returned in training mode), output_stride (8 or 16: ResNet stages 3-4 / 4 dilated;
    32: none), backbone (a cnnkit model name, dilated where its family can be -- ResNet, MobileNetV3 --
    else used at its own strides; or a built model, used as it is), backbone_args, image_size
    (default_cfg only)."""



def _doc(text: str, options: str = DILATED_DOC):
    return with_doc(text, options)


@register_model
@_doc("""FCN-32s on VGG-16 (Long et al. 2015): score_fr at stride 32, upsampled 32x (fixed bilinear).
    136,152,917 parameters at 21 classes (VGG-16 convs 14,714,688; fc6 102,764,544; fc7 16,781,312).""", _VGG_DOC)
def fcn32s_vgg16(num_classes: int = 21, in_chans: int = 3, **kwargs) -> FCN:
    return _fcn_vgg("fcn32s_vgg16", 32, num_classes, in_chans, **kwargs)


@register_model
@_doc("""FCN-16s on VGG-16: stride-32 scores upsampled 2x (learned) + pool4 scores, then 16x.
    134,815,994 parameters at 21 classes.""", _VGG_DOC)
def fcn16s_vgg16(num_classes: int = 21, in_chans: int = 3, **kwargs) -> FCN:
    return _fcn_vgg("fcn16s_vgg16", 16, num_classes, in_chans, **kwargs)


@register_model
@_doc("""FCN-8s on VGG-16: FCN-16s' fused scores upsampled 2x + pool3 scores, then 8x.
    134,489,759 parameters at 21 classes.""", _VGG_DOC)
def fcn8s_vgg16(num_classes: int = 21, in_chans: int = 3, **kwargs) -> FCN:
    return _fcn_vgg("fcn8s_vgg16", 8, num_classes, in_chans, **kwargs)


# ------------------------------------------------------------------ torchvision's FCN on a dilated ResNet


def check_output_stride(output_stride) -> int:
    if output_stride not in (8, 16, 32):
        raise CnnkitError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    return int(output_stride)


def _fcn_resnet(name: str, default_backbone: str, num_classes: int, in_chans: int, aux_default: bool, tv: bool,
                image_size, backbone=None, backbone_args=None, output_stride: int = 8,
                aux_loss: bool | None = None) -> SimpleSegmenter:
    aux = aux_default if aux_loss is None else bool(aux_loss)
    body, bname = make_body(backbone or default_backbone, in_chans, check_output_stride(output_stride),
                            backbone_args)
    out = body.feature_info[-1]
    aux_stage = aux_stage_of(body) if aux else None
    model = SimpleSegmenter(body, FCNHead(out["num_chs"], num_classes), out, num_classes, aux_stage,
                            FCNHead(aux_stage["num_chs"], num_classes) if aux else None)
    exact = tv and backbone is None and not backbone_args and output_stride == 8
    model.default_cfg = segment_cfg(
        name, num_classes, in_chans, image_size=image_size, first_conv=body_first_conv(body, "encoder.body."),
        classifier="head.cls", paper=PAPER, backbone=bname, tv_name=name if exact else None,
        output_stride=out["reduction"], aux=aux,
        notes="torchvision's FCN: dilated ResNet, FCNHead (3x3 conv C/4, BN, ReLU, dropout 0.1, 1x1), aux FCNHead")
    return model


@register_model
@_doc("""torchvision's FCN-ResNet-50: ResNet-50 at output stride 8, FCNHead 2048 -> 512 -> K, aux FCNHead on
    layer3 (1024 -> 256 -> K, on by default). 35,322,218 parameters at 21 classes (= torchvision), 32,957,013
    with aux_loss=False.""")
def fcn_resnet50(num_classes: int = 21, in_chans: int = 3, **kwargs) -> SimpleSegmenter:
    return _fcn_resnet("fcn_resnet50", "resnet50", num_classes, in_chans, True, True, kwargs.pop("image_size", 520),
                       **kwargs)


@register_model
@_doc("""torchvision's FCN-ResNet-101: as fcn_resnet50 on ResNet-101. 54,314,346 parameters at 21 classes
    (= torchvision), 51,949,141 with aux_loss=False.""")
def fcn_resnet101(num_classes: int = 21, in_chans: int = 3, **kwargs) -> SimpleSegmenter:
    return _fcn_resnet("fcn_resnet101", "resnet101", num_classes, in_chans, True, True,
                       kwargs.pop("image_size", 520), **kwargs)


@register_model
@_doc("""FCN on ResNet-18 for small images: ResNet-18 at output stride 8 (basic blocks dilated), FCNHead
    512 -> 128 -> K; no aux head by default (aux_loss=True adds one on layer3, 256 -> 64 -> K).
    11,769,301 parameters at 21 classes.""")
def fcn_resnet18(num_classes: int = 21, in_chans: int = 3, **kwargs) -> SimpleSegmenter:
    return _fcn_resnet("fcn_resnet18", "resnet18", num_classes, in_chans, False, False,
                       kwargs.pop("image_size", 128), **kwargs)


# ------------------------------------------------------------------ torchvision weights


def fcn_head_pairs(tv: str, ours: str) -> dict:
    """torchvision's FCNHead is a Sequential (0 conv, 1 BN, 2 ReLU, 3 dropout, 4 conv); ours names them."""
    return {f"{tv}.0.": f"{ours}.block.conv.", f"{tv}.1.": f"{ours}.block.bn.", f"{tv}.4.": f"{ours}.cls."}


@register_tv_converter("fcn_resnet50", "fcn_resnet101")
def _from_torchvision(sd, model):
    """backbone.* (torchvision's ResNet without avgpool / fc, same module names) -> encoder.body.*;
    classifier / aux_classifier -> head / aux_head."""
    table = {"backbone.": "encoder.body.", **fcn_head_pairs("classifier", "head"),
             **fcn_head_pairs("aux_classifier", "aux_head")}
    return rename_prefixes(sd, table)
