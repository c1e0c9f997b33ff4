"""Measured faithfulness and localisation of heat maps.

- `pointing_game` (Zhang et al. 2016): share of images whose heat-map maximum falls on the object.
- `energy_in_mask` (the "energy-based pointing game" of Score-CAM, Wang et al. 2020): share of the
  positive heat-map mass inside the object; a uniform map scores the mask's area share.
- `deletion_insertion` (Petsiuk et al., RISE, 2018): remove the most salient pixels first and watch
  the class probability fall (a faithful map makes it fall fast: low deletion AUC), or add them
  to a blurred image and watch it rise (high insertion AUC); a random order is the baseline.
- `evaluate_localization`: all of it on single-object scenes of the shapes world, where the
  true object mask is known exactly.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import CnnkitError, suggest
from ._core import as_batch, explaining, pick_target
from .cam import cam, gradcam, gradcam_pp, guided_gradcam


def _check_pair(heatmaps: torch.Tensor, masks: torch.Tensor):
    if heatmaps.ndim == 2:
        heatmaps, masks = heatmaps[None], masks[None]
    if heatmaps.shape != masks.shape or heatmaps.ndim != 3:
        raise CnnkitError(f"heatmaps and masks must both be (B, H, W), got {tuple(heatmaps.shape)} and "
                          f"{tuple(masks.shape)}")
    return heatmaps.float(), masks.bool().to(heatmaps.device)


def pointing_hits(heatmaps: torch.Tensor, masks: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """Per image (B,) bool: does the heat map's maximum (first one in row-major order) lie in the mask?
    `tolerance` > 0 grows the mask by that many pixels (Zhang et al. used 15 on 224 px images)."""
    heatmaps, masks = _check_pair(heatmaps, masks)
    if tolerance > 0:
        k = 2 * tolerance + 1
        masks = F.max_pool2d(masks[:, None].float(), k, 1, tolerance)[:, 0] > 0
    idx = heatmaps.flatten(1).argmax(1)  # (B,)
    return masks.flatten(1).gather(1, idx[:, None])[:, 0]


def pointing_game(heatmaps: torch.Tensor, masks: torch.Tensor, tolerance: int = 0) -> float:
    """Share of images (B, H, W) whose heat-map maximum lies inside the object mask (B, H, W)."""
    return float(pointing_hits(heatmaps, masks, tolerance).float().mean())


def energy_in_mask(heatmaps: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean over images of sum(ReLU(h) * mask) / sum(ReLU(h)); an image with no positive energy scores 0."""
    heatmaps, masks = _check_pair(heatmaps, masks)
    pos = heatmaps.relu().flatten(1)
    total = pos.sum(1)
    inside = (pos * masks.flatten(1)).sum(1)
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
        orders = {"": torch.sort(heatmap.flatten(1), dim=1, descending=True, stable=True).indices}
        if random_baseline:
            gen = torch.Generator().manual_seed(seed)
            orders["random_"] = torch.stack([torch.randperm(x.shape[-2] * x.shape[-1], generator=gen)
                                             for _ in range(B)]).to(x.device)
        out = {"fraction": frac, "target": t.cpu()}
        for prefix, order in orders.items():
            dele = _curve(model, x, x, fill, order, t, steps, batch_size).cpu()
            ins = _curve(model, x, base, x, order, t, steps, batch_size).cpu()
            out[prefix + "deletion"], out[prefix + "insertion"] = dele, ins
            out[prefix + "deletion_auc"] = torch.trapezoid(dele, frac, dim=1)
            out[prefix + "insertion_auc"] = torch.trapezoid(ins, frac, dim=1)
    return out


def _center_prior(model, x, target=None):
    """A centred Gaussian: the baseline any method should beat on object-centred data."""
    B, _, H, W = x.shape
    yy, xx = torch.meshgrid(torch.arange(H, device=x.device), torch.arange(W, device=x.device), indexing="ij")
    s = min(H, W) / 4
    g = torch.exp(-(((yy - (H - 1) / 2) ** 2 + (xx - (W - 1) / 2) ** 2) / (2 * s * s)))
    return g.expand(B, H, W).float()


HEATMAP_METHODS: Dict[str, Callable[..., torch.Tensor]] = {
    "cam": cam,
    "gradcam": gradcam,
    "gradcam_pp": gradcam_pp,
    "guided_gradcam": lambda model, x, target=None: guided_gradcam(model, x, target).abs().sum(1),
    "center": _center_prior,
}


def evaluate_localization(model: nn.Module, n: int = 64, size: int | None = None, method: str = "gradcam",
                          seed: int = 0, target: str = "pred", mean=None, std=None, curves: bool = False,
                          steps: int = 16, batch_size: int = 32, offset: int = 0, tolerance: int = 0
                          ) -> Dict[str, float]:
    """Scores of a heat-map `method` on `n` single-object shapes scenes (`render_scene`, num_objects=1).

    The model must be a shapes classifier (8 classes). Images are scaled to [0, 1] and normalised
    with `mean`/`std` (default: the model's default_cfg; pass the checkpoint's meta["mean"/"std"]
    for a trained run). `target` "pred" explains the predicted class, "true" the drawn shape's.
    `size` defaults to the model's input size (default_cfg).

    The scores mean something only where the model recognises the scenes: their shapes span
    20-45 % of the side, those of `make_classification` 45-90 %. A GAP classifier trained on
    classification images alone is near chance on scenes (measured: seed_cnn, 83 % on 32 px
    classification, 22-23 % on scenes at 32 and 64 px; at 64 px the background dominates its
    average); train or fine-tune it with some scenes, as `accuracy` in the result shows.

    Returns pointing_game, energy_in_mask, mask_fraction (the mean object area share: what a
    uniform map would score on energy), the same two scores for the object's box
    (pointing_game_box, energy_in_box: a ring's hole is outside its mask but inside its box),
    accuracy of the predictions, n; with `curves`, the mean
    deletion / insertion AUCs and their random-order baselines."""
    from ..data.shapes import SHAPE_CLASSES, render_scene

    if method not in HEATMAP_METHODS:
        raise suggest(method, HEATMAP_METHODS, "heat-map method")
    if target not in ("pred", "true"):
        raise CnnkitError(f"target must be 'pred' or 'true', got {target!r}")
    if n < 1:
        raise CnnkitError(f"n must be >= 1, got {n}")
    cfg = getattr(model, "default_cfg", None) or {}
    channels = int(cfg.get("input_size", (3,))[0])
    size = int(size if size is not None else cfg.get("input_size", (3, 32, 32))[-1])
    mean = torch.tensor(mean if mean is not None else cfg.get("mean", (0.0,) * channels)).view(1, -1, 1, 1)
    std = torch.tensor(std if std is not None else cfg.get("std", (1.0,) * channels)).view(1, -1, 1, 1)
    fn = HEATMAP_METHODS[method]
    hits, box_hits, energy, box_energy, area, correct, sums = [], [], [], [], [], [], {}
    for s0 in range(0, n, batch_size):
        scenes = [render_scene(seed, offset + i, size=size, channels=channels, num_objects=1)
                  for i in range(s0, min(n, s0 + batch_size))]
        x = (torch.stack([s.image for s in scenes]).float() / 255 - mean) / std  # (b, C, H, W)
        masks = torch.stack([s.masks[0] for s in scenes])  # (b, H, W)
        boxes = torch.zeros_like(masks)  # the object's box: counts holes (a ring's middle) as the object
        for j, s in enumerate(scenes):
            x0, y0, x1, y1 = (int(v) for v in s.boxes[0])
            boxes[j, y0:y1, x0:x1] = True
        labels = torch.stack([s.labels[0] for s in scenes])
        with explaining(model), torch.no_grad():
            logits = model(as_batch(model, x))
        if logits.shape[1] != len(SHAPE_CLASSES):
            raise CnnkitError(f"evaluate_localization needs a classifier of the {len(SHAPE_CLASSES)} shapes classes, "
                              f"this model has {logits.shape[1]} outputs; train one with data='shapes'")
        pred = logits.argmax(1).cpu()
        t = pred if target == "pred" else labels
        h = fn(model, x, target=t).detach().cpu()
        hits.append(pointing_hits(h, masks, tolerance))
        box_hits.append(pointing_hits(h, boxes, tolerance))
        energy.append(energy_in_mask(h, masks) * len(scenes))
        box_energy.append(energy_in_mask(h, boxes) * len(scenes))
        area.append(masks.flatten(1).float().mean(1))
        correct.append(pred == labels)
        if curves:
            r = deletion_insertion(model, x, h, t, steps=steps, seed=seed + s0)
            for k in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
                sums[k] = sums.get(k, 0.0) + float(r[k].sum())
    res = dict(method=method, n=n, size=size,
               pointing_game=float(torch.cat(hits).float().mean()),
               energy_in_mask=sum(energy) / n,
               pointing_game_box=float(torch.cat(box_hits).float().mean()),
               energy_in_box=sum(box_energy) / n,
               mask_fraction=float(torch.cat(area).mean()),
               accuracy=float(torch.cat(correct).float().mean()))
    res.update({k: v / n for k, v in sums.items()})
    return res
