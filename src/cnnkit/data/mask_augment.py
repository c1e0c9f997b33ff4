"""Batch augmentation that moves class maps with the pixels, for semantic segmentation.

On whole float batches (B, C, H, W) in [0, 1] and their uint8 masks (B, H, W) on the training
device, drawn from the epoch's generator (so resume replays them), in this order:

- hflip: mirror an image and its mask with probability p.
- scale / translate: zoom by a factor uniform in [1 - s, 1 + s] about the centre and shift by up to
  t of the side: one `affine_grid` for the batch, sampled bilinearly for the pixels (grey 0.5 from
  outside the source) and with nearest-neighbour sampling for the mask, whose pixels from outside
  the source become `IGNORE` (255): they were never labelled, so they count for nothing.
- color: brightness, contrast, saturation jitter of strength s (`data.augment.color_jitter`).

The spec is the detection one ("hflip=0.5,scale=0.25,translate=0.1,color=0.2"; `min_size` has no
meaning here and is ignored).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .augment import color_jitter
from .object_augment import ObjectAugment, ObjectAugmentConfig, parse_object_augment
from .segmentation import IGNORE


def random_affine(b: int, c: ObjectAugmentConfig, generator, device) -> torch.Tensor:
    """(B, 2, 3) `affine_grid` matrices: output pixel p (in [-1, 1]) samples the input at (p - 2t) / a."""
    a = 1 + (torch.rand(b, generator=generator, device=device) * 2 - 1) * c.scale
    t = (torch.rand(b, 2, generator=generator, device=device) * 2 - 1) * c.translate
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / a
    theta[:, :, 2] = -2 * t / a[:, None]
    return theta


def warp_masks(masks: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) class maps through `theta` with nearest sampling; outside the source -> IGNORE."""
    b, h, w = masks.shape
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    shifted = masks[:, None].float() + 1  # 0 after sampling = outside the source
    out = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
    out = out.round().long() - 1
    return torch.where(out < 0, torch.full_like(out, IGNORE), out).to(torch.uint8)


class MaskAugment(ObjectAugment):
    """`ObjectAugment`'s settings and draws, applied to class maps instead of objects."""

    def forward(self, x: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None = None):
        c, g, b, dev = self.cfg, generator, x.shape[0], x.device
        if c.hflip:
            flip = torch.rand(b, generator=g, device=dev) < c.hflip
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            masks = torch.where(flip[:, None, None], masks.flip(-1), masks)
        if c.scale or c.translate:
            theta = random_affine(b, c, g, dev)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5
            masks = warp_masks(masks, theta)
        if c.color:
            factors = [1 + (torch.rand(b, generator=g, device=dev) * 2 - 1) * c.color for _ in range(3)]
            x = color_jitter(x, *factors)
        return x.clamp_(0, 1), masks


def mask_augment(spec) -> MaskAugment:
    return MaskAugment(parse_object_augment(spec))
