"""Augmentation of 3-D (and 2-D) patches on the training device, on whole batches, labels moved with
the voxels: the transforms of a plan's `augmentation` block (`cnnkit plan`), each with its
probability per sample.

    rotation, scale   one affine grid per sample: rotation about z / y / x within the plan's
                      ranges (degrees; "dummy 2-D" plans rotate about z only), zoom within
                      `scale.range`; the image sampled bilinearly, the label by nearest
                      neighbour, IGNORE (255) where the grid leaves the patch
    mirror            a flip along each listed axis with probability `mirror.p`
    low_resolution    down by a factor in `zoom` along the listed axes (nearest), back up (linear)
    blur              a Gaussian of sigma in `sigma` voxels (in-plane only for dummy 2-D plans)
    noise             Gaussian noise of variance drawn in `variance`
    brightness        multiplicative, a factor in `range`
    contrast          values spread about their mean by a factor in `range`, the range kept
    gamma             on the patch rescaled to [0, 1] (inverted first with `invert_p`), then back

The image transforms change the image only. `elastic: true` is refused (nnU-Net leaves it off).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import CnnkitError, suggest

IGNORE = 255
KNOWN = ("rotation", "scale", "mirror", "dummy_2d", "noise", "blur", "brightness", "contrast", "low_resolution",
         "gamma", "elastic")


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def _hit(n: int, p: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) < float(p)


def rotation_matrix(angles: torch.Tensor, dims: int) -> torch.Tensor:
    """(B, dims, dims) rotations in affine_grid's coordinates (x, y[, z]): 2-D angles (B, 1); 3-D angles
    (B, 3) about x, y and z in turn (radians)."""
    b = angles.shape[0]
    if dims == 2:
        c, s = angles[:, 0].cos(), angles[:, 0].sin()
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], 1)
    out = torch.eye(3, device=angles.device).expand(b, 3, 3)
    for axis in range(3):
        c, s = angles[:, axis].cos(), angles[:, axis].sin()
        r = torch.eye(3, device=angles.device).repeat(b, 1, 1)
        i, j = [a for a in range(3) if a != axis]
        r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = c, -s, s, c
        out = out @ r
    return out


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, axes) -> torch.Tensor:
    """x (B, C, *S) blurred along the spatial `axes` (0-based over S) with a per-sample sigma (B,): one
    grouped 1-D convolution per axis, edges replicated."""
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    b, c = x.shape[:2]
    weight = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)[:, None]  # (B * C, 1, 2r + 1)
    out = x
    for a in axes:
        moved = out.movedim(2 + a, -1)
        shape = moved.shape
        rows = moved.reshape(b * c, -1, shape[-1]).transpose(0, 1)  # (rows, B * C, L): a group per sample x channel
        rows = F.conv1d(F.pad(rows, (radius, radius), mode="replicate"), weight, groups=b * c)
        out = rows.transpose(0, 1).reshape(shape).movedim(-1, 2 + a)
    return out


class VolumeAugment(nn.Module):
    """`aug(x, y, generator) -> (x, y)` for patches x (B, C, *S) float and labels y (B, *S) uint8."""

    def __init__(self, options: dict | None = None, dims: int = 3, axes: tuple[str, ...] | None = None):
        super().__init__()
        o = dict(options or {})
        self.active = not o.pop("none", False) and bool(o)
        unknown = [k for k in o if k not in KNOWN]
        if unknown:
            raise suggest(unknown[0], list(KNOWN), "augmentation of the plan")
        if o.get("elastic"):
            raise CnnkitError("the plan asks for elastic deformation, which cnnkit does not do (nnU-Net leaves it "
                              "off): set `elastic: false` in the plan")
        self.o, self.dims = o, dims
        self.axes = tuple(axes or (("z", "y", "x") if dims == 3 else ("y", "x")))

    def _axis(self, name) -> int:
        if isinstance(name, int):
            return name
        if name not in self.axes:
            raise CnnkitError(f"the plan's augmentation names axis {name!r}; the axes are {', '.join(self.axes)}")
        return self.axes.index(name)

    def forward(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator):
        o, b, dev = self.o, x.shape[0], x.device
        view, dims = (-1,) + (1,) * (x.ndim - 1), tuple(range(1, x.ndim))
        x, y = self._spatial(x, y, g)
        m = o.get("mirror")
        if m:
            for name in m.get("axes", self.axes):
                flip = _hit(b, m.get("p", 0.5), g, dev)
                if flip.any():
                    d = self._axis(name)
                    x = torch.where(flip.view(view), x.flip(2 + d), x)
                    y = torch.where(flip.view(view[:-1]), y.flip(1 + d), y)
        lr = o.get("low_resolution")
        if lr and (hit := _hit(b, lr["p"], g, dev)).any():
            zoom = float(_uniform(1, *lr["zoom"], g, dev))  # one factor per batch: one interpolation
            axes = [self._axis(a) for a in lr.get("axes", self.axes)]
            size = [max(1, round(n * zoom)) if i in axes else n for i, n in enumerate(x.shape[2:])]
            mode = "trilinear" if self.dims == 3 else "bilinear"
            low = F.interpolate(F.interpolate(x, size=size, mode="nearest"), size=x.shape[2:], mode=mode,
                                align_corners=False)
            x = torch.where(hit.view(view), low, x)
        bl = o.get("blur")
        if bl and (hit := _hit(b, bl["p"], g, dev)).any():
            sigma = _uniform(b, *bl["sigma"], g, dev)
            axes = range(1, self.dims) if o.get("dummy_2d") and self.dims == 3 else range(self.dims)
            x = torch.where(hit.view(view), gaussian_blur(x, sigma, list(axes)), x)
        nz = o.get("noise")
        if nz and (hit := _hit(b, nz["p"], g, dev)).any():
            std = _uniform(b, *nz["variance"], g, dev).sqrt() * hit
            x = x + std.view(view) * torch.randn(x.shape, generator=g, device=dev)
        br = o.get("brightness")
        if br and (hit := _hit(b, br["p"], g, dev)).any():
            x = torch.where(hit.view(view), x * _uniform(b, *br["range"], g, dev).view(view), x)
        lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
        ct = o.get("contrast")
        if ct and (hit := _hit(b, ct["p"], g, dev)).any():
            c = _uniform(b, *ct["range"], g, dev).view(view)
            mean = x.mean(dim=dims, keepdim=True)
            x = torch.where(hit.view(view), ((x - mean) * c + mean).clamp(lo, hi), x)
        gm = o.get("gamma")
        if gm and (hit := _hit(b, gm["p"], g, dev)).any():
            gamma = _uniform(b, *gm["range"], g, dev).view(view)
            invert = _hit(b, gm.get("invert_p", 0.0), g, dev).view(view)
            unit = ((x - lo) / (hi - lo).clamp(min=1e-6)).clamp(0, 1)
            unit = torch.where(invert, 1 - unit, unit) ** gamma
            unit = torch.where(invert, 1 - unit, unit)
            x = torch.where(hit.view(view), unit * (hi - lo) + lo, x)
        return x, y

    def _spatial(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator):
        o, b, dev, d = self.o, x.shape[0], x.device, self.dims
        rot, scl = o.get("rotation"), o.get("scale")
        r_hit = _hit(b, rot["p"], g, dev) if rot else torch.zeros(b, dtype=torch.bool, device=dev)
        s_hit = _hit(b, scl["p"], g, dev) if scl else torch.zeros(b, dtype=torch.bool, device=dev)
        if not (r_hit.any() or s_hit.any()):
            return x, y
        # affine_grid's coordinates are (x, y[, z]): rotation about x, y, z in that order
        names = ("about_x", "about_y", "about_z") if d == 3 else ("about_z",)
        if d == 3 and o.get("dummy_2d"):
            names = ("-", "-", "about_z")
        angles = torch.stack([_uniform(b, *[math.radians(v) for v in (rot or {}).get(n, (0.0, 0.0))], g, dev)
                              for n in names], 1) * r_hit[:, None]
        zoom = torch.where(s_hit, _uniform(b, *scl["range"], g, dev), 1.0) if scl else torch.ones(b, device=dev)
        theta = rotation_matrix(angles, d) / zoom.view(-1, 1, 1)  # a zoom > 1 enlarges the content
        theta = torch.cat([theta, torch.zeros(b, d, 1, device=dev)], 2)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x2 = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        shifted = y.float()[:, None] + 1  # 0 outside the patch, so it can become IGNORE
        y2 = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
        y2 = torch.where(y2 == 0, float(IGNORE + 1), y2) - 1
        moved = (r_hit | s_hit).view(-1, *[1] * (x.ndim - 1))
        return torch.where(moved, x2, x), torch.where(moved[:, 0], y2.to(y.dtype), y)


__all__ = ["VolumeAugment", "KNOWN", "rotation_matrix", "gaussian_blur"]
