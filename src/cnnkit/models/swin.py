"""Swin Transformer (Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted
Windows", ICCV 2021).

A CNN-shaped transformer: a 4 x 4 patch embedding (stride 4), then four stages at strides
4, 8, 16, 32; each stage (after the first) starts with patch merging (2x down-sampling,
channels x2) and stacks Swin blocks that attend inside 7 x 7 windows, every second block on
windows shifted by 3 (see cnnkit/nn/window_attention.py). Attention cost grows linearly
with the image area, and the output is a feature pyramid like a ResNet's.

Interface: stages take and return NCHW maps, so `forward_features` returns (B, 8C, H/32, W/32)
like any CNN here and `feature_info` modules ("stages.i") emit (B, C_i, H/r, W/r).

Departures: sizes that are not multiples of the window (or smaller than it) are handled as in
torchvision, by zero padding and dropping the shift (the paper's code shrinks the window);
`drop_path_rate` defaults to 0 (the paper trains T/S/B with 0.2/0.3/0.5: pass it for
training). `small_input=True`: patch 2 and window 4, so 32 px images give 16, 8, 4, 2 maps.
Parameter counts equal torchvision's swin_t/s/b (28,288,354 / 49,606,258 / 87,768,224).
"""
from __future__ import annotations

import re
from functools import partial
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..nn.act import ActLayer
from ..nn.patch import PatchEmbed
from ..nn.window_attention import PatchMerging, SwinBlock
from ..registry import register_model
from ._base import ClassifierHead, ClassifierModel, adapt_cfg, make_cfg
from ._tv import register_tv_converter

PAPER = "Liu et al., Swin Transformer: Hierarchical Vision Transformer using Shifted Windows, ICCV 2021"


class SwinStage(nn.Module):
    """[patch merging] -> `depth` Swin blocks alternating plain / shifted windows. NCHW in, NCHW out."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, window_size: int, downsample: bool,
                 drop_path: Sequence[float], mlp_ratio: float = 4.0, drop: float = 0.0, attn_drop: float = 0.0,
                 act_layer: ActLayer = "gelu", norm_layer: Callable[[int], nn.Module] = nn.LayerNorm):
        super().__init__()
        self.downsample = PatchMerging(in_dim, norm_layer) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio, drop,
                      attn_drop, drop_path[i], act_layer, norm_layer) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C', H', W')
        x = self.blocks(self.downsample(x.permute(0, 2, 3, 1)))  # blocks run channels-last
        return x.permute(0, 3, 1, 2)


class SwinTransformer(ClassifierModel):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, patch_size: int = 4, window_size: int = 7,
                 embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 mlp_ratio: float = 4.0, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, act_layer: ActLayer = "gelu",
                 norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-5)):
        super().__init__()
        self.num_classes = num_classes
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size, norm_layer, output_fmt="NCHW")
        n = sum(depths)
        dpr = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # per block, growing with depth
        stages, self.feature_info = [], []
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            dim = embed_dim * 2 ** i
            first = sum(depths[:i])
            stages.append(SwinStage(dim // 2 if i else dim, dim, depth, heads, window_size, i > 0,
                                    dpr[first:first + depth], mlp_ratio, drop_rate, attn_drop_rate, act_layer,
                                    norm_layer))
            self.feature_info.append(dict(num_chs=dim, reduction=patch_size * 2 ** i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = norm_layer(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, pool="avg", drop_rate=drop_rate)
        for m in self.modules():
            if isinstance(m, nn.Linear):  # N(0, 0.02), as trunc_normal_(std=0.02) whose cut (+-2) is 100 std away
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 8 * embed_dim, H/32, W/32), after the final LayerNorm (over channels)."""
        x = self.stages(self.patch_embed(x))
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _create(name: str, num_classes: int, in_chans: int, table: dict, *, small_input: bool = False,
            img_size: Optional[int] = None, patch_size: Optional[int] = None, window_size: Optional[int] = None,
            **kwargs) -> SwinTransformer:
    """Build a variant from its table row; keyword arguments may override the row (then it is no longer
    torchvision's model, and tv_name is None)."""
    same_as_tv = not (table.keys() & kwargs.keys())
    patch_size = patch_size or (2 if small_input else 4)
    window_size = window_size or (4 if small_input else 7)
    img_size = img_size or (32 if small_input else 224)  # any size works (padding); this is the nominal one
    model = SwinTransformer(num_classes, in_chans, patch_size=patch_size, window_size=window_size,
                            **{**table, **kwargs})
    tv = name if same_as_tv and (patch_size, window_size) == (4, 7) else None  # torchvision has the same builder names
    cfg = make_cfg(input_size=(in_chans, img_size, img_size), first_conv="patch_embed.proj", classifier="head.fc",
                   paper=PAPER, window_size=window_size,
                   notes="non-multiple sizes: zero padding + no shift as torchvision (paper shrinks the window); "
                         "drop_path_rate defaults to 0; small_input = patch 2, window 4")
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture=name, tv_name=tv)
    return model


# Section 3.3 of the paper (architecture variants): embed dim C, blocks per stage, heads per stage (width 32 each).
@register_model
def swin_t(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> SwinTransformer:
    """Swin-T (Liu et al. 2021): shifted windows of 7, depths 2-2-6-2, 28,288,354 parameters (= torchvision)."""
    return _create("swin_t", num_classes, in_chans,
                   dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)), **kwargs)


@register_model
def swin_s(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> SwinTransformer:
    """Swin-S: depths 2-2-18-2, 49,606,258 parameters (= torchvision)."""
    return _create("swin_s", num_classes, in_chans,
                   dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)), **kwargs)


@register_model
def swin_b(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> SwinTransformer:
    """Swin-B: width 128, depths 2-2-18-2, 87,768,224 parameters (= torchvision)."""
    return _create("swin_b", num_classes, in_chans,
                   dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)), **kwargs)


def _tv_key(key: str) -> Optional[str]:
    """torchvision SwinTransformer key -> ours; None for keys we do not store (the derived position index)."""
    if key.endswith("relative_position_index"):
        return None
    if key.startswith("features.0.0."):
        return "patch_embed.proj." + key[len("features.0.0."):]
    if key.startswith("features.0.2."):
        return "patch_embed.norm." + key[len("features.0.2."):]
    m = re.match(r"features\.(\d+)\.(.*)", key)
    if m:  # features: 0 embed, 1 stage0, 2 merge, 3 stage1, 4 merge, ...; merging opens our next stage
        idx, rest = int(m.group(1)), m.group(2)
        if idx % 2 == 0:
            return f"stages.{idx // 2}.downsample.{rest}"
        rest = rest.replace(".mlp.0.", ".mlp.fc1.").replace(".mlp.3.", ".mlp.fc2.")
        return f"stages.{idx // 2}.blocks.{rest}"
    return "head.fc." + key[len("head."):] if key.startswith("head.") else key


@register_tv_converter("swin_*")
def _convert_tv_swin(sd, model):
    out = {}
    for k, v in sd.items():
        new = _tv_key(k)
        if new is not None:
            out[new] = v
    return out
