"""Multi-object scenes of the shapes world, generated fast: batches for detection and instance
segmentation, with exact per-object targets as an `ObjectTargets`.

`make_scene_batch` draws the same kind of picture as `shapes.render_scene` (textured background,
1-4 anti-aliased shapes of `SCENE_SCALE` diameters, each at least `MIN_CONTRAST` from the
background in luminance, shading, pixel noise) but vectorised over the batch one object slot at
a time: slot k of every image is placed, tested and drawn together, and each shape's signed
distance is evaluated only in a square window around it (its bounding circle plus a pixel),
not over the whole image. The scenes are not the same pictures as `render_scene`'s (a separate
hash stream and a different placement rule); like them, scene i is a pure function of
(seed, offset + i), whatever batch it is generated in.

Placement, per slot: 8 candidate poses per image (sizes shrinking 10 % every two tries) are
screened by their bounding circles against the shapes already placed (a shape touching another
must differ from it by >= 0.2 in luminance; centres far enough apart that the new shape cannot
cover most of the old one); the first candidate that passes is rasterised, and then kept only
if, counted exactly on the pixels, it has >= `MIN_PIXELS` pixels and every shape under it keeps
>= `MIN_VISIBLE` (40 %) of its pixels and >= `MIN_PIXELS` of them. A shape that fails is not
drawn at all (never a half-hidden fragment with no target), so an image may hold fewer shapes
than drawn for it; slot 0 is always kept, so every image holds >= 1 object.

Targets (exact, from the same signed distances that drew the pixels; a pixel belongs to a shape
when the distance at its centre is <= 0, as in `shapes`):
    boxes      x0, y0, x1, y1 pixel edges of the visible mask (the mask's exact bounding box)
    labels     index into `SHAPE_CLASSES`
    masks      visible pixels, bool, disjoint (later shapes hide earlier ones)
    keypoints  (K, NUM_KEYPOINTS, 3) as in `shapes.Scene`: x, y, visibility 2 seen / 1 hidden by
               a later shape (exact point-in-shape test) / 0 padding

Speed (`python benchmarks/scenes.py`: 64 px, 3 channels, 1-4 objects, 2.46 per scene, one
thread, median of 5 runs of 4,096 scenes): 2,890 scenes/s (runs 2,670-3,000) on the 2-core AMD
EPYC here, torch 2.14, measured while other jobs were running (1-minute load average 4 on the 2
cores); 3,050 at load 1.2; 3,190 with 1 channel. Time goes to the polygon distances (~20 %),
the pixel noise (~12 %) and the window gathers and scatters.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch

from ..registry import CnnkitError
from .shapes import (MIN_CONTRAST, MIN_DIAMETER, NUM_KEYPOINTS, ROTATION, SCENE_SCALE,  # noqa: F401
                     SHAPE_CLASSES, _check, _object_range, _one_thread, _sample_background,
                     _sample_objects)
from .shapes_geometry import SHAPES, hash_keys, normal_noise, polygon_sdf, uniforms
from .targets import ObjectTargets

MIN_PIXELS = 12  # a shape keeps at least this many visible pixels ...
MIN_VISIBLE = 0.4  # ... and at least this fraction of its own pixels
OBJ_CONTRAST = 0.2  # luminance gap between touching shapes

# hash streams: shapes.py uses 1-5; sub-streams below: background, count, slots, noise
_STREAM = 6
_N_BG, _N_OBJ = 22, 12
_TRIES = 8
_MAX_OBJECTS = 100  # the pixel-owner map is int8
_CHUNK_PIXELS = 2**19  # images per pass x pixels per image: keeps the work maps in cache

_LUMA = (0.299, 0.587, 0.114)
_N_CLS = len(SHAPE_CLASSES)


def _keypoint_table() -> Tuple[torch.Tensor, torch.Tensor]:
    """Unit-frame keypoints of every class, padded: (C, P, 2) float64 and (C,) counts."""
    table = torch.zeros(_N_CLS, NUM_KEYPOINTS, 2, dtype=torch.float64)
    count = torch.zeros(_N_CLS, dtype=torch.long)
    for c, name in enumerate(SHAPE_CLASSES):
        pts = SHAPES[name].keypoints
        table[c, :len(pts)] = pts
        count[c] = len(pts)
    return table, count


_KP_UNIT, _KP_COUNT = _keypoint_table()


def _window(size: int) -> int:
    """Side of the square window that holds any scene shape's anti-aliased pixels."""
    diam = max(SCENE_SCALE[1] * size, min(MIN_DIAMETER, 0.9 * size))
    return min(size, math.ceil(diam) + 3)


def _sdf(label: torch.Tensor, center: torch.Tensor, radius: torch.Tensor, theta: torch.Tensor,
         px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Signed distance of object m at its own points.  # (m,), (m, 2), (m,), (m,), (m, Q) -> (m, Q)

    Like `shape_sdf`, but every object has its own points (a window around it), not shared ones.
    """
    out = torch.empty_like(px)
    for c in label.unique().tolist():
        sel = (label == c).nonzero().squeeze(1)
        shape = SHAPES[SHAPE_CLASSES[c]]
        x, y = px[sel], py[sel]
        if shape.kind == "poly":
            verts = _rotate(shape.vertices[None], center[sel], radius[sel], theta[sel])
            out[sel] = polygon_sdf(verts, x[:, None], y[:, None])
        else:
            dist = ((x - center[sel, 0:1]).square_() + (y - center[sel, 1:2]).square_()).sqrt_()
            r = radius[sel, None]
            if shape.kind == "circle":
                out[sel] = dist - r
            else:  # ring: distance to the mid circle minus half the band width
                out[sel] = (dist - r * (1 + shape.inner) / 2).abs_() - r * (1 - shape.inner) / 2
    return out


def _rotate(unit: torch.Tensor, center: torch.Tensor, radius: torch.Tensor,
            theta: torch.Tensor) -> torch.Tensor:
    """Unit-frame points to pixels, in float64 (as `to_pixels`), per object.

    unit (1 or m, P, 2); center (m, 2); radius, theta (m,) -> (m, P, 2) float32."""
    c, s = torch.cos(theta.double())[:, None], torch.sin(theta.double())[:, None]
    ux, uy = unit[..., 0].double(), unit[..., 1].double()
    r = radius.double()[:, None]
    x = center[:, 0:1].double() + r * (ux * c - uy * s)
    y = center[:, 1:2].double() + r * (ux * s + uy * c)
    return torch.stack([x, y], dim=-1).float()


def _background(bg: dict, size: int) -> torch.Tensor:
    """The textured backgrounds, as `shapes_geometry.render` paints them.  # -> (N, 3, size*size)"""
    n = bg["lum"].shape[0]
    c = torch.arange(size, dtype=torch.float64) + 0.5
    t = torch.full((n, size, size), 0.5)
    for w in range(bg["freq"].shape[1]):
        ax = bg["freq"][:, w, 0:1].double() * c  # (N, W)
        ay = bg["freq"][:, w, 1:2].double() * c + bg["phase"][:, w, None].double()  # (N, H)
        amp = bg["amp"][:, w, None]
        t += torch.sin(ax).float()[:, None, :] * (amp * torch.cos(ay).float())[:, :, None]
        t += torch.cos(ax).float()[:, None, :] * (amp * torch.sin(ay).float())[:, :, None]
    a, b = bg["colour_a"][:, :, None], bg["colour_b"][:, :, None]
    return a + (b - a) * t.view(n, 1, -1)


def make_scene_batch(n: int, seed: int = 0, size: int = 64, channels: int = 3, offset: int = 0,
                     num_objects: int | Tuple[int, int] = (1, 4), rotation: float = ROTATION
                     ) -> Tuple[torch.Tensor, ObjectTargets]:
    """`n` scenes; scene i is the one for (seed, offset + i), whatever `n` and `offset` are.

    Returns images (n, channels, size, size) uint8 and their `ObjectTargets` (boxes, labels,
    masks (M, size, size), keypoints (M, NUM_KEYPOINTS, 3)). Each image draws its number of
    shapes uniformly from `num_objects` (an int, or an inclusive (min, max) pair); a shape that
    finds no place that keeps everything visible enough is left out (see the module docstring),
    so an image holds between 1 and max objects. `rotation`: the largest turn from upright, in
    degrees (180: any angle).
    """
    _check(n, size, channels, offset, rotation)
    lo, hi = _object_range(num_objects)
    if hi > _MAX_OBJECTS:
        raise CnnkitError(f"scenes: at most {_MAX_OBJECTS} objects per image, got num_objects={num_objects!r}")
    index = np.arange(offset, offset + n, dtype=np.int64)
    images = torch.empty(n, channels, size, size, dtype=torch.uint8)
    chunk = max(1, _CHUNK_PIXELS // (size * size))
    parts = []
    with _one_thread():
        for s in range(0, n, chunk):
            img, tg, _ = _chunk(seed, index[s:s + chunk], size, channels, lo, hi, rotation)
            images[s:s + chunk] = img
            parts.append(tg)
    if not parts:
        return images, ObjectTargets(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                                     torch.zeros(1, dtype=torch.long),
                                     torch.zeros(0, size, size, dtype=torch.bool),
                                     torch.zeros(0, NUM_KEYPOINTS, 3))
    return images, (parts[0] if len(parts) == 1 else ObjectTargets.cat(parts))


def _chunk(seed: int, idx: np.ndarray, size: int, channels: int, lo: int, hi: int,
           rotation: float) -> Tuple[torch.Tensor, ObjectTargets, torch.Tensor]:
    """Scenes of indices `idx`: images, targets and each object's visible fraction of its own
    pixels (M,), the last for tests."""
    n, hw, P, T = len(idx), size * size, NUM_KEYPOINTS, _TRIES
    bg = _sample_background(uniforms(hash_keys(seed, idx, _STREAM, 0), _N_BG), size)
    want = lo + (uniforms(hash_keys(seed, idx, _STREAM, 1), 1)[:, 0] * (hi - lo + 1)).long()
    want = want.clamp(max=hi)
    img = _background(bg, size)  # (n, 3, hw) float32
    img_flat = img.view(-1)

    # per image and slot: what is placed so far
    own = torch.full((n, hw), -1, dtype=torch.int8)  # the slot of the top shape at each pixel
    own_flat = own.view(-1)
    placed = torch.zeros(n, hi, dtype=torch.bool)
    area = torch.zeros(n, hi, dtype=torch.long)  # the shape's own pixels
    vis = torch.zeros(n, hi, dtype=torch.long)  # of which still visible
    centre = torch.zeros(n, hi, 2)
    radius = torch.zeros(n, hi)
    lum = torch.zeros(n, hi, dtype=torch.float64)
    labels = torch.zeros(n, hi, dtype=torch.long)
    kp = torch.zeros(n, hi, P, 3)

    S = _window(size)
    wx = torch.arange(S).repeat(S)  # window pixel offsets, row-major
    wy = torch.arange(S).repeat_interleave(S)
    shrink = (0.9 ** (torch.arange(T, dtype=torch.float64) // 2)).repeat(n)
    bg_lum = bg["lum"].repeat_interleave(T)

    for j in range(hi):
        # -- T candidates per image, screened by bounding circles
        u = uniforms(hash_keys(seed, idx, _STREAM, 2, j), T * (_N_OBJ + 1)).view(n * T, -1)
        lab = (u[:, -1] * _N_CLS).long().clamp(max=_N_CLS - 1)
        u[:, 0] = (SCENE_SCALE[0] + (SCENE_SCALE[1] - SCENE_SCALE[0]) * u[:, 0]) * shrink
        cand = _sample_objects(u[:, :_N_OBJ], lab, bg_lum, size, (0, 1), rotation)
        ok = (j < want)[:, None].expand(n, T)
        if j:
            c, r = cand["center"].view(n, T, 1, 2), cand["radius"].view(n, T, 1)
            rp, cp = radius[:, None, :j], centre[:, None, :j]
            d = ((c[..., 0] - cp[..., 0]).square() + (c[..., 1] - cp[..., 1]).square()).sqrt()
            near = d - r - rp < 1.5
            contrast = (cand["lum"].view(n, T, 1) - lum[:, None, :j]).abs() >= OBJ_CONTRAST
            apart = d >= torch.maximum(0.6 * r, 0.45 * (r + rp))
            ok = ok & (~placed[:, None, :j] | ~near | (contrast & apart)).all(-1)
        sel = ok.any(1).nonzero().squeeze(1)
        if not len(sel):
            continue
        rows = sel * T + ok[sel].int().argmax(1)  # each image's first good candidate
        ob = {key: v[rows] for key, v in cand.items()}
        m = len(sel)

        # -- rasterise in a window around each shape, plus the earlier shapes' keypoints
        cx, cy, rad = ob["center"][:, 0], ob["center"][:, 1], ob["radius"]
        x0 = (cx - rad - 0.5).floor().long().clamp(0, size - S)
        y0 = (cy - rad - 0.5).floor().long().clamp(0, size - S)
        gx, gy = x0[:, None] + wx, y0[:, None] + wy  # (m, S*S) pixel columns and rows
        px, py = gx.float() + 0.5, gy.float() + 0.5
        if j:
            px = torch.cat([px, kp[sel, :j, :, 0].reshape(m, -1)], 1)
            py = torch.cat([py, kp[sel, :j, :, 1].reshape(m, -1)], 1)
        sdf_all = _sdf(ob["label"], ob["center"], rad, ob["theta"], px, py)
        sdf = sdf_all[:, :S * S]
        inside = sdf <= 0
        pix = sel[:, None] * hw + gy * size + gx  # (m, S*S) index into own.view(-1)
        own_w = own_flat.take(pix)
        n_in = inside.sum(1)

        # -- exact test: enough pixels of its own, and every shape under it stays visible enough
        accept = n_in >= MIN_PIXELS
        if j:
            key = (torch.arange(m)[:, None] * (j + 1) + own_w.long() + 1)[inside]
            cov = torch.bincount(key, minlength=m * (j + 1)).view(m, j + 1)[:, 1:]
            left = vis[sel, :j] - cov
            need = torch.clamp((MIN_VISIBLE * area[sel, :j]).ceil().long(), min=MIN_PIXELS)
            accept &= (~placed[sel, :j] | (left >= need)).all(1)
        else:
            accept[:] = True  # the first shape always stays: every image has an object
        a = accept.nonzero().squeeze(1)
        if not len(a):
            continue
        ia, pa, ins = sel[a], pix[a], inside[a]

        own_flat.put_(pa, torch.where(ins, torch.tensor(j, dtype=torch.int8), own_w[a]))
        if j:
            vis[ia, :j] = left[a]
            hidden = (sdf_all[a, S * S:] <= 0).view(-1, j, P)
            k_old = kp[ia, :j, :, 2]
            kp[ia, :j, :, 2] = torch.where(hidden & (k_old > 0), 1.0, k_old)
        vis[ia, j] = area[ia, j] = n_in[a]
        placed[ia, j] = True
        centre[ia, j], radius[ia, j] = ob["center"][a], rad[a]
        lum[ia, j], labels[ia, j] = ob["lum"][a], ob["label"][a]
        la = ob["label"][a]
        kp[ia, j, :, :2] = _rotate(_KP_UNIT[la], ob["center"][a], rad[a], ob["theta"][a])
        kp[ia, j, :, 2] = (torch.arange(P) < _KP_COUNT[la][:, None]).float() * 2

        # -- draw: anti-aliased coverage, flat colour plus a gentle linear shading
        alpha = (0.5 - sdf[a]).clamp_(0, 1)
        shade = ob["shade"][a]
        rel = (px[a, :S * S] - cx[a, None]) * shade[:, 0:1] \
            + (py[a, :S * S] - cy[a, None]) * shade[:, 1:2]
        fg = ob["colour"][a, :, None] + (rel / rad[a, None])[:, None]  # (ma, 3, S*S)
        flat = (pa + (ia * (2 * hw))[:, None])[:, None, :] + torch.arange(0, 3 * hw, hw)[:, None]
        under = img_flat.take(flat)  # (ma, 3, S*S): pixel p of image i, channel c at (3i + c) hw + p
        img_flat.put_(flat, under + alpha[:, None] * (fg - under))

    if channels == 1:
        img = (img[:, 0] * _LUMA[0] + img[:, 1] * _LUMA[1] + img[:, 2] * _LUMA[2])[:, None]
    img = img + bg["noise"][:, None, None] * normal_noise(hash_keys(seed, idx, _STREAM, 3),
                                                           channels * hw).view_as(img)
    images = img.mul_(255).round_().clamp_(0, 255).to(torch.uint8).view(n, channels, size, size)
    fraction = (vis.double() / area.clamp(min=1).double())[placed]
    return images, _targets(own, placed, labels, kp, size), fraction


def _targets(own: torch.Tensor, placed: torch.Tensor, labels: torch.Tensor, kp: torch.Tensor,
             size: int) -> ObjectTargets:
    """Masks, exact boxes, labels and keypoints of the placed shapes, in (image, slot) order."""
    n, hi = placed.shape
    rows = placed.view(-1).nonzero().squeeze(1)
    image, slot = rows // hi, rows % hi
    masks = (own[image] == slot[:, None].to(torch.int8)).view(-1, size, size)
    ys, xs = masks.any(2), masks.any(1)  # (M, H) rows / (M, W) columns that hold the mask
    first = lambda t: t.int().argmax(1)  # noqa: E731
    boxes = torch.stack([first(xs), first(ys), size - first(xs.flip(1)),
                         size - first(ys.flip(1))], 1).float()
    starts = torch.zeros(n + 1, dtype=torch.long)
    starts[1:] = placed.sum(1).cumsum(0)
    return ObjectTargets(boxes, labels.view(-1)[rows], starts, masks, kp.view(-1, *kp.shape[2:])[rows])
