"""The data set's fingerprint: what nnU-Net measures before it decides anything.

Per case the shape (before and after cropping to the nonzero region) and the spacing; the
foreground intensities of each channel (a seeded sample of labelled voxels per case, pooled:
mean, std, 0.5 / 99.5 percentiles, as nnU-Net uses for CT); how much of the data each class
covers and in how many cases it appears; the modalities and the dimensionality. A plain dict,
so that the rules (`rules.py`) can be tested on hand-written ones.
"""
from __future__ import annotations

import numpy as np

from ..data.segmentation import IGNORE
from ..data.volumes import VolumeSet, crop_box
from ..registry import CnnkitError

SAMPLES_PER_CASE = 10_000  # foreground voxels drawn per case for the intensity statistics


def _r(v: float, digits: int = 4) -> float:
    return float(round(float(v), digits))


def intensity_stats(values: np.ndarray) -> dict:
    """Mean, std, min, max, median and the 0.5 / 99.5 percentiles of a 1-D sample."""
    if values.size == 0:
        return {"mean": 0.0, "std": 1.0, "min": 0.0, "max": 0.0, "median": 0.0, "p00_5": 0.0, "p99_5": 0.0}
    lo, med, hi = np.percentile(values, [0.5, 50.0, 99.5])
    return {"mean": _r(values.mean()), "std": _r(values.std()), "min": _r(values.min()), "max": _r(values.max()),
            "median": _r(med), "p00_5": _r(lo), "p99_5": _r(hi)}


def fingerprint(vs: VolumeSet, samples_per_case: int = SAMPLES_PER_CASE, seed: int = 0) -> dict:
    """The fingerprint of a VolumeSet (see the module docstring). Keys the rules need: dims, channels,
    classes, shapes (after cropping), spacings, intensity; the others are for people and the plan's
    summary."""
    if not vs.cases:
        raise CnnkitError(f"{vs.name}: no cases to fingerprint")
    n_ch = len(vs.channels)
    samples: list[list[np.ndarray]] = [[] for _ in range(n_ch)]
    shapes, cropped, spacings, nonzero = [], [], [], []
    voxels = np.zeros(len(vs.classes), dtype=np.float64)
    cases_with = np.zeros(len(vs.classes), dtype=np.int64)
    no_fg = 0
    for i, c in enumerate(vs.cases):
        if c.image.shape[0] != n_ch:
            raise CnnkitError(f"case {c.name} has {c.image.shape[0]} channels but {vs.name} names {n_ch}")
        box = crop_box(c)
        shapes.append(list(c.shape))
        cropped.append([b - a for a, b in box])
        spacings.append([_r(s, 5) for s in c.spacing])
        nonzero.append(float(np.prod(cropped[-1]) / np.prod(c.shape)))
        rng = np.random.default_rng([seed, i])
        if c.label is None:
            fg = np.zeros(c.shape, dtype=bool)
        else:
            counts = np.bincount(c.label.ravel(), minlength=max(len(vs.classes), IGNORE + 1))
            voxels += counts[:len(vs.classes)]
            cases_with += counts[:len(vs.classes)] > 0
            fg = (c.label > 0) & (c.label != IGNORE)
        idx = np.flatnonzero(fg)
        if idx.size == 0:  # no foreground: the whole image stands in for it
            no_fg += 1
            idx = np.arange(int(np.prod(c.shape)))
        pick = idx if idx.size <= samples_per_case else rng.choice(idx, samples_per_case, replace=False)
        for k in range(n_ch):
            samples[k].append(c.image[k].ravel()[pick])
    intensity = []
    for k, name in enumerate(vs.channels):
        intensity.append({"channel": name, **intensity_stats(np.concatenate(samples[k]).astype(np.float64))})
    total = max(voxels.sum(), 1.0)
    return {
        "dataset": vs.name,
        "source": vs.source,
        "load": dict(vs.load),
        "dims": int(vs.dims),
        "channels": list(vs.channels),
        "classes": list(vs.classes),
        "num_cases": len(vs.cases),
        "shapes_before_crop": shapes,
        "shapes": cropped,
        "spacings": spacings,
        "median_shape": [float(v) for v in np.median(np.array(cropped), axis=0)],
        "median_spacing": [_r(v, 5) for v in np.median(np.array(spacings), axis=0)],
        "nonzero_fraction": _r(float(np.median(nonzero))),
        "intensity": intensity,
        "intensity_from": "foreground" if no_fg == 0 else f"foreground ({no_fg} cases without any: all voxels)",
        "class_fraction": {c: _r(v / total, 6) for c, v in zip(vs.classes, voxels)},
        "class_cases": {c: int(n) for c, n in zip(vs.classes, cases_with)},
    }
