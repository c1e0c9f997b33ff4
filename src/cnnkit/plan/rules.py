"""nnU-Net's rules (Isensee et al., Nature Methods 2021): from a fingerprint to a `Plan`.

Each rule is a small function of numbers, and `make_plan` writes down the reason of each decision
with the numbers it used:

    dims            3-D for volumes, 2-D for 2-D images (noting when 2-D may do as well)
    target spacing  the median spacing per axis; an anisotropic axis (spacing > 3x the finest, and
                    under a third of the other axes' voxels) takes its 10th percentile instead
    median shape    of the cases resampled to the target spacing
    pooling         per axis until the feature map would go below 4 voxels; no pooling along an axis
                    while its spacing is more than 2x the finest; kernel 1 along such an axis
    patch size      from the median shape, the axis largest relative to it shrunk until the estimated
                    activation memory fits the budget; each axis a multiple of 2^(its poolings)
    batch size      as many patches as the budget holds, at most 5% of the data set's voxels, at least 2
    normalization   CT: clip to the foreground's 0.5 / 99.5 percentiles, z-score with its mean / std;
                    anything else: z-score per image (inside the nonzero region when cropping removed
                    a quarter of the median case)

The budget is in MB of activation memory: `activation_mb` counts, per U-Net stage, width x voxels of
its feature maps, MAPS_PER_STAGE maps kept for the backward pass, 4 bytes each, for the whole batch.
Its default (`DEFAULT_BUDGET_MB`) is sized for a CPU; nnU-Net's own 3-D setting on a ~10 GB GPU (a
128^3 patch, batch 2) is about 7,000 MB in these units.
"""
from __future__ import annotations

import math

import numpy as np

from ..data.volumes import ANISOTROPY, target_shape
from ..registry import CnnkitError
from .schema import Plan

# A CPU's: shapes-volumes gets a 24 x 48 x 48 patch, batch 2, whose training step takes 0.5 s (bf16) /
# 1.1 s (fp32) on 2 Xeon cores; 600 MB gives 28 x 64 x 64 at 1.6 s / 3.1 s, for no better Dice there.
DEFAULT_BUDGET_MB = 300.0
MAPS_PER_STAGE = 10  # encoder conv+norm x2, decoder conv+norm x2, the skip concatenation (2 widths)
BYTES = 4  # float32
MIN_FEATURE_MAP = 4
BASE_FEATURES = 32
MAX_FEATURES = {3: 320, 2: 512}
MIN_BATCH = 2
BATCH_DATA_FRACTION = 0.05
FOREGROUND_OVERSAMPLE = 0.33
COARSE = 2.0  # no pooling / 3-wide kernel along an axis while its spacing is more than this x the finest
REQUIRED = ("dims", "channels", "classes", "shapes", "spacings", "intensity")


def _x(v, fmt: str = "g") -> str:
    return " x ".join(format(float(a), fmt) if fmt != "d" else str(int(a)) for a in v)


def _need(fp: dict) -> None:
    missing = [k for k in REQUIRED if k not in fp]
    if missing:
        raise CnnkitError(f"fingerprint: missing {', '.join(missing)} (made by cnnkit.plan.fingerprint)")
    if fp["dims"] not in (2, 3):
        raise CnnkitError(f"fingerprint: dims must be 2 or 3, got {fp['dims']!r}")
    if not fp["shapes"] or len(fp["shapes"]) != len(fp["spacings"]):
        raise CnnkitError(f"fingerprint: {len(fp['shapes'])} shapes but {len(fp['spacings'])} spacings "
                          f"(one of each per case)")
    if len(fp["intensity"]) != len(fp["channels"]):
        raise CnnkitError(f"fingerprint: {len(fp['channels'])} channels but intensity statistics for "
                          f"{len(fp['intensity'])}")


def _spatial(rows, dims: int) -> np.ndarray:
    """(N, 3) or (N, dims) per-case values -> (N, dims): a 2-D plan drops z."""
    a = np.asarray(rows, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] not in (dims, 3):
        raise CnnkitError(f"fingerprint: per-case shapes and spacings must have 3 values (z, y, x), got {a.shape}")
    return a[:, -dims:]


# ------------------------------------------------------------------ the rules, one function each


def target_spacing(spacings: np.ndarray, shapes: np.ndarray, axes) -> tuple[list[float], str]:
    """The median spacing per axis; on an anisotropic axis with few voxels its 10th percentile (never finer
    than the coarsest other axis), so that resampling does not blow up the coarse axis of the thick-slice
    cases nor throw away the detail of the thin-slice ones."""
    med = np.median(spacings, axis=0)
    med_shape = np.median(shapes, axis=0)
    n = len(spacings)
    base = f"the median spacing per axis of the {n} cases ({_x(med, '.4g')} mm)"
    if len(med) < 2:
        return [float(v) for v in med], base
    worst = int(np.argmax(med))
    others = [a for a in range(len(med)) if a != worst]
    ratio = med[worst] / med.min()
    if ratio <= ANISOTROPY:
        return [round(float(v), 5) for v in med], (f"{base}: no axis is anisotropic (largest / smallest spacing "
                                                    f"{ratio:.2f} <= {ANISOTROPY:g})")
    few = med_shape[worst] * ANISOTROPY < med_shape[others].min()
    if not few:
        return [round(float(v), 5) for v in med], (
            f"{base}: {axes[worst]} is {ratio:.1f}x coarser than the finest axis, but its median "
            f"{med_shape[worst]:.0f} voxels are not under a third of the others' {med_shape[others].min():.0f}, "
            f"so the median is kept")
    p10 = float(np.percentile(spacings[:, worst], 10))
    floor = float(med[others].max())
    t = med.copy()
    t[worst] = max(p10, floor)
    return [round(float(v), 5) for v in t], (
        f"the median spacing per axis ({_x(med, '.4g')} mm), except {axes[worst]}: {ratio:.1f}x coarser than the "
        f"finest with only {med_shape[worst]:.0f} median voxels against {med_shape[others].min():.0f}, it takes "
        f"the 10th percentile of its spacings, {p10:.4g} mm"
        f"{f' (raised to the coarsest other axis, {floor:.4g} mm)' if p10 < floor else ''}, so the thick-slice "
        f"cases are upsampled less and the thin-slice ones lose less detail")


def pooling(patch, spacing) -> tuple[list[list[int]], list[list[int]]]:
    """Strides and kernel sizes per stage for a patch at a spacing: an axis pools (stride 2) while its
    feature map stays >= MIN_FEATURE_MAP voxels and its spacing is at most COARSE x the finest; a kernel is
    1 along an axis that is still too coarse, 3 once it is not."""
    d = len(patch)
    size, sp = [float(p) for p in patch], [float(s) for s in spacing]
    kernel = [3 if sp[a] <= COARSE * min(sp) + 1e-9 else 1 for a in range(d)]
    strides, kernels = [[1] * d], [kernel]
    while True:
        finest = min(sp)
        pool = [size[a] / 2 >= MIN_FEATURE_MAP and sp[a] <= COARSE * finest + 1e-9 for a in range(d)]
        if not any(pool):
            break
        stride = [2 if p else 1 for p in pool]
        size = [s / t for s, t in zip(size, stride)]
        sp = [s * t for s, t in zip(sp, stride)]
        kernel = [3 if kernel[a] == 3 or sp[a] <= COARSE * min(sp) + 1e-9 else 1 for a in range(d)]
        strides.append(stride)
        kernels.append(kernel)
    return strides, kernels


def _divisible(strides) -> list[int]:
    return [math.prod(s[a] for s in strides) for a in range(len(strides[0]))]


def fit_pooling(patch, spacing) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """The patch rounded up to a multiple of its strides' product per axis, with the pooling of the rounded
    patch (rounding up can allow one more pooling, so until nothing changes)."""
    p = [max(1, int(v)) for v in patch]
    for _ in range(10):
        strides, kernels = pooling(p, spacing)
        q = [int(math.ceil(v / m) * m) for v, m in zip(p, _divisible(strides))]
        if q == p:
            break
        p = q
    return p, strides, kernels


def activation_mb(patch, strides, base: int, cap: int, batch: int) -> float:
    """Estimated activation memory of a training step in MB (see the module docstring)."""
    size, total = [float(v) for v in patch], 0.0
    for s, st in enumerate(strides):
        size = [v / t for v, t in zip(size, st)]
        total += min(base * 2 ** s, cap) * math.prod(size)
    return batch * total * MAPS_PER_STAGE * BYTES / 2 ** 20


def patch_size(median_shape, spacing, budget_mb: float, base: int, cap: int, axes):
    """The largest patch, from the median shape, whose batch of MIN_BATCH fits `budget_mb`: the axis that
    is largest relative to the median shape (ties: the longest in mm) loses one multiple of its strides'
    product at a time. Returns (patch, strides, kernels, estimated MB, reason)."""
    median = [max(1, round(v)) for v in median_shape]
    patch, steps = list(median), 0
    while True:
        p, strides, kernels = fit_pooling(patch, spacing)
        mb = activation_mb(p, strides, base, cap, MIN_BATCH)
        if mb <= budget_mb:
            break
        div = _divisible(strides)
        can = [a for a in range(len(p)) if p[a] - div[a] >= MIN_FEATURE_MAP]
        if not can:
            reason = (f"{_x(p, 'd')} voxels is as small as a patch gets, and still needs {mb:.0f} MB for a batch of "
                      f"{MIN_BATCH}, over the budget of {budget_mb:g} MB: raise --budget")
            return p, strides, kernels, mb, reason
        axis = max(can, key=lambda a: (p[a] / median[a], p[a] * spacing[a]))
        patch = list(p)
        patch[axis] = p[axis] - div[axis]
        steps += 1
    div = _divisible(strides)
    if steps == 0:
        how = (f"the median shape {_x(median, 'd')} rounded up to multiples of {_x(div, 'd')} (the strides' "
               f"product per axis) fits the budget")
    else:
        how = (f"the median shape {_x(median, 'd')}, its axis largest relative to it shrunk {steps} time"
               f"{'s' if steps > 1 else ''} until the estimate fitted the budget, each axis a multiple of "
               f"{_x(div, 'd')}")
    reason = (f"{how}: {mb:.0f} MB of activations for a batch of {MIN_BATCH} <= {budget_mb:g} MB "
              f"({', '.join(f'{a} {v}' for a, v in zip(axes, p))} voxels = "
              f"{_x([v * s for v, s in zip(p, spacing)], '.0f')} mm)")
    return p, strides, kernels, mb, reason


def batch_size(patch, strides, base, cap, budget_mb: float, dataset_voxels: float) -> tuple[int, str]:
    """As many patches as the budget holds, capped at 5% of the data set's voxels, at least MIN_BATCH."""
    per = activation_mb(patch, strides, base, cap, 1)
    by_budget = int(budget_mb // per) if per > 0 else MIN_BATCH
    by_data = int(BATCH_DATA_FRACTION * dataset_voxels // math.prod(patch))
    bs = max(MIN_BATCH, min(by_budget, by_data))
    reason = (f"{bs}: the budget holds {by_budget} patches of {per:.0f} MB, {BATCH_DATA_FRACTION:.0%} of the data "
              f"set's {dataset_voxels / 1e6:.3g} M voxels is {by_data} patches, and a batch is at least {MIN_BATCH}")
    return bs, reason


def normalization(channels, intensity, nonzero_fraction: float) -> tuple[list[dict], str]:
    """CT (a channel named CT): clip to the foreground 0.5 / 99.5 percentiles, z-score with the foreground
    mean / std, the same for every case (Hounsfield units mean the same everywhere). Anything else: z-score
    per image, inside the nonzero region when cropping to it removed at least a quarter of the median case."""
    out, parts = [], []
    use_mask = nonzero_fraction < 0.75
    for ch, st in zip(channels, intensity):
        if str(ch).strip().lower() == "ct":
            out.append({"channel": ch, "scheme": "ct", "clip": [st["p00_5"], st["p99_5"]], "mean": st["mean"],
                        "std": st["std"]})
            parts.append(f"{ch}: CT values mean the same in every case, so clip to the foreground's 0.5 / 99.5 "
                         f"percentiles [{st['p00_5']:g}, {st['p99_5']:g}] and z-score with its mean {st['mean']:g} "
                         f"and std {st['std']:g}")
        else:
            out.append({"channel": ch, "scheme": "zscore", "use_nonzero_mask": bool(use_mask)})
            parts.append(f"{ch}: not CT, so intensities differ between scans: z-score each image on its own"
                         + (f", inside the nonzero region (cropping keeps {nonzero_fraction:.0%} of the median case)"
                            if use_mask else ""))
    return out, "; ".join(parts)


def augmentation(dims: int, spacing, patch, axes) -> tuple[dict, dict]:
    """nnU-Net's augmentation, as values, and a reason for each part."""
    ratio = max(spacing) / min(spacing)
    aspect = max(patch) / min(patch)
    dummy = dims == 3 and (ratio > ANISOTROPY or max(patch) / patch[0] > ANISOTROPY)
    why = {}
    if dims == 2:
        rot = {"p": 0.2, "degrees": [-180.0, 180.0]}
        why["rotation"] = "2-D images have no preferred orientation in the plane: any angle, on 20% of the samples"
    elif dummy:
        rot = {"p": 0.2, "about_z": [-180.0, 180.0], "about_y": [0.0, 0.0], "about_x": [0.0, 0.0]}
        why["rotation"] = (f"anisotropic data (spacing ratio {ratio:.1f}, patch aspect {aspect:.1f}): rotating out of "
                           f"the plane would mix thick slices, so only in-plane, any angle, on 20% of the samples")
    else:
        rot = {"p": 0.2, "about_z": [-30.0, 30.0], "about_y": [-30.0, 30.0], "about_x": [-30.0, 30.0]}
        why["rotation"] = ("roughly isotropic 3-D data: up to 30 degrees about every axis, on 20% of the samples "
                           "(nnU-Net's range)")
    aug = {
        "rotation": rot,
        "scale": {"p": 0.2, "range": [0.7, 1.4]},
        "mirror": {"axes": list(axes), "p": 0.5},
        "dummy_2d": bool(dummy),
        "noise": {"p": 0.1, "variance": [0.0, 0.1]},
        "blur": {"p": 0.2, "sigma": [0.5, 1.0]},
        "brightness": {"p": 0.15, "range": [0.75, 1.25]},
        "contrast": {"p": 0.15, "range": [0.75, 1.25]},
        "low_resolution": {"p": 0.25, "zoom": [0.5, 1.0], "axes": list(axes[1:] if dummy else axes)},
        "gamma": {"p": 0.3, "range": [0.7, 1.5], "invert_p": 0.1},
        "elastic": False,
    }
    why["scale"] = "objects vary in size between patients: zoom 0.7-1.4 on 20% of the samples"
    why["mirror"] = (f"anatomy looks plausible mirrored: each of the axes {', '.join(axes)} flipped with probability "
                     f"0.5 (and at inference the mirrored predictions are averaged)")
    why["dummy_2d"] = (f"on: the spatial augmentations run per slice in the y-x plane (spacing ratio {ratio:.1f} > "
                       f"{ANISOTROPY:g}), as nnU-Net does for anisotropic 3-D data" if dummy else
                       "off: the data are 2-D" if dims == 2 else
                       f"off: spacing ratio {ratio:.1f} and patch aspect {aspect:.1f} are at most {ANISOTROPY:g}")
    why["noise"] = "scanners differ in noise: Gaussian noise of variance up to 0.1 (normalised units) on 10%"
    why["blur"] = "and in sharpness: Gaussian blur of sigma 0.5-1 voxel on 20%"
    why["brightness"] = "multiplicative brightness 0.75-1.25 on 15%"
    why["contrast"] = "contrast 0.75-1.25 (values spread about their mean, range kept) on 15%"
    why["low_resolution"] = ("simulate a coarser scan: down by 0.5-1 and back up on 25%"
                             + (" (in-plane only: z is coarse already)" if dummy else ""))
    why["gamma"] = "gamma 0.7-1.5 on 30% (on the inverted image on 10%), intensity statistics kept"
    why["elastic"] = "off: nnU-Net found elastic deformation not worth its cost"
    return aug, why


# ------------------------------------------------------------------ the plan


def check_budget(budget) -> float:
    """The budget as a float, or one line saying what it must be."""
    try:
        value = float(budget)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(budget, bool) or not (value > 0 and math.isfinite(value)):
        raise CnnkitError(f"budget must be a positive number of MB of activation memory (e.g. 300), got {budget!r}")
    return value


def make_plan(fp: dict, budget: float = DEFAULT_BUDGET_MB) -> Plan:
    """A Plan from a fingerprint (`fingerprint(vs)`, or a hand-written dict with dims, channels, classes,
    shapes, spacings, intensity; optional nonzero_fraction, dataset, load) and a memory budget in MB."""
    _need(fp)
    budget = check_budget(budget)
    dims = int(fp["dims"])
    axes = ("z", "y", "x") if dims == 3 else ("y", "x")
    shapes, spacings = _spatial(fp["shapes"], dims), _spatial(fp["spacings"], dims)
    n = len(shapes)
    why = {}
    all_sp = np.asarray(fp["spacings"], dtype=np.float64)
    med_full = np.median(all_sp, axis=0)
    if dims == 2:
        why["dims"] = f"2-D: the {n} cases are 2-D images (one slice each), so a 2-D U-Net"
    else:
        ratio = med_full.max() / med_full.min()
        why["dims"] = (f"3-D: the {n} cases are volumes (median {_x(np.median(shapes, 0), '.0f')} voxels), so a 3-D "
                       f"U-Net sees the context across slices"
                       + (f"; the spacing is anisotropic ({ratio:.1f}x), where nnU-Net also tries a 2-D U-Net on "
                          f"the slices and keeps whichever validates better" if ratio > ANISOTROPY else ""))
    target, why["target_spacing"] = target_spacing(spacings, shapes, axes)
    resampled = np.array([target_shape(s, sp, target) for s, sp in zip(shapes, spacings)])
    median = [round(v) for v in np.median(resampled, axis=0)]
    why["median_shape"] = (f"the median of the {n} cases resampled to the target spacing: {_x(median, 'd')} voxels "
                           f"(before: {_x(np.median(shapes, 0), '.0f')})")
    cap = MAX_FEATURES[dims]
    patch, strides, kernels, mb, why["patch_size"] = patch_size(median, target, budget, BASE_FEATURES, cap, axes)
    pools = [sum(1 for s in strides if s[a] == 2) for a in range(dims)]
    why["strides"] = (f"{len(strides)} stages: {', '.join(f'{a} pooled {k}x' for a, k in zip(axes, pools))}, each axis "
                      f"until its feature map would go below {MIN_FEATURE_MAP} voxels, and an axis only once its "
                      f"spacing is at most {COARSE:g}x the finest")
    ones = [i for i, k in enumerate(kernels) if 1 in k]
    why["kernel_sizes"] = ("3 along every axis of every stage: no axis is too coarse" if not ones else
                           f"3, but 1 along the coarse axis at stage{'s' if len(ones) > 1 else ''} "
                           f"{', '.join(map(str, ones))}, where its spacing is still more than {COARSE:g}x the finest "
                           f"(a 3-wide kernel there would mix distant slices)")
    dataset_voxels = float(resampled.prod(axis=1).sum())
    bs, why["batch_size"] = batch_size(patch, strides, BASE_FEATURES, cap, budget, dataset_voxels)
    mb = activation_mb(patch, strides, BASE_FEATURES, cap, bs)
    why["base_features"] = (f"{BASE_FEATURES} features at full resolution, doubled at each stage: "
                            f"{', '.join(str(min(BASE_FEATURES * 2 ** i, cap)) for i in range(len(strides)))}")
    why["max_features"] = f"{cap}: nnU-Net's cap for {dims}-D, which keeps the deep stages' memory in check"
    why["memory_mb"] = (f"the estimate for a batch of {bs} at this patch: width x voxels per stage, {MAPS_PER_STAGE} "
                        f"maps kept per stage for the backward pass, {BYTES} bytes each")
    why["budget_mb"] = (f"the activation memory the patch and batch may take (--budget; {DEFAULT_BUDGET_MB:g} MB by "
                        f"default, a CPU's worth; a ~10 GB GPU holds about 7000)")
    nonzero = float(fp.get("nonzero_fraction", 1.0))
    why["crop_to_nonzero"] = (f"on: crop each case to the box of its nonzero voxels (the median case keeps "
                              f"{nonzero:.0%}), less to compute and nothing labelled lost")
    norm, why["normalization"] = normalization(fp["channels"], fp["intensity"], nonzero)
    why["resampling"] = (f"images cubic, labels nearest; a case whose spacing is anisotropic (> {ANISOTROPY:g}x) is "
                         f"resampled in-plane first and along its coarse axis with nearest, so thick slices are not "
                         f"blurred into each other")
    aug, aug_why = augmentation(dims, target, patch, axes)
    why["augmentation"] = "nnU-Net's default augmentation, applied to each patch during training"
    why.update({f"augmentation.{k}": v for k, v in aug_why.items()})
    why["foreground_oversample"] = (f"{FOREGROUND_OVERSAMPLE:.0%} of the patches are centred on a foreground voxel, so "
                                    f"small structures are seen often enough")
    why["deep_supervision"] = ("on: a loss on every decoder stage but the coarsest (labels downsampled to each), "
                               "weighted 1, 1/2, 1/4, ... and normalised: gradients reach the deep stages directly")
    why["loss"] = "Dice + cross-entropy: Dice copes with small foreground, cross-entropy keeps the gradients smooth"
    load = dict(fp.get("load") or {})
    summary = {
        "num_cases": n,
        "source": fp.get("source", ""),
        "median_shape": [round(v) for v in np.median(shapes, 0)],
        "shape_range": [[int(v) for v in shapes.min(0)], [int(v) for v in shapes.max(0)]],
        "median_spacing": [round(float(v), 5) for v in np.median(spacings, 0)],
        "spacing_range": [[round(float(v), 5) for v in spacings.min(0)], [round(float(v), 5) for v in spacings.max(0)]],
        "nonzero_fraction": round(nonzero, 4),
        "intensity": list(fp["intensity"]),
    }
    for key in ("class_fraction", "class_cases"):
        if key in fp:
            summary[key] = dict(fp[key])
    plan = Plan(dataset=str(load.get("data") or fp.get("dataset", "")), data_dir=load.get("data_dir"),
                num_cases=load.get("num_cases"), seed=int(load.get("seed", 0)), dims=dims,
                classes=list(fp["classes"]), channels=list(fp["channels"]), target_spacing=target,
                median_shape=median, patch_size=patch, batch_size=bs, strides=strides, kernel_sizes=kernels,
                base_features=BASE_FEATURES, max_features=cap, crop_to_nonzero=True,
                resampling={"image_order": 3, "label_order": 0, "order_across": 0,
                            "anisotropy_threshold": ANISOTROPY},
                normalization=norm, augmentation=aug, foreground_oversample=FOREGROUND_OVERSAMPLE,
                deep_supervision=True, loss="dice_ce", budget_mb=round(budget, 3), memory_mb=round(mb, 1), why=why,
                fingerprint=summary)
    return plan.validate("make_plan")
