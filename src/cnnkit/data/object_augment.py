"""Batch augmentation that moves boxes and masks with the pixels, for detection (`ObjectTargets`).

On whole float batches (B, C, H, W) in [0, 1] on the training device, drawn from the epoch's
generator (so resume replays them), in this order:

- hflip: mirror an image with probability p; x0' = W - x1, x1' = W - x0, masks mirrored.
- scale / translate: zoom by a factor uniform in [1 - s, 1 + s] about the centre and shift by up to
  t of the side, one bilinear `affine_grid` + `grid_sample` per batch (grey 0.5 outside the source).
  Boxes move by the same affine map and are clipped to the image; where instance masks exist they
  move with nearest sampling and each box is recomputed from its mask, so boxes stay exact.
  Objects left with less than `min_size` pixels of width or height are dropped.
- color: brightness, contrast, saturation jitter of strength s (`data.augment.color_jitter`).

A spec is "none", or keys such as "hflip=0.5,scale=0.25,translate=0.1,color=0.2".
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from ..registry import CnnkitError, suggest
from .augment import color_jitter
from .targets import ObjectTargets


@dataclass
class ObjectAugmentConfig:
    hflip: float = 0.0
    scale: float = 0.0
    translate: float = 0.0
    color: float = 0.0
    min_size: float = 2.0  # pixels: smaller boxes after a zoom-out or a shift are dropped

    def __post_init__(self):
        for name in ("hflip",):
            if not 0 <= getattr(self, name) <= 1:
                raise CnnkitError(f"augmentation {name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("scale", "translate", "color"):
            if not 0 <= getattr(self, name) < 1:
                raise CnnkitError(f"augmentation {name} is a strength in [0, 1), got {getattr(self, name)}")


def parse_object_augment(spec) -> ObjectAugmentConfig:
    if isinstance(spec, ObjectAugmentConfig):
        return spec
    if spec is None or str(spec).strip().lower() in ("", "none", "off"):
        return ObjectAugmentConfig()
    keys = [f.name for f in fields(ObjectAugmentConfig)]
    out = {}
    for part in str(spec).split(","):
        if "=" not in part:
            raise CnnkitError(f"detection augmentation expects key=value pairs such as 'hflip=0.5,scale=0.25' "
                              f"(keys: {', '.join(keys)}), got {part.strip()!r}")
        k, v = (p.strip() for p in part.split("=", 1))
        if k not in keys:
            raise suggest(k, keys, "detection augmentation")
        try:
            out[k] = float(v)
        except ValueError:
            raise CnnkitError(f"augmentation {k} must be a number, got {v!r}") from None
    return ObjectAugmentConfig(**out)


def boxes_of_masks(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, H, W) bool -> (boxes (M, 4) pixel edges of each mask, non-empty (M,) bool)."""
    m = masks.shape[0]
    if m == 0:
        return masks.new_zeros((0, 4), dtype=torch.float32), masks.new_zeros(0, dtype=torch.bool)
    h, w = masks.shape[-2:]
    rows, cols = masks.any(2), masks.any(1)  # (M, H), (M, W)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).min(1).values
    y1 = torch.where(rows, ar_h, -1).max(1).values + 1
    x0 = torch.where(cols, ar_w, w).min(1).values
    x1 = torch.where(cols, ar_w, -1).max(1).values + 1
    return torch.stack([x0, y0, x1, y1], 1).float(), rows.any(1)


class ObjectAugment(torch.nn.Module):
    def __init__(self, cfg: ObjectAugmentConfig):
        super().__init__()
        self.cfg = cfg

    @property
    def active(self) -> bool:
        c = self.cfg
        return bool(c.hflip or c.scale or c.translate or c.color)

    def extra_repr(self) -> str:
        return str(self.cfg)

    def forward(self, x: torch.Tensor, y: ObjectTargets, generator: torch.Generator | None = None):
        c, g = self.cfg, generator
        b, _, h, w = x.shape
        dev = x.device
        owner = y.image_index()
        boxes, masks = y.boxes.clone(), y.masks
        if c.hflip:
            flip = torch.rand(b, generator=g, device=dev) < c.hflip
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            f = flip[owner]
            mirrored = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
            boxes = torch.where(f[:, None], mirrored, boxes)
            if masks is not None:
                masks = torch.where(f[:, None, None], masks.flip(-1), masks)
        if c.scale or c.translate:
            a = 1 + (torch.rand(b, generator=g, device=dev) * 2 - 1) * c.scale  # zoom per image
            t = (torch.rand(b, 2, generator=g, device=dev) * 2 - 1) * c.translate  # shift, fraction of the side
            # output pixel p (normalised to [-1, 1]) samples the input at (p - 2t) / a
            theta = torch.zeros(b, 2, 3, device=dev)
            theta[:, 0, 0] = theta[:, 1, 1] = 1 / a
            theta[:, :, 2] = -2 * t / a[:, None]
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5
            # boxes: x' = a (x - W/2) + W/2 + t W
            ao, to = a[owner][:, None], t[owner]
            centre = torch.tensor([w / 2, h / 2, w / 2, h / 2], device=dev)
            shift = torch.stack([to[:, 0] * w, to[:, 1] * h, to[:, 0] * w, to[:, 1] * h], 1)
            boxes = (boxes - centre) * ao + centre + shift
            boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                                 boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], 1)
            if masks is not None and len(masks):
                mgrid = F.affine_grid(theta[owner], [len(masks), 1, h, w], align_corners=False)
                masks = F.grid_sample(masks[:, None].float(), mgrid, mode="nearest", align_corners=False)[:, 0] > 0.5
                mboxes, nonempty = boxes_of_masks(masks)
                boxes = torch.where(nonempty[:, None], mboxes, torch.zeros_like(mboxes))
        if c.color:
            s = c.color
            factors = [1 + (torch.rand(b, generator=g, device=dev) * 2 - 1) * s for _ in range(3)]
            x = color_jitter(x, *factors)
        y = y.with_(boxes=boxes, masks=masks)
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh >= c.min_size).all(1)
        if not bool(keep.all()):
            y = y.keep(keep)
        return x.clamp_(0, 1), y
