"""Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021).

The image is cut into P x P patches, each linearly embedded (a strided conv) to a D-dim token;
a learned class token is prepended, learned position embeddings are added, and L pre-norm
transformer blocks mix the tokens. The classifier reads the class token after a final
LayerNorm.

Interface (models.md): `forward_features(x)` returns the *token sequence* (B, 1 + N, D) after
the final norm, N = (H/P)(W/P), class token first; `forward_head` classifies the class token
(`pre_logits=True` returns it, (B, D)); `tokens_to_map` turns the patch tokens back into a
(B, D, H/P, W/P) map. `feature_info[-1]` carries "grid" = (H/P, W/P) and "num_prefix_tokens".
Its module is the last block's first LayerNorm: the tokens there still feed an attention
layer that the class token reads, so gradients reach every patch token (what Grad-CAM needs);
after the last block the patch tokens no longer influence the logits.

Departures from the paper, as in torchvision: the head is one Linear (the paper's tanh
pre-logits layer was only used for ImageNet-21k pre-training). When the input's token grid
differs from `img_size`'s, the position embeddings are resized bicubically on the fly (the
paper's recipe for fine-tuning at another resolution). `small_input=True`: patch 4 on 32 px
images (an 8 x 8 grid, as in ViT-for-CIFAR work) instead of patch 16 on 224 px.
`vit_base` = torchvision's vit_b_16 (86,567,656 parameters; `patch_size=32` gives vit_b_32).
"""
from __future__ import annotations

import math
import re
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.act import ActLayer
from ..nn.patch import PatchEmbed, patch_grid
from ..nn.transformer import LayerNorm6, TokenHead, TransformerBlock
from ..registry import CnnkitError, register_model
from ._base import ClassifierModel, adapt_cfg, make_cfg
from ._tv import register_tv_converter

PAPER = "Dosovitskiy et al., An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale, ICLR 2021"


def resample_pos_embed(pos: torch.Tensor, old_grid: Tuple[int, int], new_grid: Tuple[int, int]) -> torch.Tensor:
    """(1, 1 + gh*gw, D) position embeddings -> (1, 1 + h*w, D): the patch part laid on its grid and resized
    bicubically (the paper's recipe for another resolution); the class token's entry is kept."""
    cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
    patch_pos = patch_pos.reshape(1, old_grid[0], old_grid[1], -1).permute(0, 3, 1, 2)  # (1, D, gh, gw)
    patch_pos = F.interpolate(patch_pos, size=tuple(new_grid), mode="bicubic", align_corners=False)
    return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)], dim=1)


class VisionTransformer(ClassifierModel):
    """ViT over any patch embedding that maps (B, C, H, W) -> (B, D, h, w) and has `.reduction`
    (a strided conv for ViT, a CNN stem for the hybrid in hybrid.py)."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, img_size: int = 224, patch_size: int = 16,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, act_layer: ActLayer = "gelu", global_pool: str = "token",
                 norm_layer: Callable[[int], nn.Module] = LayerNorm6, embed_layer: Optional[nn.Module] = None):
        super().__init__()
        self.num_classes, self.embed_dim, self.num_prefix_tokens = num_classes, embed_dim, 1
        self.patch_embed = embed_layer if embed_layer is not None else \
            PatchEmbed(in_chans, embed_dim, patch_size, output_fmt="NCHW")
        r = self.patch_embed.reduction
        self.grid = patch_grid(img_size, r)  # (H/P, W/P) at the nominal input size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth grows with depth
        self.blocks = nn.Sequential(*[
            TransformerBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i],
                             act_layer, norm_layer) for i in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.head = TokenHead(embed_dim, num_classes, global_pool, drop_rate)
        self.feature_info = list(getattr(self.patch_embed, "feature_info", [])) + [dict(
            num_chs=embed_dim, reduction=r, module=f"blocks.{depth - 1}.norm1", grid=self.grid,
            num_prefix_tokens=1)]
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):  # N(0, 0.02): what trunc_normal_(std=0.02) gives (its cut is at +-2,
                nn.init.normal_(m.weight, std=0.02)  # i.e. 100 std), at a third of the cost on big models
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if isinstance(self.patch_embed, PatchEmbed):  # LeCun-normal patch projection, as torchvision
            w = self.patch_embed.proj.weight
            nn.init.trunc_normal_(w, std=math.sqrt(1.0 / w[0].numel()))
            nn.init.zeros_(self.patch_embed.proj.bias)

    def _pos_embed(self, grid: Tuple[int, int]) -> torch.Tensor:
        """Position embeddings (1, 1 + h*w, D) for a token grid, resized if it is not the nominal one."""
        return self.pos_embed if tuple(grid) == self.grid else resample_pos_embed(self.pos_embed, self.grid, grid)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> tokens (B, 1 + N, D) after the final norm; token 0 is the class token."""
        r = self.patch_embed.reduction
        if x.shape[-2] % r or x.shape[-1] % r:
            raise CnnkitError(f"input {tuple(x.shape[-2:])} is not a multiple of the patch size {r}; "
                              f"resize it or build the model with another img_size/patch_size")
        x = self.patch_embed(x)  # (B, D, h, w)
        grid = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B, N, D), row-major patches
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, D)
        x = self.pos_drop(x + self._pos_embed(grid))
        return self.norm(self.blocks(x))

    def tokens_to_map(self, tokens: torch.Tensor, grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Patch tokens (B, 1 + N, D) -> feature map (B, D, h, w), dropping the class token.

        `grid` defaults to the nominal grid, or to the square one when N is a square of another size."""
        patches = tokens[:, self.num_prefix_tokens:]
        B, N, D = patches.shape
        if grid is None:
            side = math.isqrt(N)
            grid = self.grid if N == self.grid[0] * self.grid[1] else (side, side) if side * side == N else None
        if grid is None or grid[0] * grid[1] != N:
            raise CnnkitError(f"cannot lay {N} patch tokens on grid {grid}; pass grid=(H/P, W/P) of the input")
        return patches.transpose(1, 2).reshape(B, D, grid[0], grid[1])


def _create(name: str, num_classes: int, in_chans: int, table: dict, *, small_input: bool = False,
            img_size: Optional[int] = None, patch_size: Optional[int] = None, **kwargs) -> VisionTransformer:
    """Build a variant from its table row; keyword arguments may override the row (then tv_name is None)."""
    same_as_tv = not (table.keys() & kwargs.keys())
    patch_size = patch_size or (4 if small_input else 16)
    img_size = img_size or (32 if small_input else 224)
    model = VisionTransformer(num_classes, in_chans, img_size=img_size, patch_size=patch_size, **{**table, **kwargs})
    tv = {("vit_base", 16): "vit_b_16", ("vit_base", 32): "vit_b_32"}.get((name, patch_size)) if same_as_tv else None
    cfg = make_cfg(input_size=(in_chans, img_size, img_size), first_conv="patch_embed.proj", classifier="head.fc",
                   paper=PAPER, patch_size=patch_size, grid=model.grid,
                   notes="one Linear head (no tanh pre-logits); position embeddings resized bicubically for "
                         "other input sizes; small_input = patch 4 at 32 px")
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture=name, tv_name=tv)
    return model


# Table 1 of the paper (Base) and of DeiT (Touvron et al. 2021: Tiny, Small): width D, layers L, heads; MLP 4D.
@register_model
def vit_tiny(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VisionTransformer:
    """ViT-Tiny/16 (Dosovitskiy et al. 2021; DeiT-Ti sizes): D 192, 12 layers, 3 heads, 5.7 M parameters."""
    return _create("vit_tiny", num_classes, in_chans, dict(embed_dim=192, depth=12, num_heads=3), **kwargs)


@register_model
def vit_small(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VisionTransformer:
    """ViT-Small/16: D 384, 12 layers, 6 heads, 22.1 M parameters."""
    return _create("vit_small", num_classes, in_chans, dict(embed_dim=384, depth=12, num_heads=6), **kwargs)


@register_model
def vit_base(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VisionTransformer:
    """ViT-Base/16: D 768, 12 layers, 12 heads, 86,567,656 parameters (= torchvision vit_b_16)."""
    return _create("vit_base", num_classes, in_chans, dict(embed_dim=768, depth=12, num_heads=12), **kwargs)


_TV_RENAMES = [  # torchvision VisionTransformer -> ours
    (r"^conv_proj\.", "patch_embed.proj."),
    (r"^class_token$", "cls_token"),
    (r"^encoder\.pos_embedding$", "pos_embed"),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.", r"blocks.\1."),
    (r"\.ln_1\.", ".norm1."), (r"\.ln_2\.", ".norm2."),
    (r"\.self_attention\.in_proj_(weight|bias)$", r".attn.qkv.\1"),  # packed q, k, v rows: same layout as ours
    (r"\.self_attention\.out_proj\.", ".attn.proj."),
    (r"\.mlp\.0\.", ".mlp.fc1."), (r"\.mlp\.3\.", ".mlp.fc2."),
    (r"^encoder\.ln\.", "norm."),
    (r"^heads\.head\.", "head.fc."),
]


def _rename(key: str, rules) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


@register_tv_converter("vit_*")
def _convert_tv_vit(sd, model):
    """Rename torchvision's keys; position embeddings of another image size are resized to the model's grid."""
    out = {_rename(k, _TV_RENAMES): v for k, v in sd.items()}
    pos = out.get("pos_embed")
    if pos is not None and pos.shape != model.pos_embed.shape and pos.shape[-1] == model.pos_embed.shape[-1]:
        side = math.isqrt(pos.shape[1] - 1)  # torchvision's grids are square
        out["pos_embed"] = resample_pos_embed(pos, (side, side), model.grid)
    return out
