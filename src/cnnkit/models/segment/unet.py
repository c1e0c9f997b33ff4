"""U-Net (Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015), and a U-Net decoder over any cnnkit encoder.

The classic U-Net (`unet`, `unet_small`), base width w (64 in the paper):

    x (B, C, H, W), zero-padded at the bottom / right to a multiple of 16
      contracting path: double conv (3x3 conv + BN + ReLU, twice) at w, then four times
                        2x2 max-pool + double conv, doubling the width: w, 2w, 4w, 8w, 16w (/16)
      expanding path:   four times 2x2 transposed conv (stride 2) halving the width, concatenation
                        with the contracting map of the same size (the skip), double conv
      -> 1x1 conv -> K, cropped to H x W

Departures from the paper (the common PyTorch layout): the 3x3 convs are padded (the paper's
are unpadded, so its 572 px input gives a 388 px output and the skips are cropped) and have no
bias, each followed by BatchNorm (which postdates the paper). Sizes that are not a multiple of
16 are padded, not resized, so the skips always fit; the output is cropped back.

`unet(encoder=...)` / `unet_resnet18`: the encoder is a cnnkit classification body; its
feature_info stages, one per stride (ResNet-18: 2, 4, 8, 16, 32), are the skips. Each decoder
block upsamples (bilinear, to the skip's size, so odd sizes fit) and concatenates the skip, then
a double conv; one more block without a skip brings stride 2 to the full size; 1x1 conv -> K.
Decoder widths (256, 128, 64, 32, 16) by default.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ...nn.conv import ConvNormAct
from ...nn.norm import NormLayer
from ...registry import CnnkitError, register_model
from ._base import (Encoder, SegmentationModel, body_first_conv, make_body, new_classifier, pad_to_multiple,
                    resize_to, segment_cfg, stages_by_stride, with_doc)

PAPER = "Ronneberger, Fischer & Brox, U-Net: Convolutional Networks for Biomedical Image Segmentation, MICCAI 2015"


class DoubleConv(nn.Sequential):
    """(3x3 conv, no bias -> BN -> ReLU) x 2. Parameters: 9*in*out + 9*out*out + 4*out."""

    def __init__(self, in_chs: int, out_chs: int, norm_layer: NormLayer = "batch"):
        super().__init__()
        self.conv1 = ConvNormAct(in_chs, out_chs, 3, norm_layer=norm_layer)
        self.conv2 = ConvNormAct(out_chs, out_chs, 3, norm_layer=norm_layer)


class UpBlock(nn.Module):
    """2x2 transposed conv (stride 2, in -> in / 2, with bias), concatenated with the skip, double conv."""

    def __init__(self, in_chs: int, skip_chs: int, out_chs: int, norm_layer: NormLayer = "batch"):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_chs, in_chs // 2, 2, 2)
        self.conv = DoubleConv(in_chs // 2 + skip_chs, out_chs, norm_layer)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(SegmentationModel):
    """The classic U-Net; `depth` max-pools (4), widths base_width * 2^i."""

    def __init__(self, num_classes: int = 2, in_chans: int = 3, base_width: int = 64, depth: int = 4,
                 norm_layer: NormLayer = "batch"):
        super().__init__()
        self.num_classes, self.depth = num_classes, depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        down = [DoubleConv(in_chans, widths[0], norm_layer)]
        down += [nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i - 1], widths[i], norm_layer))
                 for i in range(1, depth + 1)]
        self.down = nn.ModuleList(down)
        self.up = nn.ModuleList(UpBlock(widths[i], widths[i - 1], widths[i - 1], norm_layer)
                                for i in range(depth, 0, -1))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.aux_head = None

    def forward_logits(self, x: torch.Tensor, aux: bool = False):
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, 2**self.depth)
        skips = []
        for d in self.down:
            x = d(x)
            skips.append(x)  # (B, w * 2^i, H / 2^i, W / 2^i)
        x = skips.pop()
        for u in self.up:
            x = u(x, skips.pop())
        return self.head(x)[..., :h, :w], None

    def reset_classifier(self, num_classes: int) -> None:
        self.head = new_classifier(self.head, num_classes)
        self._set_classes(num_classes)


class DecoderBlock(nn.Module):
    """Bilinear upsampling to the skip's size (or to `size`), concatenation with the skip, double conv."""

    def __init__(self, in_chs: int, skip_chs: int, out_chs: int, norm_layer: NormLayer = "batch"):
        super().__init__()
        self.conv = DoubleConv(in_chs + skip_chs, out_chs, norm_layer)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        x = resize_to(x, skip.shape[-2:] if skip is not None else size)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class EncoderUNet(SegmentationModel):
    """A U-Net decoder over a cnnkit body's stages (one per stride), see the module docstring."""

    def __init__(self, body: nn.Module, num_classes: int, decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
                 norm_layer: NormLayer = "batch"):
        super().__init__()
        self.num_classes = num_classes
        stages = stages_by_stride(body.feature_info)  # finest .. coarsest
        self.encoder = Encoder(body, stages)
        skips = stages[:-1][::-1]  # coarsest skip first
        n = len(skips) + (1 if stages[0]["reduction"] > 1 else 0)
        if len(decoder_channels) < n:
            raise CnnkitError(f"decoder_channels needs {n} widths for this encoder's strides "
                              f"{[s['reduction'] for s in stages]}, got {tuple(decoder_channels)}")
        blocks, in_chs = [], stages[-1]["num_chs"]
        for i in range(n):
            skip_chs = skips[i]["num_chs"] if i < len(skips) else 0
            blocks.append(DecoderBlock(in_chs, skip_chs, decoder_channels[i], norm_layer))
            in_chs = decoder_channels[i]
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(in_chs, num_classes, 1)
        self.aux_head = None

    def forward_logits(self, x: torch.Tensor, aux: bool = False):
        feats = self.encoder(x)
        skips = feats[:-1][::-1]
        y = feats[-1]  # (B, C, H/32, W/32) for ResNet-18
        for i, block in enumerate(self.decoder):
            y = block(y, skips[i]) if i < len(skips) else block(y, size=x.shape[-2:])
        return self.head(y), None

    def reset_classifier(self, num_classes: int) -> None:
        self.head = new_classifier(self.head, num_classes)
        self._set_classes(num_classes)


def _unet(name: str, num_classes: int, in_chans: int, base_width: int = 64, depth: int = 4, encoder=None,
          backbone=None, encoder_args=None, backbone_args=None, decoder_channels=(256, 128, 64, 32, 16),
          norm_layer: NormLayer = "batch", image_size=None) -> SegmentationModel:
    enc = encoder if encoder is not None else backbone
    if enc is None:
        model = UNet(num_classes, in_chans, base_width, depth, norm_layer)
        cfg = dict(first_conv="down.0.conv1.conv", output_stride=2**depth, backbone=None, base_width=base_width,
                   notes="padded bias-free 3x3 convs + BN (the paper: unpadded, no BN); input padded to a multiple "
                         f"of {2**depth}, output cropped")
        size = image_size or (512 if base_width >= 64 else 128)
    else:
        body, bname = make_body(enc, in_chans, None, encoder_args or backbone_args)
        model = EncoderUNet(body, num_classes, decoder_channels, norm_layer)
        cfg = dict(first_conv=body_first_conv(body, "encoder.body."), backbone=bname,
                   output_stride=model.encoder.reductions[-1], decoder_channels=tuple(decoder_channels),
                   notes="U-Net decoder over the encoder's stages: bilinear upsampling to each skip, concat, "
                         "double conv; a last block to full size")
        size = image_size or 128
    model.default_cfg = segment_cfg(name, num_classes, in_chans, image_size=size, classifier="head", paper=PAPER,
                                    tv_name=None, aux=False, **cfg)
    return model


_OPTIONS = """ Keyword options: base_width, depth (max-pools, 4), norm_layer, encoder / backbone
    (a cnnkit model name or built model: a U-Net decoder over its stages instead, see unet_resnet18),
    encoder_args, decoder_channels, image_size (default_cfg only). Default 2 classes (the paper's)."""


@register_model
@with_doc("""U-Net (Ronneberger et al. 2015): widths 64 -> 1024, double 3x3 convs (padded, BN), 2x2 max-pool down,
    2x2 transposed-conv up, skip concatenation. 31,037,698 parameters for 3 input channels and 2 classes.""",
          _OPTIONS)
def unet(num_classes: int = 2, in_chans: int = 3, **kwargs) -> SegmentationModel:
    return _unet("unet", num_classes, in_chans, **kwargs)


@register_model
@with_doc("""U-Net with base width 16 (16 -> 256) for CPUs: 1,942,594 parameters for 3 input channels and 2
    classes.""", _OPTIONS)
def unet_small(num_classes: int = 2, in_chans: int = 3, **kwargs) -> SegmentationModel:
    model = _unet("unet_small", num_classes, in_chans, **{"base_width": 16, **kwargs})
    # its CPU recipe (`cnnkit train --model unet_small --data shapes`; benchmarks/segment.py): 4 epochs of
    # smaller batches than the task's defaults, nnU-Net's CE + Dice for the thin shapes; --epochs for more
    model.default_cfg["recipe"] = UNET_SMALL_RECIPE
    return model


UNET_SMALL_RECIPE = dict(epochs=4, batch_size=16, lr=3e-3, task_args={"loss": "ce_dice"})


@register_model
@with_doc("""U-Net decoder over a ResNet-18 encoder (skips at strides 2, 4, 8, 16; decoder widths 256, 128, 64, 32,
    16; a last block to full size). 14,328,421 parameters at 21 classes.""", _OPTIONS)
def unet_resnet18(num_classes: int = 2, in_chans: int = 3, **kwargs) -> SegmentationModel:
    return _unet("unet_resnet18", num_classes, in_chans, **{"encoder": "resnet18", **kwargs})
