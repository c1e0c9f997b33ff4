"""Fast multi-object scenes: exact targets, occlusion rules, determinism per (seed, index)."""
import numpy as np
import pytest
import torch
from torchvision.ops import masks_to_boxes

from cnnkit.data import scenes
from cnnkit.data.scenes import MIN_PIXELS, MIN_VISIBLE, make_scene_batch
from cnnkit.data.shapes import KEYPOINTS_PER_CLASS, NUM_KEYPOINTS, SHAPE_CLASSES
from cnnkit.data.targets import ObjectTargets
from cnnkit.registry import CnnkitError


@pytest.fixture(scope="module")
def batch():
    return make_scene_batch(96, seed=7)


def test_formats_and_ranges(batch):
    x, t = batch
    assert x.shape == (96, 3, 64, 64) and x.dtype == torch.uint8
    assert isinstance(t, ObjectTargets) and len(t) == 96
    m = int(t.starts[-1])
    assert t.boxes.shape == (m, 4) and t.boxes.dtype == torch.float32
    assert t.labels.dtype == torch.int64 and 0 <= t.labels.min() and t.labels.max() < len(SHAPE_CLASSES)
    assert t.masks.shape == (m, 64, 64) and t.masks.dtype == torch.bool
    assert t.keypoints.shape == (m, NUM_KEYPOINTS, 3)
    counts = t.counts()
    assert counts.min() >= 1 and counts.max() <= 4
    assert len(counts.unique()) >= 3  # 1-4 objects, not a fixed number
    assert len(t.labels.unique()) == len(SHAPE_CLASSES)
    assert x.float().std() > 20


def test_boxes_are_the_bounding_boxes_of_the_visible_masks(batch):
    _, t = batch
    expect = masks_to_boxes(t.masks)
    expect[:, 2:] += 1  # pixel edges: the last pixel's right / bottom edge
    assert torch.equal(t.boxes, expect)
    assert (t.boxes[:, 2:] > t.boxes[:, :2]).all()


def test_masks_disjoint_big_enough_and_visible_enough():
    with scenes._one_thread():
        x, t, fraction = scenes._chunk(11, np.arange(300), 64, 3, 1, 4, 20.0)
    cover = torch.zeros(300, 64, 64, dtype=torch.long)
    cover.index_add_(0, t.image_index(), t.masks.long())
    assert cover.max() == 1  # disjoint: later shapes hide earlier ones
    pixels = t.masks.flatten(1).sum(1)
    assert pixels.min() >= MIN_PIXELS
    assert len(fraction) == len(pixels) and fraction.min() >= MIN_VISIBLE
    assert (fraction < 1).any()  # some occlusion does happen
    assert t.counts().min() >= 1


def test_a_function_of_seed_and_index_whatever_the_batch():
    x8, t8 = make_scene_batch(8, seed=4)
    x4, t4 = make_scene_batch(4, seed=4, offset=4)
    part = t8[4:8]
    assert torch.equal(x8[4:], x4)
    for key in ("boxes", "labels", "starts", "masks", "keypoints"):
        assert torch.equal(getattr(part, key), getattr(t4, key)), key
    # across a chunk boundary (128 images per pass at 64 px)
    xa, ta = make_scene_batch(140, seed=4, size=64)
    xb, tb = make_scene_batch(13, seed=4, offset=127)
    assert torch.equal(xa[127:], xb)
    assert torch.equal(ta[127:140].masks, tb.masks) and torch.equal(ta[127:140].keypoints, tb.keypoints)
    assert torch.equal(xa[:8], x8)
    x_other, _ = make_scene_batch(8, seed=5)
    assert not torch.equal(x_other, x8)


def test_keypoints(batch):
    _, t = batch
    kp = t.keypoints
    per_class = torch.tensor(KEYPOINTS_PER_CLASS)[t.labels]
    slots = torch.arange(NUM_KEYPOINTS)
    assert torch.equal(kp[..., 2] > 0, slots < per_class[:, None])  # padding is 0
    assert set(kp[..., 2].unique().tolist()) <= {0.0, 1.0, 2.0}
    seen = kp[..., 2] > 0
    assert (kp[..., 0][seen] >= 0).all() and (kp[..., 0][seen] <= 64).all()
    # only an object with a later one in its image can have hidden keypoints
    img = t.image_index()
    last = torch.zeros(len(img), dtype=torch.bool)
    last[t.starts[1:] - 1] = True
    assert not (kp[last, :, 2] == 1).any()
    # a seen keypoint lies within 3 px of the object's pixels, or of a later object's (a thin tip
    # can be hidden pixel by pixel while the exact point stays outside the later shape)
    for j, p in torch.nonzero(kp[..., 2] == 2).tolist()[:300]:
        later = t.masks[j:int(t.starts[img[j] + 1])].any(0)
        r0, c0 = int(kp[j, p, 1]), int(kp[j, p, 0])
        assert later[max(0, r0 - 3):r0 + 4, max(0, c0 - 3):c0 + 4].any()


def test_objects_stand_out_from_the_background():
    x, t = make_scene_batch(32, seed=2, channels=1)
    assert x.shape == (32, 1, 64, 64)
    any_obj = torch.zeros(32, 64, 64, dtype=torch.bool)
    any_obj.index_put_((t.image_index(),), t.masks, accumulate=True)
    img = x[:, 0].float() / 255
    own = t.masks.float()
    bg = (~any_obj).float()
    inside = (img[t.image_index()] * own).sum((1, 2)) / own.sum((1, 2))
    around = ((img * bg).sum((1, 2)) / bg.sum((1, 2)))[t.image_index()]
    assert ((inside - around).abs() > 0.15).all()


def test_object_counts_sizes_and_errors():
    x, t = make_scene_batch(20, seed=1, num_objects=1, size=32)
    assert x.shape == (20, 3, 32, 32) and t.counts().eq(1).all()
    _, t3 = make_scene_batch(20, seed=1, num_objects=(3, 3), rotation=0)
    assert t3.counts().float().mean() > 2.5 and t3.counts().max() == 3
    x0, t0 = make_scene_batch(0)
    assert x0.shape == (0, 3, 64, 64) and len(t0) == 0 and t0.masks.shape == (0, 64, 64)
    big, tb = make_scene_batch(3, size=96)
    assert big.shape == (3, 3, 96, 96) and tb.masks.shape[1:] == (96, 96)
    for bad in (dict(num_objects=(0, 2)), dict(num_objects=(3, 2)), dict(channels=2), dict(size=4),
                dict(rotation=200), dict(num_objects=(1, 500))):
        with pytest.raises(CnnkitError):
            make_scene_batch(2, **bad)


def test_targets_select_and_split(batch):
    _, t = batch
    sub = t[torch.tensor([5, 0])]
    assert torch.equal(sub.boxes, torch.cat([t[5].boxes, t[0].boxes]))
    d = t.per_image()[3]
    assert d["masks"].shape[0] == len(d["labels"]) == int(t.counts()[3])
