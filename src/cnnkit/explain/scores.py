"""Measured faithfulness and localisation of heat maps.

- `pointing_game` (Zhang et al. 2016): share of images whose heat-map maximum falls on the object.
- `energy_in_mask` (the "energy-based pointing game" of Score-CAM, Wang et al. 2020): share of the
  positive heat-map mass inside the object; a uniform map scores the mask's area share.
- `deletion_insertion` (Petsiuk et al., RISE, 2018): remove the most salient pixels first and watch
  the class probability fall (a faithful map makes it fall fast: low deletion AUC), or add them
  to a blurred image and watch it rise (high insertion AUC); a random order is the baseline.
- `evaluate_methods` / `evaluate_localization`: all of it on single-object scenes of the shapes
  world, where the true object mask is known exactly.

Two choices make the localisation scores measure the map rather than artefacts of scoring it:

- A heat map is scored at its own resolution. CAM at a stride-8 stage of a 32 px input is a 4 x 4
  grid; upsampled bilinearly its maximum always sits on the centre of the best cell, a point the
  map never claimed, and on a 10 px object that centre is off the object half the time even when
  the cell holds it. So a coarse map's maximum is a cell, and it hits when the cell holds object
  pixels (measured, fastnet on shapes: the best cell holds the object in 99 % of scenes, the
  upsampled peak lands on it in 49 %). The share of cells that hold the object is that grid's
  chance level; `evaluate_methods` reports it next to the score.
- The object's region is its mask plus a one-pixel outline (`outline=1`). A filled shape is
  flat inside; its identity is its edge, and an edge lies between the last object pixel and the
  first background pixel (the renderer's anti-aliasing also paints the object into that row).
  Pixel-level maps (guided Grad-CAM, LayerCAM at stride 2) peak on the edge, and half of those
  peaks fall on the outer side: measured 72 % hits on the bare mask, 99.6 % with the outline.
  Zhang et al.'s own tolerance, 15 px on 224 px images, would be 2 px here.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import CnnkitError, suggest
from ._core import as_batch, explaining, pick_target, upsample
from .cam import cam, gradcam, gradcam_pp, guided_backprop, guided_gradcam, layercam


def _check_pair(heatmaps: torch.Tensor, masks: torch.Tensor):
    """(B, h, w) maps and (B, H, W) masks; a map may be coarser than its mask (a CAM grid)."""
    if heatmaps.ndim == 2:
        heatmaps = heatmaps[None]
    if masks.ndim == 2:
        masks = masks[None]
    if heatmaps.ndim != 3 or masks.ndim != 3 or heatmaps.shape[0] != masks.shape[0] \
            or any(h > m for h, m in zip(heatmaps.shape[1:], masks.shape[1:])):
        raise CnnkitError(f"heatmaps (B, h, w) and masks (B, H, W) must have the same batch and h <= H, w <= W, "
                          f"got {tuple(heatmaps.shape)} and {tuple(masks.shape)}")
    return heatmaps.float(), masks.bool().to(heatmaps.device)


def object_region(masks: torch.Tensor, outline: int = 0) -> torch.Tensor:
    """The mask (B, H, W) grown by `outline` pixels in every direction (8-neighbourhood), bool."""
    if outline <= 0:
        return masks.bool()
    k = 2 * outline + 1
    return F.max_pool2d(masks[:, None].float(), k, 1, outline)[:, 0] > 0


def _on_grid(masks: torch.Tensor, hw) -> torch.Tensor:
    """(B, H, W) bool -> (B, h, w) bool: does each cell of an h x w grid over the image hold object pixels?"""
    if tuple(masks.shape[-2:]) == tuple(hw):
        return masks
    return F.adaptive_max_pool2d(masks[:, None].float(), tuple(hw))[:, 0] > 0


def _share_on_grid(masks: torch.Tensor, hw) -> torch.Tensor:
    """(B, H, W) bool -> (B, h, w) float: the share of each cell's pixels inside the mask."""
    if tuple(masks.shape[-2:]) == tuple(hw):
        return masks.float()
    return F.adaptive_avg_pool2d(masks[:, None].float(), tuple(hw))[:, 0]


def pointing_hits(heatmaps: torch.Tensor, masks: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """Per image (B,) bool: does the heat map's maximum (first one in row-major order) lie in the mask?

    `tolerance` > 0 grows the mask by that many pixels (Zhang et al. used 15 on 224 px images). A map
    coarser than the mask (B, h, w) is scored on its own grid: its maximum is a cell, which hits
    when it holds pixels of the (grown) mask."""
    heatmaps, masks = _check_pair(heatmaps, masks)
    on = _on_grid(object_region(masks, tolerance), heatmaps.shape[-2:])
    idx = heatmaps.flatten(1).argmax(1)  # (B,)
    return on.flatten(1).gather(1, idx[:, None])[:, 0]


def pointing_game(heatmaps: torch.Tensor, masks: torch.Tensor, tolerance: int = 0) -> float:
    """Share of images (B, H, W) whose heat-map maximum lies inside the object mask (B, H, W)."""
    return float(pointing_hits(heatmaps, masks, tolerance).float().mean())


def pointing_chance(masks: torch.Tensor, hw=None, tolerance: int = 0) -> float:
    """What a map that points at a uniformly random cell of an `hw` grid (default: pixels) scores in
    the pointing game: the mean share of cells that hold object pixels."""
    masks = object_region(masks.bool() if masks.ndim == 3 else masks.bool()[None], tolerance)
    return float(_on_grid(masks, hw or masks.shape[-2:]).flatten(1).float().mean(1).mean())


def energy_in_mask(heatmaps: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean over images of sum(ReLU(h) * mask) / sum(ReLU(h)); an image with no positive energy scores 0.
    A coarse map (B, h, w) counts each cell's energy by the share of its pixels in the mask (as if
    each cell were spread evenly over its pixels)."""
    heatmaps, masks = _check_pair(heatmaps, masks)
    pos = heatmaps.relu().flatten(1)
    total = pos.sum(1)
    inside = (pos * _share_on_grid(masks, heatmaps.shape[-2:]).flatten(1)).sum(1)
    share = torch.where(total > 0, inside / total.clamp(min=1e-12), torch.zeros_like(total))
    return float(share.mean())


def blur(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Gaussian blur of (B, C, H, W) with reflect padding; `sigma` defaults to 1/8 of the shorter side,
    enough to make a small object unrecognisable while keeping the colours."""
    H, W = x.shape[-2:]
    sigma = sigma if sigma is not None else max(min(H, W) / 8, 0.5)
    r = min(int(3 * sigma), min(H, W) - 1)
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-t.pow(2) / (2 * sigma ** 2))
    k = k / k.sum()
    C = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def _substrate(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "blur":
        return blur(x)
    if kind == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x)
    if kind == "zero":
        return torch.zeros_like(x)
    raise suggest(kind, ("blur", "mean", "zero"), "substrate")


@torch.no_grad()
def _curve(model, x, start, end, order, target, steps, batch_size) -> torch.Tensor:
    """Probability of `target` (B, steps + 1) as pixels switch from `start` to `end` in `order` (B, HW)."""
    B, C, H, W = x.shape
    n = H * W
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=x.device).expand(B, n))  # position of each pixel in the order
    counts = torch.round(torch.linspace(0, n, steps + 1, device=x.device)).long()  # (S,)
    probs = []
    for s0 in range(0, steps + 1, max(1, batch_size // B)):
        c = counts[s0:s0 + max(1, batch_size // B)]  # (s,)
        m = (rank[None] < c[:, None, None]).view(len(c), B, 1, H, W).to(x.dtype)  # (s, B, 1, H, W)
        imgs = (start[None] * (1 - m) + end[None] * m).flatten(0, 1)  # (s * B, C, H, W)
        p = model(imgs).float().softmax(1).view(len(c), B, -1)
        probs.append(p.gather(2, target.view(1, B, 1).expand(len(c), B, 1))[..., 0])
    return torch.cat(probs).T  # (B, S)


def deletion_insertion(model: nn.Module, x: torch.Tensor, heatmap: torch.Tensor, target=None, steps: int = 32,
                       deletion_substrate: str = "mean", insertion_substrate: str = "blur",
                       random_baseline: bool = True, seed: int = 0, batch_size: int = 256
                       ) -> Dict[str, torch.Tensor]:
    """Deletion and insertion curves of the `target` probability (default: the predicted class).

    x (B, C, H, W) normalised input, heatmap (B, H, W) at the input's size. Deletion replaces the
    most salient pixels first with `deletion_substrate` ("mean" colour of the image, "blur" or
    "zero"); insertion starts from `insertion_substrate` and puts the original pixels back, most
    salient first. `steps` + 1 points from 0 to all pixels. Returns a dict of tensors: fraction
    (S,), deletion and insertion (B, S), their AUCs (B,) (trapezoid rule over the fraction), and
    the same under "random_" for a random pixel order when `random_baseline`."""
    x = as_batch(model, x)
    heatmap = heatmap.to(x.device).float()
    if heatmap.ndim == 2:
        heatmap = heatmap[None]
    if heatmap.shape != (x.shape[0],) + tuple(x.shape[-2:]):
        raise CnnkitError(f"heatmap must be (B, H, W) = {(x.shape[0],) + tuple(x.shape[-2:])}, "
                          f"got {tuple(heatmap.shape)}")
    if steps < 1:
        raise CnnkitError(f"steps must be >= 1, got {steps}")
    B = x.shape[0]
    with explaining(model), torch.no_grad():
        t = pick_target(model(x).float(), target)
        fill, base = _substrate(x, deletion_substrate), _substrate(x, insertion_substrate)
        frac = torch.linspace(0, 1, steps + 1)
        gen = torch.Generator().manual_seed(seed)
        n = x.shape[-2] * x.shape[-1]
        shuffle = torch.stack([torch.randperm(n, generator=gen) for _ in range(B)]).to(x.device)  # (B, HW)
        # most salient first; pixels of equal saliency (a ReLU's zeros, a flat cell) in random order,
        # not row by row: a top-down sweep would erase a shape differently from the random baseline
        ranked = torch.sort(heatmap.flatten(1).gather(1, shuffle), dim=1, descending=True, stable=True).indices
        orders = {"": shuffle.gather(1, ranked)}
        if random_baseline:
            orders["random_"] = torch.stack([torch.randperm(n, generator=gen) for _ in range(B)]).to(x.device)
        out = {"fraction": frac, "target": t.cpu()}
        for prefix, order in orders.items():
            dele = _curve(model, x, x, fill, order, t, steps, batch_size).cpu()
            ins = _curve(model, x, base, x, order, t, steps, batch_size).cpu()
            out[prefix + "deletion"], out[prefix + "insertion"] = dele, ins
            out[prefix + "deletion_auc"] = torch.trapezoid(dele, frac, dim=1)
            out[prefix + "insertion_auc"] = torch.trapezoid(ins, frac, dim=1)
    return out


def _center_prior(model, x, target=None, layer=None, upsample=True):
    """A centred Gaussian: the baseline any method should beat on object-centred data."""
    B, _, H, W = x.shape
    yy, xx = torch.meshgrid(torch.arange(H, device=x.device), torch.arange(W, device=x.device), indexing="ij")
    s = min(H, W) / 4
    g = torch.exp(-(((yy - (H - 1) / 2) ** 2 + (xx - (W - 1) / 2) ** 2) / (2 * s * s)))
    return g.expand(B, H, W).float()


def _cam(model, x, target=None, layer=None, upsample=True):
    # strict=False: behind a head that is not GAP -> linear (FastNet's global max pool) the weighted sum
    # is still drawn, and equals Grad-CAM at the last stage; evaluate_methods notes it
    return cam(model, x, target, upsample=upsample, strict=False)


def _guided(fn):
    def pixel_map(model, x, target=None, layer=None, upsample=True):  # (B, C, H, W) -> (B, H, W) magnitude
        kwargs = {"layer": layer} if fn is guided_gradcam else {}
        return fn(model, x, target, **kwargs).abs().sum(1)
    return pixel_map


# name -> fn(model, x, target, layer, upsample) -> (B, h, w); with upsample=False the CAM family keeps
# its layer's grid, the guided methods are pixel maps anyway
HEATMAP_METHODS: Dict[str, Callable[..., torch.Tensor]] = {
    "cam": _cam,
    "gradcam": lambda model, x, target=None, layer=None, upsample=True: gradcam(model, x, target, layer,
                                                                               upsample=upsample),
    "gradcam_pp": lambda model, x, target=None, layer=None, upsample=True: gradcam_pp(model, x, target, layer,
                                                                                     upsample=upsample),
    "layercam": lambda model, x, target=None, layer=None, upsample=True: layercam(model, x, target, layer,
                                                                                 upsample=upsample),
    "guided_backprop": _guided(guided_backprop),
    "guided_gradcam": _guided(guided_gradcam),
    "center": _center_prior,
}
METHOD_ALIASES = {"gradcam++": "gradcam_pp", "grad-cam": "gradcam", "grad-cam++": "gradcam_pp",
                  "guided": "guided_backprop"}
DEFAULT_METHODS = ("cam", "gradcam", "gradcam_pp", "guided_gradcam")
_LAYERED = ("gradcam", "gradcam_pp", "layercam", "guided_gradcam")  # methods that take `layer`


def _method_name(name: str) -> str:
    key = METHOD_ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    if key not in HEATMAP_METHODS:
        raise suggest(str(name), list(HEATMAP_METHODS) + ["gradcam++"], "heat-map method")
    return key


def shapes_localization_set(n: int, size: int, channels: int = 3, seed: int = 0, offset: int = 0):
    """`n` single-object shapes scenes (`render_scene`, num_objects=1): uint8 images (n, C, H, W),
    labels (n,), masks (n, H, W) bool. Objects span 20-45 % of the side (at least 10 px) and may lie
    anywhere, so a centred guess scores low; their masks are exact (pixel centres inside the shape)."""
    from ..data.shapes import render_scene

    if n < 1:
        raise CnnkitError(f"n must be >= 1, got {n}")
    scenes = [render_scene(seed, offset + i, size=size, channels=channels, num_objects=1) for i in range(n)]
    return (torch.stack([s.image for s in scenes]), torch.stack([s.labels[0] for s in scenes]),
            torch.stack([s.masks[0] for s in scenes]))


def evaluate_methods(model: nn.Module, methods: Sequence[str] = DEFAULT_METHODS, n: int = 64,
                     size: int | None = None, channels: int | None = None, mean=None, std=None, layer=None,
                     outline: int = 1, native: bool = True, curves: bool = True, steps: int = 16, seed: int = 0,
                     target: str = "pred", batch_size: int = 32, offset: int = 0) -> dict:
    """Localisation and faithfulness of several heat-map `methods` on the same `n` shapes scenes.

    The model must be a classifier of the 8 shapes classes. Images are `shapes_localization_set` at
    `size` x `size` with `channels` (default: the model's default_cfg input size), scaled to [0, 1]
    and normalised with `mean`/`std` (default: default_cfg; pass a checkpoint's meta values).
    `target` "pred" explains the predicted class, "true" the drawn shape's. `layer` goes to the
    methods that take one (default: the last feature stage). The object's region is its mask grown
    by `outline` pixels; coarse maps are scored on their own grid (see the module notes), or with
    `native=False` after bilinear upsampling to the image, as is common (and misleading) practice.

    Returns {"methods": {name: scores}, "baseline": the centred-Gaussian prior's scores, "n", "size",
    "channels", "outline", "mask_fraction" (mean area share of the region), "accuracy" (of the
    predictions on these scenes)}. Scores per method: "map" (grid and layer), pointing_game,
    pointing_chance (a random cell of that grid), energy_in_mask, energy_uniform (a flat map), and with
    `curves` deletion_auc, insertion_auc and their random-order baselines random_deletion_auc,
    random_insertion_auc (class probability, `steps` + 1 points, substrates of `deletion_insertion`);
    a method the model does not support gets {"error": reason} instead, and "note" says when CAM
    is only the approximation (a head that is not GAP -> linear).
    """
    from ..data.shapes import SHAPE_CLASSES

    names = list(dict.fromkeys(_method_name(m) for m in methods))
    if not names:
        raise CnnkitError("methods: give at least one heat-map method, e.g. gradcam")
    if target not in ("pred", "true"):
        raise CnnkitError(f"target must be 'pred' or 'true', got {target!r}")
    if outline < 0:
        raise CnnkitError(f"outline must be >= 0 pixels, got {outline}")
    cfg = getattr(model, "default_cfg", None) or {}
    in_size = tuple(cfg.get("input_size", (3, 32, 32)))
    channels = int(channels if channels is not None else in_size[0])
    size = int(size if size is not None else in_size[-1])
    mean = torch.tensor(mean if mean is not None else cfg.get("mean", (0.0,) * channels)).view(1, -1, 1, 1)
    std = torch.tensor(std if std is not None else cfg.get("std", (1.0,) * channels)).view(1, -1, 1, 1)
    images, labels, masks = shapes_localization_set(n, size, channels, seed, offset)
    regions = object_region(masks, outline)
    scored = list(dict.fromkeys(names + ["center"]))  # the prior is every method's baseline
    rows = {m: dict(hits=[], chance=[], energy=[], uniform=[], curves={}) for m in scored}
    errors, maps_hw, correct = {}, {}, []
    for s0 in range(0, n, batch_size):
        sl = slice(s0, min(n, s0 + batch_size))
        x = (images[sl].float() / 255 - mean) / std  # (b, C, H, W)
        with explaining(model), torch.no_grad():
            logits = model(as_batch(model, x)).float()
        if logits.shape[1] != len(SHAPE_CLASSES):
            raise CnnkitError(f"scoring explanations needs a classifier of the {len(SHAPE_CLASSES)} shapes classes, "
                              f"this model has {logits.shape[1]} outputs; train one with data='shapes'")
        pred = logits.argmax(1).cpu()
        correct.append(pred == labels[sl])
        t = pred if target == "pred" else labels[sl]
        for m in scored:
            if m in errors:
                continue
            try:
                h = HEATMAP_METHODS[m](model, x, target=t, layer=layer if m in _LAYERED else None,
                                       upsample=not native).detach().float().cpu()
            except CnnkitError as e:
                errors[m] = str(e)
                continue
            r, b = rows[m], h.shape[0]
            maps_hw[m] = tuple(h.shape[-2:])
            r["hits"].append(pointing_hits(h, regions[sl]))
            r["chance"].append(_on_grid(regions[sl], h.shape[-2:]).flatten(1).float().mean(1))
            r["energy"].append(energy_in_mask(h, regions[sl]) * b)
            r["uniform"].append(regions[sl].flatten(1).float().mean(1))
            if curves and (m != "center" or "center" in names):
                full = upsample(h, x.shape[-2:])
                res = deletion_insertion(model, x, full, t, steps=steps, seed=seed + s0)
                for k in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
                    r["curves"][k] = r["curves"].get(k, 0.0) + float(res[k].sum())
    layer_name = None
    if any(m in _LAYERED for m in names):
        from ._core import resolve_layer
        layer_name = resolve_layer(model, layer)[0]
    out = {}
    for m in scored:
        if m in errors:
            out[m] = dict(error=errors[m])
            continue
        r = rows[m]
        h, w = maps_hw[m]
        where = layer_name if m in ("gradcam", "gradcam_pp", "layercam") else ("features" if m == "cam" else "pixels")
        scores = dict(map=f"{h}x{w} {where}",
                      pointing_game=float(torch.cat(r["hits"]).float().mean()),
                      pointing_chance=float(torch.cat(r["chance"]).mean()),
                      energy_in_mask=sum(r["energy"]) / n,
                      energy_uniform=float(torch.cat(r["uniform"]).mean()))
        scores.update({k: v / n for k, v in r["curves"].items()})
        out[m] = scores
    if "cam" in out and "error" not in out["cam"]:
        try:
            cam(model, (images[:1].float() / 255 - mean) / std)
        except CnnkitError:
            out["cam"]["note"] = ("the head is not global-average-pool -> linear, so CAM is the class-weighted "
                                  "feature sum (equal to Grad-CAM at the last stage), not a decomposition of the logit")
    baseline = out["center"] if "center" in names else out.pop("center")
    return dict(methods=out, baseline=baseline, n=n, size=size, channels=channels, outline=outline, native=native,
                mask_fraction=float(regions.flatten(1).float().mean(1).mean()),
                accuracy=float(torch.cat(correct).float().mean()), target=target, seed=seed)


def evaluate_localization(model: nn.Module, n: int = 64, size: int | None = None, method: str = "gradcam",
                          seed: int = 0, target: str = "pred", mean=None, std=None, curves: bool = False,
                          steps: int = 16, batch_size: int = 32, offset: int = 0, outline: int = 1,
                          layer=None) -> Dict[str, float]:
    """The scores of one heat-map `method` (see `evaluate_methods`) as one flat dict: method, n, size,
    pointing_game, pointing_chance, energy_in_mask, energy_uniform, mask_fraction, accuracy and, with
    `curves`, the deletion / insertion AUCs and their random-order baselines.

    The scores mean something only where the model recognises the scenes (their shapes span 20-45 %
    of the side, those of `make_classification` 45-90 %): `accuracy` in the result says how well."""
    name = _method_name(method)
    res = evaluate_methods(model, [name], n=n, size=size, mean=mean, std=std, layer=layer, outline=outline,
                           curves=curves, steps=steps, seed=seed, target=target, batch_size=batch_size, offset=offset)
    scores = res["methods"][name]
    if "error" in scores:
        raise CnnkitError(f"{name}: {scores['error']}")
    out = dict(method=name, n=n, size=res["size"], mask_fraction=res["mask_fraction"], accuracy=res["accuracy"])
    out.update({k: v for k, v in scores.items() if k not in ("map", "note")})
    return out
