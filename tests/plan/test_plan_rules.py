"""nnU-Net's rules on hand-written fingerprints (isotropic CT, anisotropic prostate-like MRI, 2-D images, a
tiny data set, many small volumes): each expected value, and the invariants every plan keeps."""
import math

import numpy as np
import pytest

from cnnkit.data.volumes import load_volumes
from cnnkit.plan import (
    DEFAULT_BUDGET_MB,
    activation_mb,
    fingerprint,
    make_plan,
    pooling,
)
from cnnkit.plan.rules import MIN_FEATURE_MAP
from cnnkit.registry import CnnkitError

CT = {"channel": "CT", "mean": 100.0, "std": 50.0, "p00_5": -50.0, "p99_5": 300.0}
MRI = {"channel": "MRI", "mean": 400.0, "std": 120.0, "p00_5": 20.0, "p99_5": 900.0}
PROSTATE_Z = [2.2, 3.0, 3.3, 3.6, 3.6, 3.6, 3.6, 4.0, 4.0, 4.0]


def fp(dims, channels, shapes, spacings, classes=("background", "fg"), **extra):
    stats = [dict(CT if c.upper() == "CT" else MRI, channel=c) for c in channels]
    return {"dims": dims, "channels": list(channels), "classes": list(classes), "shapes": shapes,
            "spacings": spacings, "intensity": stats, **extra}


rng = np.random.default_rng(0)
ISO_CT = fp(3, ["CT"], [[int(z), int(y), int(y)] for z, y in zip(rng.integers(90, 130, 20),
                                                                   rng.integers(180, 240, 20))],
            [[1.0 + 0.1 * (i % 3), 0.8, 0.8] for i in range(20)])
PROSTATE = fp(3, ["T2", "ADC"], [[20, 320, 320]] * 8 + [[24, 256, 256]] * 2,
              [[z, 0.6, 0.6] for z in PROSTATE_Z], classes=("background", "PZ", "TZ"), nonzero_fraction=0.6)
IMAGES_2D = fp(2, ["CT"], [[1, 512, 512]] * 30, [[1.0, 0.7, 0.7]] * 30)
TINY = fp(3, ["CT"], [[20, 24, 24], [22, 26, 26], [18, 24, 22]], [[1.0, 1.0, 1.0]] * 3)
MANY_SMALL = fp(3, ["MRI"], [[16, 16, 16]] * 1000, [[1.0, 1.0, 1.0]] * 1000)

CASES = {
    # name: (fingerprint, target spacing, first strides, stage-0 kernel, normalization schemes, batch size)
    "isotropic CT": (ISO_CT, [1.1, 0.8, 0.8], [[1, 1, 1], [2, 2, 2]], [3, 3, 3], ["ct"], 2),
    "anisotropic MRI": (PROSTATE, [float(np.percentile(PROSTATE_Z, 10)), 0.6, 0.6], [[1, 1, 1], [1, 2, 2]], [1, 3, 3],
                        ["zscore", "zscore"], 2),
    "2-D images": (IMAGES_2D, [0.7, 0.7], [[1, 1], [2, 2]], [3, 3], ["ct"], 2),
    "tiny": (TINY, [1.0, 1.0, 1.0], [[1, 1, 1], [2, 2, 2]], [3, 3, 3], ["ct"], 2),
    "many small": (MANY_SMALL, [1.0, 1.0, 1.0], [[1, 1, 1], [2, 2, 2]], [3, 3, 3], ["zscore"], 50),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rules_give_the_expected_plan(name):
    f, target, first, k0, schemes, bs = CASES[name]
    p = make_plan(f, budget=600.0)  # the budget these expectations were worked out for
    assert p.target_spacing == pytest.approx(target, abs=1e-4)
    assert p.strides[:2] == first and p.kernel_sizes[0] == k0
    assert [n["scheme"] for n in p.normalization] == schemes
    assert p.batch_size == bs
    assert p.dims == f["dims"] and len(p.patch_size) == len(p.median_shape) == f["dims"]
    assert p.max_features == (320 if f["dims"] == 3 else 512) and p.base_features == 32
    assert p.deep_supervision and p.loss == "dice_ce"
    for key in ("dims", "target_spacing", "median_shape", "patch_size", "batch_size", "strides", "kernel_sizes",
                "normalization", "augmentation.rotation", "loss"):
        assert p.why[key] and "\n" not in p.why[key]


@pytest.mark.parametrize("name", list(CASES))
def test_every_plan_fits_its_budget_and_divides_its_patch(name):
    f = CASES[name][0]
    for budget in (100, DEFAULT_BUDGET_MB, 4000):
        p = make_plan(f, budget=budget)
        assert all(v % m == 0 for v, m in zip(p.patch_size, p.divisible_by))
        assert activation_mb(p.patch_size, p.strides, 32, p.max_features, 2) <= budget
        assert p.memory_mb <= budget + 0.05
        # pooling went as far as it could: the bottleneck is >= 4 voxels on a pooled axis, < 8 on each
        # axis that could still pool by spacing
        bottom = [v // m for v, m in zip(p.patch_size, p.divisible_by)]
        for a, n in enumerate(p.num_pool):
            if n:
                assert bottom[a] >= MIN_FEATURE_MAP
        assert min(bottom) < 2 * MIN_FEATURE_MAP
        assert all(v <= math.ceil(m / d) * d for v, m, d in zip(p.patch_size, p.median_shape, p.divisible_by))


def test_isotropic_ct_patch_shrinks_with_the_budget_and_keeps_its_proportions():
    small, big = make_plan(ISO_CT, budget=200), make_plan(ISO_CT, budget=4000)
    assert math.prod(small.patch_size) < math.prod(big.patch_size)
    assert max(big.patch_size) / min(big.patch_size) < 2.5
    assert "shrunk" in small.why["patch_size"]
    ct = small.normalization[0]
    assert ct == {"channel": "CT", "scheme": "ct", "clip": [-50.0, 300.0], "mean": 100.0, "std": 50.0}
    assert small.augmentation["rotation"]["about_y"] == [-30.0, 30.0] and not small.augmentation["dummy_2d"]


def test_anisotropic_axis_takes_the_10th_percentile_and_pools_late():
    p = make_plan(PROSTATE)
    assert "10th percentile" in p.why["target_spacing"] and "2.92" in p.why["target_spacing"]
    assert p.strides[1] == [1, 2, 2] and p.strides[2] == [1, 2, 2]  # z 2.92 mm vs 0.6 -> 1.2 -> 2.4 mm
    assert p.kernel_sizes[:3] == [[1, 3, 3], [1, 3, 3], [3, 3, 3]]
    assert p.augmentation["dummy_2d"] and p.augmentation["rotation"]["about_z"] == [-180.0, 180.0]
    assert p.augmentation["low_resolution"]["axes"] == ["y", "x"]
    assert all(n["use_nonzero_mask"] for n in p.normalization)  # cropping kept 60% of the median case
    assert "2-D U-Net" in p.why["dims"]


def test_10th_percentile_is_never_finer_than_the_coarsest_other_axis():
    f = fp(3, ["MRI"], [[10, 300, 300]] * 10, [[0.5 if i < 3 else 3.0, 0.9, 0.6] for i in range(10)])
    p = make_plan(f)
    assert p.target_spacing[0] == pytest.approx(0.9) and "raised to the coarsest other axis" in p.why["target_spacing"]


def test_anisotropic_spacing_with_many_slices_keeps_the_median():
    f = fp(3, ["CT"], [[200, 256, 256]] * 5, [[3.0 + 0.2 * i, 0.7, 0.7] for i in range(5)])
    p = make_plan(f)
    assert p.target_spacing[0] == pytest.approx(3.4) and "the median is kept" in p.why["target_spacing"]


def test_2d_plan_lists_have_two_axes():
    p = make_plan(IMAGES_2D)
    assert all(len(s) == 2 for s in p.strides + p.kernel_sizes)
    assert p.augmentation["rotation"] == {"p": 0.2, "degrees": [-180.0, 180.0]}
    assert p.augmentation["mirror"]["axes"] == ["y", "x"] and p.axes == ("y", "x")
    assert p.features[-1] <= 512


def test_pooling_stops_at_4_voxels_and_waits_for_coarse_axes():
    strides, kernels = pooling([32, 64, 64], [3.6, 0.8, 0.8])  # z 4.5x, then 2.25x, then 1.1x
    assert strides == [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 1, 1]]
    assert kernels[0] == [1, 3, 3] and kernels[1] == [1, 3, 3] and kernels[2] == [3, 3, 3]
    strides, _ = pooling([8, 8, 8], [1, 1, 1])
    assert strides == [[1, 1, 1], [2, 2, 2]]


def test_too_small_budget_says_raise_it_and_bad_budget_is_an_error():
    p = make_plan(ISO_CT, budget=0.01)
    assert "raise --budget" in p.why["patch_size"]
    for bad in (0, -5, "lots", float("nan")):
        with pytest.raises(CnnkitError, match="budget must be a positive number"):
            make_plan(ISO_CT, budget=bad)


def test_fingerprint_missing_keys_is_one_line():
    with pytest.raises(CnnkitError, match="fingerprint: missing spacings, intensity"):
        make_plan({"dims": 3, "channels": ["CT"], "classes": ["b", "f"], "shapes": [[1, 2, 3]]})


def test_fingerprint_of_shapes_volumes():
    vs = load_volumes("shapes-volumes", num_cases=12)
    f = fingerprint(vs)
    assert f["num_cases"] == 12 and f["dims"] == 3 and f["channels"] == ["CT"]
    assert len(f["shapes"]) == len(f["spacings"]) == 12 and f["shapes"] == f["shapes_before_crop"]
    st = f["intensity"][0]
    assert st["channel"] == "CT" and -200 < st["p00_5"] < st["mean"] < st["p99_5"] < 450
    assert st["min"] > -500  # foreground only: no air
    assert sum(f["class_fraction"].values()) == pytest.approx(1.0, abs=1e-5)
    assert f["class_cases"]["background"] == 12 and 0 < f["class_cases"]["sphere"] <= 12
    assert f["median_spacing"][0] > 2.5 and f["load"]["data"] == "shapes-volumes"
    assert fingerprint(vs) == f  # seeded samples
    p = make_plan(f)
    assert p.dataset == "shapes-volumes" and p.num_cases == 12 and p.classes == vs.classes
    assert math.prod(p.patch_size) <= 32 * 64 * 64 and p.batch_size >= 2
    assert p.kernel_sizes[0] == [1, 3, 3] and p.strides[1] == [1, 2, 2] and p.augmentation["dummy_2d"]


def test_default_budget_gives_a_cpu_sized_patch_for_shapes_volumes():
    p = make_plan(fingerprint(load_volumes("shapes-volumes")))
    assert all(a <= b for a, b in zip(p.patch_size, (32, 64, 64))) and p.batch_size == 2
