"""A CNN-transformer hybrid: convolutional stem -> tokens -> transformer encoder.

The idea of ViT-Hybrid (Dosovitskiy et al. 2021, ResNet features as the "patches") and of
"Early Convolutions Help Transformers See Better" (Xiao et al. 2021): instead of cutting
the image into 16 x 16 patches with one big strided conv, let a few small 3 x 3 conv stages
build local features (edges, textures: the CNN's inductive bias of locality and translation
equivariance) and down-sample; then every position of the last feature map becomes a token
and global self-attention relates them (long-range context the convolutions lack).

Design of `hybrid_vit` (small by default: 4.12 M parameters at 224 px / 1000 classes, 3.91 M at
32 px / 10 classes):
- stem: 4 stages of [ConvNormAct 3x3 stride s, ConvNormAct 3x3], widths (32, 64, 128, 256),
  strides (2, 2, 2, 2): (B, 3, H, W) -> (B, 256, H/16, W/16); then a 1x1 conv to the
  embedding width D = 192 -> (B, 192, H/16, W/16). BatchNorm + ReLU, as in a ResNet.
- tokens: the map flattened row-major (N = HW/256), a class token, learned position
  embeddings sized from `img_size`; 6 pre-norm transformer blocks, 3 heads, MLP 4D
  (the ViT in vit.py, with this stem as its patch embedding).
- head: LayerNorm, class token, Linear.
- small_input=True (32 px, CIFAR): strides (1, 2, 2, 1), i.e. 4x down-sampling, an 8 x 8
  token grid (64 tokens) with 3x3 convs seeing every pixel.

`feature_info` lists the four conv stages (NCHW maps) and then the token entry with its
"grid" (see vit.py), so CAM tools can use either the CNN stages or the transformer tokens.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from ..nn.act import ActLayer
from ..nn.conv import ConvNormAct
from ..nn.norm import NormLayer
from ..registry import register_model
from ._base import adapt_cfg, make_cfg
from .vit import VisionTransformer

PAPER = ("hybrid of Dosovitskiy et al., ViT-Hybrid, ICLR 2021 and Xiao et al., Early Convolutions Help "
         "Transformers See Better, NeurIPS 2021")


class ConvStem(nn.Module):
    """Conv stages then a 1x1 projection to the token width. (B, C, H, W) -> (B, D, H/r, W/r), r = prod(strides)."""

    def __init__(self, in_chans: int, embed_dim: int, widths: Sequence[int] = (32, 64, 128, 256),
                 strides: Sequence[int] = (2, 2, 2, 2), act_layer: ActLayer = "relu", norm_layer: NormLayer = "batch"):
        super().__init__()
        stages, prev, self.feature_info = [], in_chans, []
        for i, (w, s) in enumerate(zip(widths, strides)):
            stages.append(nn.Sequential(ConvNormAct(prev, w, 3, s, norm_layer=norm_layer, act_layer=act_layer),
                                        ConvNormAct(w, w, 3, 1, norm_layer=norm_layer, act_layer=act_layer)))
            self.feature_info.append(dict(num_chs=w, reduction=math.prod(strides[:i + 1]),
                                          module=f"patch_embed.stages.{i}"))
            prev = w
        self.stages = nn.Sequential(*stages)
        self.proj = nn.Conv2d(prev, embed_dim, 1)  # channels -> token width
        self.reduction = math.prod(strides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stages(x))


@register_model
def hybrid_vit(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, img_size: Optional[int] = None,
               widths: Sequence[int] = (32, 64, 128, 256), embed_dim: int = 192, depth: int = 6, num_heads: int = 3,
               act_layer: ActLayer = "relu", norm_layer: NormLayer = "batch", **kwargs) -> VisionTransformer:
    """Conv stem (4 stages, /16; /4 with small_input) + 6-block ViT (D 192, 3 heads). `act_layer` and
    `norm_layer` are the stem's; the transformer keeps GELU and LayerNorm. Other kwargs go to VisionTransformer."""
    if "patch_size" in kwargs:
        raise TypeError("hybrid_vit takes no patch_size: the conv stem's strides set the token stride")
    strides = (1, 2, 2, 1) if small_input else (2, 2, 2, 2)
    img_size = img_size or (32 if small_input else 224)
    stem = ConvStem(in_chans, embed_dim, widths, strides[:len(widths)], act_layer, norm_layer)
    model = VisionTransformer(num_classes, in_chans, img_size=img_size, embed_dim=embed_dim, depth=depth,
                              num_heads=num_heads, embed_layer=stem, **kwargs)
    cfg = make_cfg(input_size=(in_chans, img_size, img_size), first_conv="patch_embed.stages.0.0.conv",
                   classifier="head.fc", paper=PAPER, grid=model.grid,
                   notes="conv stem (3x3 ConvNormAct stages) replaces the patchify conv; small_input = /4 stem")
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture="hybrid_vit", tv_name=None)
    return model
