"""Geometry, randomness and pixels of the shapes world (used by `cnnkit.data.shapes`).

Three pieces, each vectorised over a batch:
- a counter-based hash RNG: every random number is a pure function of (seed, index, stream,
  counter), so an image never depends on which other images are generated with it;
- the shape table and exact signed distances (negative inside, in pixels) for each class;
- the renderer: textured background, anti-aliased shapes composited in order, pixel noise.

Coordinates are continuous pixels: pixel (row i, column j) covers [j, j+1) x [i, i+1) and is
sampled at its centre (j + 0.5, i + 0.5); x grows to the right, y grows downwards. A pixel
belongs to an object when the signed distance at its centre is <= 0, which is exactly where
the anti-aliased coverage `clamp(0.5 - sdf, 0, 1)` reaches one half.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------
# Hash RNG (splitmix64 finaliser on uint64 counters). numpy is used because it has unsigned
# 64-bit arithmetic that wraps; every constant is a np.uint64 so numpy 1.x never casts to float.
_U = np.uint64
_GOLDEN = _U(0x9E3779B97F4A7C15)
_M1, _M2 = _U(0xBF58476D1CE4E5B9), _U(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = _U(30), _U(27), _U(31), _U(11)


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> _S30)
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def hash_keys(seed: int, index: Sequence[int] | np.ndarray, *stream: int) -> np.ndarray:
    """One uint64 key per index, a pure function of (seed, index, *stream).  # (N,)"""
    k = _mix(np.full(len(index), seed % 2**64, dtype=np.uint64) + _GOLDEN)
    k = _mix(k ^ (np.asarray(index, dtype=np.int64).astype(np.uint64) * _GOLDEN))
    for s in stream:
        k = _mix(k ^ _U((s * 0x94D049BB133111EB) % 2**64))
    return k


def uniforms(keys: np.ndarray, count: int) -> torch.Tensor:
    """`count` floats in [0, 1) per key.  # (N,) -> (N, count) float64"""
    ctr = (np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN)[None, :]
    bits = _mix(keys[:, None] + ctr) >> _S11  # 53 random bits
    return torch.from_numpy(bits.astype(np.float64) * 2.0**-53)


def normal_noise(keys: np.ndarray, count: int) -> torch.Tensor:
    """`count` zero-mean, unit-variance noise values per key.  # (N,) -> (N, count) float32

    One 64-bit hash gives four 16-bit uniforms and so two values of (u1 + u2 - 1) * sqrt(6),
    a triangular distribution: close enough to Gaussian for pixel noise, at half the hashing.
    """
    n_hash = (count + 1) // 2
    h = _mix(keys[:, None] + np.arange(n_hash, dtype=np.uint64)[None, :] * _GOLDEN)
    lanes = h.view(np.uint16).reshape(len(keys), n_hash, 4).astype(np.float32)  # (N, n_hash, 4)
    tri = (lanes[..., 0::2] + lanes[..., 1::2]) * (1.0 / 65536.0) - (65535.0 / 65536.0)
    return torch.from_numpy(tri.reshape(len(keys), 2 * n_hash)[:, :count] * math.sqrt(6.0))


# ---------------------------------------------------------------------------------------------
# Shape table. Each shape lives in a unit frame (circumradius 1, y down) in its upright pose, its
# keypoints clockwise as seen on screen. Rotations stay within half a period of the shape's
# `symmetry` either side of upright (at most +-45 deg for a square), so keypoint 0 is always the
# same part of the shape as seen in the image: the square's corner nearest to up-right, the
# triangle's or star's tip nearest to straight up, the arrow's tip.


@dataclass(frozen=True)
class ShapeDef:
    kind: str  # "poly" | "circle" | "ring"
    symmetry: int  # n-fold rotational symmetry; 0: never rotated (circle, ring)
    keypoints: torch.Tensor  # (P, 2) unit frame
    keypoint_names: Tuple[str, ...]
    vertices: torch.Tensor | None = None  # (V, 2) unit frame, "poly" only
    inner: float = 0.0  # inner radius of a ring


def _clockwise(angles_deg: Sequence[float], radii: Sequence[float] | float = 1.0) -> torch.Tensor:
    """Points at angles measured clockwise from straight up (screen), at the given radii."""
    a = torch.tensor(angles_deg, dtype=torch.float64) * (math.pi / 180)
    r = torch.as_tensor(radii, dtype=torch.float64)
    return torch.stack([r * torch.sin(a), -r * torch.cos(a)], dim=-1)


def _cross(w: float = 0.32) -> torch.Tensor:
    a = math.sqrt(1 - w * w)  # arm length that puts the outer corners on the unit circle
    quarter = [(-w, -a), (w, -a), (w, -w)]  # top arm, then turn clockwise three times
    pts = []
    for q in range(4):
        c, s = math.cos(q * math.pi / 2), math.sin(q * math.pi / 2)
        pts += [(x * c - y * s, x * s + y * c) for x, y in quarter]
    return torch.tensor(pts, dtype=torch.float64)


_AXES = _clockwise([0, 90, 180, 270])  # top, right, bottom, left
_CROSS_ARM = math.sqrt(1 - 0.32**2)
_ARROW = torch.tensor([(0, -1), (0.62, -0.22), (0.24, -0.22), (0.24, 0.96), (-0.24, 0.96),
                       (-0.24, -0.22), (-0.62, -0.22)], dtype=torch.float64)
_DIAMOND = torch.tensor([(0, -1), (0.55, 0), (0, 1), (-0.55, 0)], dtype=torch.float64)
_STAR = _clockwise([36 * i for i in range(10)], [1.0, 0.42] * 5)

_TRBL = ("top", "right", "bottom", "left")
SHAPES: Dict[str, ShapeDef] = {
    "circle": ShapeDef("circle", 0, _AXES, _TRBL),
    "square": ShapeDef("poly", 4, _clockwise([45, 135, 225, 315]),
                       ("top-right", "bottom-right", "bottom-left", "top-left"),
                       _clockwise([45, 135, 225, 315])),
    "triangle": ShapeDef("poly", 3, _clockwise([0, 120, 240]),
                         ("top", "bottom-right", "bottom-left"), _clockwise([0, 120, 240])),
    "star": ShapeDef("poly", 5, _STAR[0::2], ("tip1", "tip2", "tip3", "tip4", "tip5"), _STAR),
    "ring": ShapeDef("ring", 0, _AXES, _TRBL, inner=0.55),  # points on the outer circle
    "cross": ShapeDef("poly", 4, _AXES * _CROSS_ARM, _TRBL, _cross()),  # arm-end centres
    "diamond": ShapeDef("poly", 2, _DIAMOND, _TRBL, _DIAMOND),
    "arrow": ShapeDef("poly", 1, torch.tensor([(0, -1), (0.62, -0.22), (0, 0.96), (-0.62, -0.22)],
                                              dtype=torch.float64),
                      ("tip", "right-barb", "tail", "left-barb"), _ARROW),
}


def to_pixels(unit: torch.Tensor, center: torch.Tensor, radius: torch.Tensor,
              theta: torch.Tensor) -> torch.Tensor:
    """Unit-frame points to pixels: rotate by theta (clockwise on screen), scale, shift.

    unit (P, 2); center (N, 2); radius, theta (N,) -> (N, P, 2) in center's dtype. Computed in
    float64: trigonometry may round differently in SIMD and scalar code paths, and float64
    keeps such last-bit differences (which would depend on batch size) out of the result.
    """
    center64 = center.double()
    c, s = torch.cos(theta.double())[:, None], torch.sin(theta.double())[:, None]
    ux, uy = unit[:, 0].double()[None], unit[:, 1].double()[None]
    r = radius.double()[:, None]
    x = center64[:, 0:1] + r * (ux * c - uy * s)
    y = center64[:, 1:2] + r * (ux * s + uy * c)
    return torch.stack([x, y], dim=-1).to(center.dtype)


def polygon_sdf(verts: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Exact signed distance from points to closed polygons (negative inside, even-odd rule).

    verts (N, V, 2); px, py (M,) shared by the batch -> (N, M). All edges at once: distance to
    each segment, and whether the edge crosses the horizontal ray going right from the point.
    """
    ax, ay = verts[..., 0, None], verts[..., 1, None]  # (N, V, 1)
    ex, ey = ax.roll(-1, 1) - ax, ay.roll(-1, 1) - ay  # (N, V, 1) edge vectors
    wx, wy = px - ax, py - ay  # (N, V, M) points relative to each edge start
    t = ((wx * ex + wy * ey) / (ex.square() + ey.square())).clamp_(0, 1)
    d = ((wx - ex * t).square_() + (wy - ey * t).square_()).amin(1).sqrt_()  # (N, M)
    below = ay > py  # (N, V, M) vertex below the point's row (y grows downwards)
    straddles = below != below.roll(-1, 1)
    right = (ex * wy > ey * wx) == (ey > 0)  # the crossing lies right of the point
    inside = (straddles & right).sum(1) % 2 == 1
    return torch.where(inside, -d, d)


def shape_sdf(labels: torch.Tensor, center: torch.Tensor, radius: torch.Tensor,
              theta: torch.Tensor, px: torch.Tensor, py: torch.Tensor,
              classes: Sequence[str]) -> torch.Tensor:
    """Signed distance (pixels) of one object per batch item at shared points.

    labels (N,) int; center (N, 2); radius, theta (N,); px, py (M,) -> (N, M). Items are grouped
    by class so each group evaluates only its own shape.
    """
    out = torch.empty(labels.numel(), px.numel(), dtype=px.dtype)
    for c in labels.unique().tolist():
        sel = (labels == c).nonzero().squeeze(1)
        shape = SHAPES[classes[c]]
        cx, cy, r = center[sel, 0:1], center[sel, 1:2], radius[sel, None]
        if shape.kind == "poly":
            out[sel] = polygon_sdf(to_pixels(shape.vertices, center[sel], radius[sel], theta[sel]),
                                   px, py)
        else:
            dist = ((px - cx).square() + (py - cy).square()).sqrt()
            if shape.kind == "circle":
                out[sel] = dist - r
            else:  # ring: distance to the mid circle minus half the band width
                mid, half = r * (1 + shape.inner) / 2, r * (1 - shape.inner) / 2
                out[sel] = (dist - mid).abs() - half
    return out


# ---------------------------------------------------------------------------------------------
# Rendering

_LUMA = torch.tensor([0.299, 0.587, 0.114])


def pixel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in row-major order.  # -> px, py (size * size,) float32"""
    c = torch.arange(size, dtype=torch.float32) + 0.5
    return c.repeat(size), c.repeat_interleave(size)


def render(bg: Dict[str, torch.Tensor], objects: List[Dict[str, torch.Tensor]], size: int,
           channels: int, noise_keys: np.ndarray, classes: Sequence[str]):
    """Render N images of `size` x `size` with K objects each, drawn in list order.

    bg: per-image background tensors (see shapes._sample_background); objects: K dicts of
    per-image object tensors (see shapes._sample_objects), with the signed distances "sdf"
    (N, size * size) if already known. Returns the uint8 images
    (N, channels, size, size) and the K signed-distance maps (N, size * size).
    """
    px, py = pixel_grid(size)
    n = noise_keys.shape[0]
    # background: two colours blended by a field t in [0, 1] made of three plane waves;
    # sin(fx x + fy y + phase) = sin(fx x) cos(fy y + phase) + cos(fx x) sin(fy y + phase), so
    # the transcendental functions run on rows and columns only
    c = px[:size]  # (W,) column (and row) centres
    t = torch.full((n, size, size), 0.5)
    c = c.double()
    for w in range(bg["freq"].shape[1]):  # trigonometry in float64, as in to_pixels
        ax = bg["freq"][:, w, 0:1].double() * c  # (N, W)
        ay = bg["freq"][:, w, 1:2].double() * c + bg["phase"][:, w, None].double()  # (N, H)
        amp = bg["amp"][:, w, None]
        t += torch.sin(ax).float()[:, None, :] * (amp * torch.cos(ay).float())[:, :, None]
        t += torch.cos(ax).float()[:, None, :] * (amp * torch.sin(ay).float())[:, :, None]
    t = t.view(n, -1)
    a, b = bg["colour_a"][:, :, None], bg["colour_b"][:, :, None]  # (N, 3, 1)
    img = a + (b - a) * t[:, None]  # (N, 3, M)
    sdfs = []
    for ob in objects:
        sdf = ob["sdf"] if "sdf" in ob else shape_sdf(ob["label"], ob["center"], ob["radius"],
                                                      ob["theta"], px, py, classes)
        alpha = (0.5 - sdf).clamp_(0, 1)  # anti-aliased coverage, >= 0.5 exactly where sdf <= 0
        # flat colour plus a gentle linear shading across the object
        rel = (px - ob["center"][:, 0:1]) * ob["shade"][:, 0:1] \
            + (py - ob["center"][:, 1:2]) * ob["shade"][:, 1:2]  # (N, M)
        fg = ob["colour"][:, :, None] + (rel / ob["radius"][:, None])[:, None]
        img += alpha[:, None] * (fg - img)
        sdfs.append(sdf)
    if channels == 1:
        # an explicit weighted sum, not a matmul, so the result cannot depend on batch shape
        img = (img[:, 0] * _LUMA[0] + img[:, 1] * _LUMA[1] + img[:, 2] * _LUMA[2])[:, None]
    img += bg["noise"][:, None, None] * normal_noise(noise_keys, img[0].numel()).view_as(img)
    img = img.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
    return img.view(n, channels, size, size), sdfs
