"""Patch embedding: cut the image into P x P patches and project each to a D-dim token.

Flattening every non-overlapping P x P x C patch and applying one shared Linear(P*P*C, D) is
exactly a Conv2d with kernel P and stride P (each output position sees one patch and the
kernel is the linear layer's weight). The conv form is what ViT, Swin and torchvision use:
one fused op, no explicit unfold.

Shape math: (B, C, H, W) -> conv -> (B, D, H/P, W/P) -> N = (H/P)(W/P) tokens of width D.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import nn

from ..registry import CnnkitError


def patch_grid(img_size: int | Tuple[int, int], patch_size: int) -> Tuple[int, int]:
    """The token grid (H/P, W/P) of an image; the sides must be multiples of the patch size."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if h % patch_size or w % patch_size:
        raise CnnkitError(
            f"image size {h}x{w} is not a multiple of the patch size {patch_size}; "
            f"resize the input or pick a patch size that divides it"
        )
    return h // patch_size, w // patch_size


class PatchEmbed(nn.Module):
    """Strided-conv patch embedding with an optional norm over the embedding dim.

    output_fmt: "NLC" -> tokens (B, N, D) (ViT); "NHWC" -> (B, H/P, W/P, D);
    "NCHW" -> (B, D, H/P, W/P) (Swin's stem; the norm is still taken over D).
    """

    def __init__(
        self,
        in_chans: int = 3,
        embed_dim: int = 768,
        patch_size: int = 16,
        norm_layer: Optional[Callable[[int], nn.Module]] = None,
        output_fmt: str = "NLC",
    ):
        super().__init__()
        if output_fmt not in ("NLC", "NHWC", "NCHW"):
            raise ValueError(f"output_fmt must be NLC, NHWC or NCHW, got {output_fmt!r}")
        self.patch_size, self.embed_dim, self.output_fmt = patch_size, embed_dim, output_fmt
        self.reduction = patch_size  # stride of the token grid, for feature_info
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, H/P, W/P); a remainder smaller than P is dropped, as by any strided conv
        if self.output_fmt == "NLC":
            return self.norm(x.flatten(2).transpose(1, 2))  # (B, N, D)
        x = self.norm(x.permute(0, 2, 3, 1))  # (B, h, w, D): the norm runs over the last dim
        return x if self.output_fmt == "NHWC" else x.permute(0, 3, 1, 2)
