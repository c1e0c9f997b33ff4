"""Batch augmentation: each op against an oracle (slicing, NumPy padding, torch.flip / rot90,
torchvision's functional ops, torch.distributions), plus determinism, layouts and parsing."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from cnnkit.data.augment import (PRESETS, AugmentConfig, BatchAugment, color_jitter, crop_windows, erase_boxes,
                                 parse_augment, rotate, sample_beta)
from cnnkit.registry import CnnkitError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ALL_ON = "crop=2,hflip=0.5,vflip=0.5,rotation=20,jitter=0.4,erase=0.5,cutmix=1.0,mixup=0.4"


def gen(seed, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def batch(B=8, C=3, H=12, W=12, device="cpu", seed=0):
    g = gen(seed)
    return torch.rand(B, C, H, W, generator=g).to(device), torch.randint(0, 10, (B,), generator=g).to(device)


# ----------------------------------------------------------------------------- parsing

def test_parse_presets_specs_and_aliases():
    assert parse_augment(None) == parse_augment("none") == AugmentConfig()
    assert parse_augment("light") == AugmentConfig(crop_padding=4, hflip=0.5)
    assert parse_augment("standard,erase=0") == PRESETS["light"]            # preset, then override
    c = parse_augment("crop=3, hflip=0.5 ,cutmix=1.0,jitter=0.1")
    assert (c.crop_padding, c.hflip, c.cutmix, c.color_jitter) == (3, 0.5, 1.0, 0.1)
    assert isinstance(c.crop_padding, int)
    assert parse_augment({"crop_padding": 2, "mixup": 0.2}) == AugmentConfig(crop_padding=2, mixup=0.2)
    s = PRESETS["strong"]
    assert parse_augment(s) == s and parse_augment(s) is not s
    assert not BatchAugment(parse_augment("none"), 10).active
    assert not BatchAugment(parse_augment("cutmix=1,mix_prob=0"), 10).active
    for name in PRESETS:
        assert BatchAugment(PRESETS[name], 10).active == (name != "none")


@pytest.mark.parametrize("spec, words", [
    ("hfilp=0.5", ["hflip"]), ("strnog", ["strong"]), ({"cutmx": 1}, ["cutmix"]),
    ("hflip=1.5", ["hflip", "[0, 1]"]), ("crop=-1", ["crop_padding"]), ("crop=2.5", ["crop_padding"]),
    ("rotation=200", ["rotation"]), ("cutmix=-1", ["cutmix"]), ("jitter=2", ["color_jitter"]),
    ("hflip=abc", ["hflip", "number"]), ("light,strong", ["key=value"]), ("mix_prob=nan", ["mix_prob"]),
])
def test_parse_errors(spec, words):
    with pytest.raises(CnnkitError) as e:
        parse_augment(spec)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


# ----------------------------------------------------------------------------- the module

@pytest.mark.parametrize("device", DEVICES)
def test_shapes_dtypes_devices_and_determinism(device):
    aug = BatchAugment(parse_augment(ALL_ON), num_classes=10)
    for dtype in (torch.float32, torch.float64):
        x, y = batch(device=device)
        x = x.to(dtype)
        x1, y1 = aug(x, y, gen(1, device))
        x2, y2 = aug(x, y, gen(1, device))
        x3, _ = aug(x, y, gen(2, device))
        assert x1.shape == x.shape and x1.dtype == dtype and x1.device == x.device
        assert y1.shape == (8, 10) and y1.is_floating_point() and y1.device == x.device
        torch.testing.assert_close(y1.sum(1), torch.ones(8, dtype=y1.dtype, device=device))
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert not torch.equal(x1, x3)
        assert 0 <= x1.min() and x1.max() <= 1
    # no mixing configured: labels come back untouched
    x, y = batch(device=device)
    _, y4 = BatchAugment(PRESETS["standard"], 10)(x, y, gen(0, device))
    assert y4 is y


def test_channels_last_matches_contiguous():
    aug = BatchAugment(parse_augment(ALL_ON), num_classes=10)
    x, y = batch()
    xc = x.contiguous(memory_format=torch.channels_last)
    a, ya = aug(x, y, gen(5))
    b, yb = aug(xc, y, gen(5))
    assert b.is_contiguous(memory_format=torch.channels_last) and a.is_contiguous()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert torch.equal(ya, yb)


def test_flip_probability_one_is_torch_flip():
    x, y = batch(H=6, W=9)
    out = lambda spec: BatchAugment(parse_augment(spec), 10)(x, y, gen(0))[0]  # noqa: E731
    assert torch.equal(out("hflip=1"), torch.flip(x, [-1]))
    assert torch.equal(out("vflip=1"), torch.flip(x, [-2]))
    assert torch.equal(out("hflip=1,vflip=1"), torch.flip(x, [-2, -1]))
    half = out("hflip=0.5")
    flipped = [torch.equal(half[i], x[i].flip(-1)) for i in range(8)]
    kept = [torch.equal(half[i], x[i]) for i in range(8)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_crop_is_a_window_of_the_reflect_padded_input():
    p, H, W = 3, 7, 9
    x, y = batch(B=16, H=H, W=W)
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect"))
    out, _ = BatchAugment(AugmentConfig(crop_padding=p), 10)(x, y, gen(3))
    offsets = set()
    for i in range(16):
        hits = [(t, l) for t in range(2 * p + 1) for l in range(2 * p + 1)
                if torch.equal(out[i], padded[i, :, t:t + H, l:l + W])]
        assert hits, f"sample {i} is not a window of the padded image"
        offsets.add(hits[0])
    assert len(offsets) > 4  # offsets are per sample
    # with given offsets: exactly the slice
    top, left = torch.tensor([0, 6, 2, 5] * 4), torch.tensor([6, 0, 3, 1] * 4)
    ref = torch.stack([padded[i, :, top[i]:top[i] + H, left[i]:left[i] + W] for i in range(16)])
    assert torch.equal(crop_windows(x, p, top, left), ref)
    with pytest.raises(CnnkitError, match="crop_padding"):
        crop_windows(x, 7, top, left)


def test_rotate_against_rot90_flip_and_torchvision():
    x, _ = batch(B=4, H=10, W=10)
    torch.testing.assert_close(rotate(x, torch.zeros(4)), x, rtol=0, atol=1e-6)
    torch.testing.assert_close(rotate(x, torch.full((4,), 90.0)), torch.rot90(x, 1, (2, 3)), rtol=0, atol=1e-5)
    xr, _ = batch(B=2, H=6, W=11)  # non-square: 180 degrees is both flips
    torch.testing.assert_close(rotate(xr, torch.full((2,), 180.0)), xr.flip(-2, -1), rtol=0, atol=1e-5)
    deg = torch.tensor([17.0, -33.0])  # arbitrary angles, per sample, against torchvision
    ref = torch.stack([TF.rotate(xr[i], float(deg[i]), interpolation=TF.InterpolationMode.BILINEAR)
                       for i in range(2)])
    torch.testing.assert_close(rotate(xr, deg), ref, rtol=0, atol=1e-5)
    # the module draws angles in [-r, r]: a tiny range barely moves the pixels, r=0 is off
    xm, ym = batch(B=4, H=10, W=10)
    small, _ = BatchAugment(AugmentConfig(rotation=0.5), 10)(xm, ym, gen(0))
    big, _ = BatchAugment(AugmentConfig(rotation=45), 10)(xm, ym, gen(0))
    inner = (slice(None), slice(None), slice(3, 7), slice(3, 7))
    assert (small - xm)[inner].abs().max() < 0.1 < (big - xm)[inner].abs().max()


@pytest.mark.parametrize("C", [3, 1])
def test_color_jitter_against_torchvision(C):
    x, y = batch(B=4, C=C, H=5, W=6)
    b, c, s = torch.tensor([0.6, 1.4, 1.0, 0.9]), torch.tensor([1.3, 0.7, 1.0, 1.2]), torch.tensor([0.5, 1.5, 1.0, 0.0])
    ref = torch.stack([TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[i], float(b[i])), float(c[i])),
                                            float(s[i])) for i in range(4)])
    torch.testing.assert_close(color_jitter(x, b, c, s), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(color_jitter(x, torch.ones(4), torch.ones(4), torch.ones(4)), x, rtol=0, atol=1e-6)
    out, _ = BatchAugment(AugmentConfig(color_jitter=1.0), 10)(x, y, gen(0))
    assert 0 <= out.min() and out.max() <= 1 and not torch.allclose(out, x)


def test_erase_fills_a_box_with_the_channel_mean():
    x, y = batch(B=4, H=8, W=8)
    top, left, h, w = (torch.tensor(v) for v in ([1, 0, 3, 2], [2, 0, 5, 1], [3, 8, 0, 2], [4, 8, 2, 1]))
    ref = x.clone()
    for i in range(4):
        ref[i, :, top[i]:top[i] + h[i], left[i]:left[i] + w[i]] = x[i].mean((1, 2)).view(3, 1, 1)
    assert torch.equal(erase_boxes(x, top, left, h, w), ref)
    out, _ = BatchAugment(AugmentConfig(erase=1.0), 10)(x, y, gen(0))
    changed = (out != x).any(1)                                   # (B, H, W)
    for i in range(4):                                            # one solid rectangle per image
        rows, cols = changed[i].any(1), changed[i].any(0)
        assert rows.any() and torch.equal(changed[i], rows[:, None] & cols[None, :])


def _partners(yt):
    """With labels arange(B) (a class per sample), the partner of i is its other target column."""
    B = yt.shape[0]
    other = yt.clone()
    other[torch.arange(B), torch.arange(B)] = 0
    return torch.where(other.amax(1) > 0, other.argmax(1), torch.arange(B))


def test_cutmix_box_pixels_and_targets():
    B = 8
    x, _ = batch(B=B, H=10, W=14)
    y = torch.arange(B)
    aug = BatchAugment(AugmentConfig(cutmix=1.0), num_classes=B)
    seen = 0
    for seed in range(6):
        out, yt = aug(x, y, gen(seed))
        torch.testing.assert_close(yt.sum(1), torch.ones(B))
        j = _partners(yt)
        assert sorted(j.tolist()) == list(range(B))               # a permutation
        box = (out != x).any(1).any(0)                            # (H, W) pasted region, shared by the batch
        lam = 1 - box.float().mean()
        for i in range(B):                                        # pixels come from x[i] outside, x[j] inside
            assert torch.equal(out[i], torch.where(box, x[j[i]], x[i]))
            if j[i] != i:
                assert abs(float(yt[i, i]) - float(lam)) < 1e-6 and abs(float(yt[i, j[i]]) - (1 - float(lam))) < 1e-6
        if box.any():
            rows, cols = box.any(1), box.any(0)
            assert torch.equal(box, rows[:, None] & cols[None, :])  # a rectangle
            seen += 1
    assert seen >= 3


def test_mixup_blend_and_targets():
    B = 8
    x, _ = batch(B=B)
    y = torch.arange(B)
    out, yt = BatchAugment(AugmentConfig(mixup=0.4), num_classes=B)(x, y, gen(0))
    j = _partners(yt)
    i = int(torch.nonzero(j != torch.arange(B))[0])
    lam = float(yt[i, i])
    torch.testing.assert_close(yt.sum(1), torch.ones(B))
    torch.testing.assert_close(out, lam * x + (1 - lam) * x[j], rtol=0, atol=1e-6)


def test_mix_prob_and_cutmix_or_mixup_per_batch():
    x, y = batch()
    kinds = set()
    aug = BatchAugment(AugmentConfig(cutmix=1.0, mixup=1.0, mix_prob=0.6), 10)
    for seed in range(16):
        out, yt = aug(x, y, gen(seed))
        if yt.dtype == torch.int64:
            kinds.add("none")
            assert torch.equal(out, x) and yt is y
            continue
        changed = (out != x).any(1)                               # (B, H, W)
        moved = changed.any(2).any(1)                             # samples not paired with themselves
        # MixUp blends every pixel of a moved sample; CutMix only those in the box
        kinds.add("mixup" if changed[moved].all() else "cutmix")
    assert kinds == {"none", "cutmix", "mixup"}


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.5])
def test_sample_beta_matches_torch_distributions(alpha):
    n = 20000
    a = sample_beta(alpha, n, gen(0)).sort().values.double()
    b = torch.distributions.Beta(alpha, alpha).sample((n,)).sort().values.double()
    grid = torch.linspace(0, 1, 201, dtype=torch.float64)
    ks = (torch.searchsorted(a, grid) - torch.searchsorted(b, grid)).abs().max().item() / n
    assert ks < 0.025, ks                                         # two-sample KS, ~p < 1e-3
    assert ((a >= 0) & (a <= 1)).all()                            # no NaN from 0 / 0 at small alpha
    assert torch.equal(sample_beta(alpha, 5, gen(7)), sample_beta(alpha, 5, gen(7)))


def test_bad_inputs_are_user_errors():
    x, y = batch()
    aug = BatchAugment(AugmentConfig(mixup=1.0), 10)
    with pytest.raises(CnnkitError, match="integer class labels"):
        aug(x, F.one_hot(y, 10).float(), gen(0))
    with pytest.raises(CnnkitError, match="float images"):
        aug((x * 255).to(torch.uint8), y, gen(0))
