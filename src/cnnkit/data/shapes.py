"""The shapes world: procedural images for every task, generated on the fly, no files.

Each image is a pure function of (seed, index): the same pair always gives the same pixels and
targets, whatever batch it is generated in. An image is a textured background (flat, gradient,
low-frequency blobs or stripes) with K anti-aliased shapes of random class, size, position,
rotation and colour drawn over it in order, plus pixel noise. Every shape's luminance differs
from the background's by at least `MIN_CONTRAST` (before texture, shading and noise), so the
1-channel version (the luminance of the RGB one) keeps the contrast too.

- `make_classification`: one shape per image (diameter 45-90 % of the side), vectorised over
  the batch: 10k 32x32 RGB images in ~1.3 s on one busy CPU core.
- `render_scene` / `make_scenes`: 1-4 shapes per image with exact targets for detection,
  instance/semantic segmentation, pose and localisation scoring (`Scene`), ~80 scenes/s.

Rotation: shapes are turned by up to +-`ROTATION` (20) degrees from upright by default. With
it the guide's small CNN (three conv-BN-ReLU stages, global average pool, Adam 1e-3, batch 64)
reaches ~97 % in 3 epochs of 10k images (~1 CPU minute); with `rotation=180` (any angle) it
needs many more epochs (~74 % after 6), a lesson in what rotation invariance costs.

Targets follow the pixels exactly: a pixel belongs to a shape when its centre lies inside the
shape (where the anti-aliased coverage is >= 1/2); later shapes hide earlier ones, and masks,
boxes, the semantic map and keypoint visibility all describe what is left visible. Keypoints
(`KEYPOINT_NAMES`) are vertices or extremities listed clockwise; keypoint 0 is always the same
visible part of the shape (rotations stay within half a symmetry period).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch

from ..registry import CnnkitError
from .shapes_geometry import (SHAPES, hash_keys, pixel_grid, render, shape_sdf, to_pixels,
                              uniforms)

SHAPE_CLASSES: Tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross",
                                  "diamond", "arrow")
KEYPOINT_NAMES: Dict[str, Tuple[str, ...]] = {c: SHAPES[c].keypoint_names for c in SHAPE_CLASSES}
KEYPOINTS_PER_CLASS: Tuple[int, ...] = tuple(len(SHAPES[c].keypoints) for c in SHAPE_CLASSES)
NUM_KEYPOINTS: int = max(KEYPOINTS_PER_CLASS)  # P: keypoints per object, padded
MIN_CONTRAST = 0.35  # minimum |luminance(shape) - luminance(background)|, on a 0-1 scale

ROTATION = 20.0  # default: shapes turned by up to +-20 deg from upright (180: any angle)
CLASSIFICATION_SCALE = (0.45, 0.90)  # shape diameter / image side
SCENE_SCALE = (0.20, 0.45)
MIN_DIAMETER = 10.0  # pixels, where the image is large enough: below this classes blur together

# hash streams: each kind of random draw has its own, so adding one never shifts another
_BG, _OBJ, _LABEL, _NOISE, _SCENE = 1, 2, 3, 4, 5
_N_BG, _N_OBJ = 22, 12


@dataclass
class Scene:
    """One multi-object image and its targets; K objects in drawing order (last on top)."""

    image: torch.Tensor  # (C, H, W) uint8
    labels: torch.Tensor  # (K,) int64 index into SHAPE_CLASSES
    boxes: torch.Tensor  # (K, 4) float32 x0, y0, x1, y1: pixel edges of the visible mask
    masks: torch.Tensor  # (K, H, W) bool visible pixels of each object (disjoint)
    semantic: torch.Tensor  # (H, W) int64, 0 background, label + 1 for objects
    keypoints: torch.Tensor  # (K, P, 3) float32 x, y, visibility (2 seen, 1 hidden, 0 padding)


# ---------------------------------------------------------------------------------------------
# parameter sampling: uniforms (N, count) -> per-image tensors, vectorised over the batch

_LUMA64 = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)


def _colour(lum: torch.Tensor, rgb: torch.Tensor, sat: torch.Tensor) -> torch.Tensor:
    """An RGB colour of exactly luminance `lum`: grey plus a random hue, as saturated as `sat`
    (fraction of the most the [0, 1] cube allows).  # (N,), (N, 3), (N,) -> (N, 3)"""
    d = rgb - (rgb @ _LUMA64)[:, None]  # a direction of zero luminance
    lum = lum[:, None]
    room = torch.where(d > 0, (1 - lum) / d, torch.where(d < 0, lum / -d, torch.inf))
    return lum + (sat * room.amin(1))[:, None] * d


def _sample_background(u: torch.Tensor, size: int) -> dict:
    """u (N, 22) -> background colours, texture waves, noise level, base luminance."""
    lum = u[:, 0]
    col_a = _colour((lum + 0.16 * (u[:, 1] - 0.5)).clamp(0, 1), u[:, 2:5], 0.8 * u[:, 5])
    col_b = _colour((lum + 0.16 * (u[:, 6] - 0.5)).clamp(0, 1), u[:, 7:10], u[:, 10])
    kind = (u[:, 11] * 4).long()[:, None]  # 0 flat, 1 gradient, 2 blobs, 3 stripes
    w = u[:, 13:22].view(-1, 3, 3)  # per wave: period, direction, phase
    gradient = size * (2.0 + 2.0 * w[..., 0])
    blobs = size * (0.35 + 0.6 * w[..., 0])
    stripes = (size * (0.1 + 0.15 * w[..., 0])).clamp(min=3.0)
    period = torch.where(kind == 1, gradient, torch.where(kind == 2, blobs, stripes))
    first = torch.tensor([1.0, 0.0, 0.0], dtype=u.dtype)
    amp = torch.where(kind == 2, torch.full_like(period, 0.5 / 3), 0.5 * first)
    amp = torch.where(kind == 0, 0.0, amp)
    ang = 2 * math.pi * w[..., 1]
    freq = torch.stack([torch.cos(ang), torch.sin(ang)], -1) * (2 * math.pi / period)[..., None]
    return dict(lum=lum, colour_a=col_a.float(), colour_b=col_b.float(), freq=freq.float(),
                amp=amp.float(), phase=(2 * math.pi * w[..., 2]).float(),
                noise=(0.004 + 0.046 * u[:, 12]).float())


def _sample_objects(u: torch.Tensor, labels: torch.Tensor, bg_lum: torch.Tensor, size: int,
                    scale: Tuple[float, float], rotation: float) -> dict:
    """u (N, 12) -> one object per image: class, centre, radius, rotation, colour, shading."""
    lo, hi = scale
    diam = size * (lo + (hi - lo) * u[:, 0])
    diam = diam.clamp(min=min(MIN_DIAMETER, 0.9 * size), max=size)
    r = diam / 2
    center = r[:, None] + (size - diam)[:, None] * u[:, 1:3]
    # rotation: uniform within +-rotation degrees of upright, and within half a symmetry period
    sym = torch.tensor([SHAPES[c].symmetry for c in SHAPE_CLASSES], dtype=u.dtype)[labels]
    half = torch.where(sym > 0, math.pi / sym.clamp(min=1), 0.0).clamp(max=math.radians(rotation))
    theta = (2 * u[:, 3] - 1) * half
    # luminance uniform over [0, 1] minus a band of +-MIN_CONTRAST around the background's
    below = (bg_lum - MIN_CONTRAST).clamp(min=0)
    above = (1 - bg_lum - MIN_CONTRAST).clamp(min=0)
    x = u[:, 4] * (below + above)
    lum = torch.where(x < below, x, x - below + bg_lum + MIN_CONTRAST)
    colour = _colour(lum, u[:, 5:8], 0.3 + 0.7 * u[:, 8])
    shade_amp, shade_ang = 0.12 * (u[:, 9] - 0.5), 2 * math.pi * u[:, 10]
    shade = shade_amp[:, None] * torch.stack([torch.cos(shade_ang), torch.sin(shade_ang)], -1)
    return dict(label=labels, center=center.float(), radius=r.float(), theta=theta.float(),
                colour=colour.float(), lum=lum, shade=shade.float())


@contextmanager
def _one_thread():
    """Generate on one intra-op thread: the work tensors are small (~1 MB), so extra threads
    gain little and, on a busy CPU, their synchronisation made generation 10x slower. Use
    DataLoader workers to spread generation over cores. Restores the thread count after."""
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


def _check(n: int, size: int, channels: int, offset: int, rotation: float) -> None:
    if not 0 <= rotation <= 180:
        raise CnnkitError(f"shapes: rotation is the largest turn in degrees, 0 to 180, "
                          f"got {rotation}")
    if n < 0 or offset < 0:
        raise CnnkitError(f"shapes: n and offset must be >= 0, got n={n}, offset={offset}")
    if size < 8:
        raise CnnkitError(f"shapes: image size must be >= 8 pixels, got {size}")
    if channels not in (1, 3):
        raise CnnkitError(f"shapes: channels must be 1 (grey) or 3 (RGB), got {channels}")


def _balanced_labels(seed: int, index: np.ndarray) -> torch.Tensor:
    """Labels shuffled within each aligned block of len(SHAPE_CLASSES) indices, so any run of
    whole blocks is exactly balanced and the order still looks random.  # (N,) -> (N,) int64"""
    k = len(SHAPE_CLASSES)
    perm = uniforms(hash_keys(seed, index // k, _LABEL), k).argsort(dim=1)  # (N, k)
    return perm.gather(1, torch.from_numpy(index % k)[:, None]).squeeze(1)


def make_classification(n: int, seed: int = 0, size: int = 32, channels: int = 3,
                        offset: int = 0, rotation: float = ROTATION
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """`n` single-shape images and their class labels; image i is the one for (seed, offset + i).

    Returns images (n, channels, size, size) uint8 and labels (n,) int64 into SHAPE_CLASSES.
    Labels are balanced: every aligned block of 8 indices (0-7, 8-15, ...) holds each class
    once, in a seeded order. `rotation`: the largest turn from upright, in degrees.
    """
    _check(n, size, channels, offset, rotation)
    index = np.arange(offset, offset + n, dtype=np.int64)
    labels = _balanced_labels(seed, index)
    images = torch.empty(n, channels, size, size, dtype=torch.uint8)
    chunk = max(1, 2**18 // (size * size))  # images per pass: keeps the work maps in cache
    with _one_thread():
        for s in range(0, n, chunk):
            idx = index[s:s + chunk]
            bg = _sample_background(uniforms(hash_keys(seed, idx, _BG), _N_BG), size)
            ob = _sample_objects(uniforms(hash_keys(seed, idx, _OBJ), _N_OBJ),
                                 labels[s:s + chunk], bg["lum"], size, CLASSIFICATION_SCALE,
                                 rotation)
            images[s:s + chunk] = render(bg, [ob], size, channels, hash_keys(seed, idx, _NOISE),
                                         SHAPE_CLASSES)[0]
    return images, labels


# ---------------------------------------------------------------------------------------------
# scenes

_TRIES, _SHRINK_EVERY = 64, 16  # placement tries per object; sizes shrink 15 % every 16
_MIN_VISIBLE = 0.5  # every object keeps at least half of its own pixels visible
_OBJ_CONTRAST = 0.2  # luminance gap between touching objects


def _object_range(num_objects) -> Tuple[int, int]:
    lo, hi = (num_objects, num_objects) if isinstance(num_objects, int) else tuple(num_objects)
    if not 1 <= lo <= hi:
        raise CnnkitError(f"shapes: num_objects must be an int >= 1 or a (min, max) pair with "
                          f"1 <= min <= max, got {num_objects!r}")
    return lo, hi


def render_scene(seed: int, index: int, size: int = 64, channels: int = 3,
                 num_objects: int | Tuple[int, int] = (1, 4),
                 rotation: float = ROTATION) -> Scene:
    """The scene for (seed, index): K shapes, K drawn uniformly from `num_objects` (inclusive).

    Shapes are placed one by one (a fixed sequence of hashed tries, so still deterministic) so
    that each keeps >= 50 % of its pixels visible, lies wholly inside the image, and differs in
    luminance by >= 0.2 from any shape it touches. If a shape finds no place in 64 tries (only
    with many objects on a small image) the scene holds fewer objects.
    """
    _check(1, size, channels, index, rotation)
    with _one_thread():
        return _render_scene(seed, index, size, channels, _object_range(num_objects), rotation)


def _render_scene(seed: int, index: int, size: int, channels: int,
                  num_objects: Tuple[int, int], rotation: float) -> Scene:
    lo, hi = num_objects
    idx = np.array([index], dtype=np.int64)
    bg = _sample_background(uniforms(hash_keys(seed, idx, _SCENE, 0), _N_BG), size)
    k = lo + min(int(uniforms(hash_keys(seed, idx, _SCENE, 1), 1)[0, 0] * (hi - lo + 1)), hi - lo)
    px, py = pixel_grid(size)
    objects: List[dict] = []
    visible: List[torch.Tensor] = []  # (M,) bool per placed object
    areas: List[int] = []
    n_cls = len(SHAPE_CLASSES)
    for j in range(k):
        # all tries of object j are drawn at once; sizes shrink 15 % every 16 failed tries
        u = uniforms(hash_keys(seed, idx, _SCENE, 2, j), _TRIES * (_N_OBJ + 1)).view(_TRIES, -1)
        labels = (u[:, -1] * n_cls).long().clamp(max=n_cls - 1)
        shrink = 0.85 ** (torch.arange(_TRIES, dtype=u.dtype) // _SHRINK_EVERY)
        u[:, 0] = (SCENE_SCALE[0] + (SCENE_SCALE[1] - SCENE_SCALE[0]) * u[:, 0]) * shrink
        tries = _sample_objects(u[:, :_N_OBJ], labels, bg["lum"].expand(_TRIES), size, (0, 1),
                                rotation)
        for t in range(_TRIES):
            ob = {key: v[t:t + 1] for key, v in tries.items()}
            ob["sdf"] = shape_sdf(ob["label"], ob["center"], ob["radius"], ob["theta"], px, py,
                                  SHAPE_CLASSES)  # (1, M)
            inside = ob["sdf"][0] <= 0
            if _fits(ob, inside, objects, visible, areas):
                objects.append(ob)
                visible = [v & ~inside for v in visible] + [inside]
                areas.append(int(inside.sum()))
                break
    image, sdfs = render(bg, objects, size, channels, hash_keys(seed, idx, _NOISE), SHAPE_CLASSES)
    return _targets(image[0], objects, sdfs, size)


def _fits(ob: dict, inside: torch.Tensor, objects: List[dict], visible: List[torch.Tensor],
          areas: List[int]) -> bool:
    """May `ob` (pixels `inside`, (M,) bool) go on top of the placed `objects`?"""
    if int(inside.sum()) < 4:
        return False
    for other, vis, area in zip(objects, visible, areas):
        gap = float((ob["center"] - other["center"]).norm() - ob["radius"] - other["radius"])
        if gap >= 1.5:  # bounding circles apart: neither hides nor touches the other
            continue
        if abs(float(ob["lum"] - other["lum"])) < _OBJ_CONTRAST:
            return False
        if int((vis & ~inside).sum()) < max(_MIN_VISIBLE * area, 4):
            return False
    return True


def _targets(image: torch.Tensor, objects: List[dict], sdfs: List[torch.Tensor],
             size: int) -> Scene:
    """Visible masks, semantic map, tight boxes and keypoints from the placed objects."""
    k = len(objects)
    labels = torch.cat([o["label"] for o in objects]) if k else torch.zeros(0, dtype=torch.long)
    inside = torch.cat(sdfs).view(k, size, size) <= 0 if k else torch.zeros(0, size, size,
                                                                             dtype=torch.bool)
    # an object is visible where it is inside and no later object is: reverse cumulative "or"
    later = torch.zeros(size, size, dtype=torch.bool)
    masks = torch.empty_like(inside)
    semantic = torch.zeros(size, size, dtype=torch.long)
    for j in range(k - 1, -1, -1):
        masks[j] = inside[j] & ~later
        semantic[masks[j]] = int(labels[j]) + 1
        later |= inside[j]
    boxes = torch.zeros(k, 4)
    for j in range(k):
        ys, xs = masks[j].nonzero(as_tuple=True)
        boxes[j] = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
    keypoints = torch.zeros(k, NUM_KEYPOINTS, 3)
    for j, o in enumerate(objects):
        pts = to_pixels(SHAPES[SHAPE_CLASSES[int(o["label"])]].keypoints, o["center"], o["radius"],
                        o["theta"])[0]  # (P_c, 2)
        hidden = torch.zeros(len(pts), dtype=torch.bool)
        for later_ob in objects[j + 1:]:
            hidden |= shape_sdf(later_ob["label"], later_ob["center"], later_ob["radius"],
                                later_ob["theta"], pts[:, 0], pts[:, 1], SHAPE_CLASSES)[0] <= 0
        keypoints[j, :len(pts), :2] = pts
        keypoints[j, :len(pts), 2] = torch.where(hidden, 1.0, 2.0)
    return Scene(image=image, labels=labels, boxes=boxes, masks=masks, semantic=semantic,
                 keypoints=keypoints)


def make_scenes(n: int, seed: int = 0, size: int = 64, channels: int = 3,
                num_objects: int | Tuple[int, int] = (1, 4), offset: int = 0,
                rotation: float = ROTATION) -> List[Scene]:
    """Scenes for (seed, offset + i), i < n. See `render_scene`."""
    _check(n, size, channels, offset, rotation)
    lo_hi = _object_range(num_objects)
    with _one_thread():
        return [_render_scene(seed, offset + i, size, channels, lo_hi, rotation)
                for i in range(n)]
