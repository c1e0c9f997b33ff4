"""The shapes world: determinism, formats, balance, exact geometry and targets that match pixels."""
import math

import numpy as np
import pytest
import torch
from matplotlib.path import Path
from torchvision.ops import masks_to_boxes

from cnnkit.data import shapes
from cnnkit.data.shapes import (KEYPOINTS_PER_CLASS, NUM_KEYPOINTS, SHAPE_CLASSES, Scene,
                                make_classification, make_scenes, render_scene)
from cnnkit.data.shapes_geometry import SHAPES, pixel_grid, polygon_sdf, shape_sdf, to_pixels
from cnnkit.registry import CnnkitError

C = len(SHAPE_CLASSES)


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(24, seed=3, size=48)


def test_classification_formats():
    x, y = make_classification(16, seed=1)
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.uint8
    assert y.shape == (16,) and y.dtype == torch.int64 and 0 <= y.min() and y.max() < C
    g, yg = make_classification(5, seed=1, size=20, channels=1)
    assert g.shape == (5, 1, 20, 20) and torch.equal(yg, y[:5])
    big, _ = make_classification(2, size=57)
    assert big.shape == (2, 3, 57, 57)
    assert x.float().std() > 20  # real images, not a constant fill
    assert len(SHAPE_CLASSES) >= 8 and len(set(SHAPE_CLASSES)) == C
    assert [len(shapes.KEYPOINT_NAMES[c]) for c in SHAPE_CLASSES] == list(KEYPOINTS_PER_CLASS)


def test_classification_is_a_function_of_seed_and_index():
    x, y = make_classification(24, seed=5)
    xs, ys = make_classification(6, seed=5, offset=10)
    assert torch.equal(xs, x[10:16]) and torch.equal(ys, y[10:16])
    x1, y1 = make_classification(1, seed=5, offset=23)
    assert torch.equal(x1[0], x[23]) and y1[0] == y[23]
    again, _ = make_classification(24, seed=5)
    assert torch.equal(again, x)
    other, _ = make_classification(24, seed=6)
    differs = (other.float() - x.float()).abs().flatten(1).mean(1) > 5
    assert differs.all()
    # the grey image is the luminance of the same drawing: same labels, same layout
    g, _ = make_classification(24, seed=5, channels=1)
    luma = (x.float() * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1)
    assert (g[:, 0].float() - luma).abs().mean() < 8  # only the noise draw differs


def test_classification_balance_and_every_class():
    _, y = make_classification(8 * C, seed=2, offset=3 * C)  # whole aligned blocks
    assert torch.bincount(y, minlength=C).tolist() == [8] * C
    _, y2 = make_classification(8 * C, seed=9, offset=3 * C)
    assert not torch.equal(y, y2)  # the order within blocks is seeded, not index % C


def _random_polygons(n: int, gen: torch.Generator) -> list:
    """Star, cross, arrow and triangle outlines at random poses in a 24 x 24 pixel frame."""
    out = []
    for name in ("star", "cross", "arrow", "triangle"):
        v = SHAPES[name].vertices
        c = 4 + 16 * torch.rand(n, 2, generator=gen)
        r = 3 + 8 * torch.rand(n, generator=gen)
        th = 2 * math.pi * torch.rand(n, generator=gen)
        out += list(to_pixels(v, c, r, th).double())
    return out


def test_polygon_sdf_against_matplotlib_and_dense_boundary():
    gen = torch.Generator().manual_seed(0)
    polys = _random_polygons(4, gen)  # 16 x (V, 2)
    px, py = torch.rand(2, 200, generator=gen, dtype=torch.float64) * 24
    sdf = torch.cat([polygon_sdf(p[None], px, py) for p in polys])  # different V per shape
    pts = torch.stack([px, py], 1).numpy()
    for p, d in zip(polys, sdf):
        inside = Path(p.numpy()).contains_points(pts)
        assert np.array_equal(inside, (d < 0).numpy())
        # distance to a densely sampled boundary (spacing <= 0.03 px: error <= 0.015)
        a, b = p.numpy(), p.roll(-1, 0).numpy()
        t = np.linspace(0, 1, 500)[:, None, None]
        boundary = (a + (b - a) * t).reshape(-1, 2)
        dense = np.sqrt(((pts[:, None] - boundary[None]) ** 2).sum(-1)).min(1)
        assert np.allclose(d.abs().numpy(), dense, atol=0.02)


def test_circle_and_ring_sdf():
    px, py = torch.tensor([10.0, 10.0, 16.0, 10.0]), torch.tensor([10.0, 15.0, 10.0, 2.0])
    center, r = torch.tensor([[10.0, 10.0]]), torch.tensor([6.0])
    ring = SHAPE_CLASSES.index("ring")
    d = shape_sdf(torch.tensor([SHAPE_CLASSES.index("circle")]), center, r, torch.zeros(1),
                  px, py, SHAPE_CLASSES)[0]
    assert torch.allclose(d, torch.tensor([-6.0, -1.0, 0.0, 2.0]), atol=1e-5)
    d = shape_sdf(torch.tensor([ring]), center, r, torch.zeros(1), px, py, SHAPE_CLASSES)[0]
    inner = 6 * SHAPES["ring"].inner
    assert torch.allclose(d, torch.tensor([inner, -min(5 - inner, 1.0), 0.0, 2.0]), atol=1e-5)


def test_scene_formats(scenes):
    for s in scenes:
        k = len(s.labels)
        assert isinstance(s, Scene) and 1 <= k <= 4
        assert s.image.shape == (3, 48, 48) and s.image.dtype == torch.uint8
        assert s.labels.dtype == torch.int64 and s.boxes.shape == (k, 4)
        assert s.masks.shape == (k, 48, 48) and s.masks.dtype == torch.bool
        assert s.semantic.shape == (48, 48) and s.semantic.dtype == torch.int64
        assert s.keypoints.shape == (k, NUM_KEYPOINTS, 3)
    one = render_scene(0, 7, size=40, channels=1, num_objects=3)
    assert one.image.shape == (1, 40, 40) and len(one.labels) == 3
    assert set(torch.cat([s.labels for s in make_scenes(20, seed=1)]).tolist()) == set(range(C))


def test_scene_determinism():
    a = make_scenes(3, seed=4, offset=5)
    b = render_scene(4, 6)
    for f in ("image", "labels", "boxes", "masks", "semantic", "keypoints"):
        assert torch.equal(getattr(a[1], f), getattr(b, f))
    assert not torch.equal(a[0].image, a[1].image)
    assert not torch.equal(render_scene(5, 6).image, b.image)


def test_masks_semantic_and_boxes_are_consistent(scenes):
    occluded = 0
    for s in scenes:
        assert s.masks.flatten(1).any(1).all()  # every object keeps visible pixels
        assert s.masks.sum(0).max() <= 1  # visible masks are disjoint
        expect = (s.masks.long() * (s.labels + 1)[:, None, None]).sum(0)
        assert torch.equal(s.semantic, expect)
        # box = tight bounding box of the visible mask, in pixel-edge coordinates
        assert torch.equal(s.boxes, masks_to_boxes(s.masks) + torch.tensor([0, 0, 1, 1]))
        occluded += int((s.keypoints[..., 2] == 1).sum())
    assert occluded > 0  # the fixture does exercise occlusion


def test_keypoints(scenes):
    for s in scenes:
        for k, lab in enumerate(s.labels.tolist()):
            kp, n = s.keypoints[k], KEYPOINTS_PER_CLASS[lab]
            assert (kp[n:] == 0).all() and (kp[:n, 2] > 0).all()
            assert ((kp[:n, :2] >= 0) & (kp[:n, :2] <= 48)).all()
            for x, y, v in kp[:n].tolist():
                # a hidden keypoint lies in (or touches) a pixel of a later object
                i, j = min(int(y), 47), min(int(x), 47)
                near = s.masks[k + 1:, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].any()
                if v == 1:
                    assert near
                if k == len(s.labels) - 1:
                    assert v == 2  # nothing is drawn over the last object
            _check_keypoint_order(SHAPE_CLASSES[lab], kp[:n, :2], shapes.ROTATION)


def _check_keypoint_order(name: str, kp: torch.Tensor, rotation: float) -> None:
    """Keypoint 0 stays within the rotation range of its upright position (and within half a
    symmetry period, so it is always the same visible part); the others follow clockwise."""
    if name not in ("square", "triangle", "star", "cross", "diamond"):
        return  # centre = mean of keypoints only for these
    rel = kp - kp.mean(0)
    ref = SHAPES[name].keypoints[0]
    turn = math.degrees(math.atan2(float(rel[0, 0]), float(-rel[0, 1]))
                        - math.atan2(float(ref[0]), float(-ref[1])))
    turn = (turn + 180) % 360 - 180
    assert abs(turn) <= min(rotation, 180 / SHAPES[name].symmetry) + 1e-3
    cross = rel[:, 0] * rel.roll(-1, 0)[:, 1] - rel[:, 1] * rel.roll(-1, 0)[:, 0]
    assert (cross > 0).all()


def test_rotation_range():
    for rot in (0.0, 35.0, 180.0):
        for s in make_scenes(6, seed=2, size=48, rotation=rot):
            for kp, lab in zip(s.keypoints, s.labels.tolist()):
                _check_keypoint_order(SHAPE_CLASSES[lab], kp[:KEYPOINTS_PER_CLASS[lab], :2], rot)


def test_objects_contrast_with_their_surroundings(scenes):
    """Masks follow the pixels: an object's interior differs from the background around it."""
    for s in scenes:
        grey = (s.image.float() * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0)
        bg = s.semantic == 0
        pool = torch.nn.functional.max_pool2d
        for k in range(len(s.labels)):
            m = s.masks[k][None, None].float()
            interior = (-pool(-m, 3, 1, 1))[0, 0] > 0  # eroded by one pixel
            if interior.sum() < 4:
                continue
            ring = (pool(m, 9, 1, 4)[0, 0] > 0) & (pool(m, 3, 1, 1)[0, 0] == 0) & bg
            if ring.sum() < 4:
                continue
            gap = (grey[interior].median() - grey[ring].median()).abs()
            assert gap > 0.15 * 255


def test_errors():
    with pytest.raises(CnnkitError):
        make_classification(4, channels=2)
    with pytest.raises(CnnkitError):
        make_classification(4, size=4)
    with pytest.raises(CnnkitError):
        render_scene(0, 0, num_objects=(3, 1))
    with pytest.raises(CnnkitError):
        make_scenes(2, num_objects=0)
    with pytest.raises(CnnkitError):
        make_classification(2, rotation=-5)


def test_classification_shape_geometry_matches_pixels():
    """One-object images: the shape found by the renderer's own geometry is where the pixels
    differ from the background (so labels point at what is drawn)."""
    x, y = make_classification(16, seed=8, channels=1)
    idx = np.arange(16)
    bg = shapes._sample_background(shapes.uniforms(shapes.hash_keys(8, idx, shapes._BG), 22), 32)
    ob = shapes._sample_objects(shapes.uniforms(shapes.hash_keys(8, idx, shapes._OBJ), 12), y,
                                bg["lum"], 32, shapes.CLASSIFICATION_SCALE, shapes.ROTATION)
    px, py = pixel_grid(32)
    sdf = shape_sdf(y, ob["center"], ob["radius"], ob["theta"], px, py, SHAPE_CLASSES)
    for img, d, lum in zip(x[:, 0].float().flatten(1), sdf, ob["lum"]):
        inner, outer = img[d < -1.5], img[d > 1.5]
        assert (inner.median() - lum.item() * 255).abs() < 0.1 * 255
        assert (inner.median() - outer.median()).abs() > 0.2 * 255


def test_antialiasing_approximates_area_coverage():
    """White shapes on black, no noise: pixel value / 255 ~ the fraction of the pixel covered,
    measured independently by 8 x 8 supersampling with matplotlib's point-in-polygon test."""
    from cnnkit.data.shapes_geometry import render

    n, size = 4, 24
    zeros = torch.zeros(n, 3)
    bg = dict(colour_a=zeros, colour_b=zeros, freq=torch.zeros(n, 3, 2), amp=torch.zeros(n, 3),
              phase=torch.zeros(n, 3), noise=torch.zeros(n))
    names = ("star", "cross", "arrow", "triangle")
    ob = dict(label=torch.tensor([SHAPE_CLASSES.index(k) for k in names]),
              center=torch.tensor([[12.3, 11.7], [11.6, 12.2], [12.0, 12.4], [12.5, 11.5]]),
              radius=torch.tensor([9.3, 8.7, 10.1, 7.9]), theta=torch.tensor([0.3, 1.1, 2.0, -0.4]),
              colour=torch.ones(n, 3), shade=torch.zeros(n, 2))
    img, _ = render(bg, [ob], size, 3, np.zeros(n, dtype=np.uint64), SHAPE_CLASSES)
    sub = (np.arange(8) + 0.5) / 8
    xs = np.add.outer(np.arange(size), sub).ravel()  # 8 sample coordinates per pixel
    gx, gy = np.meshgrid(xs, xs)
    for i, name in enumerate(names):
        verts = to_pixels(SHAPES[name].vertices, ob["center"][i:i + 1], ob["radius"][i:i + 1],
                          ob["theta"][i:i + 1])[0].double().numpy()
        cover = Path(verts).contains_points(np.stack([gx.ravel(), gy.ravel()], 1))
        cover = cover.reshape(size, 8, size, 8).mean((1, 3))
        got = img[i, 0].double().numpy() / 255
        edge = (cover > 0) & (cover < 1)
        assert np.abs(got - cover)[edge].mean() < 0.06  # measured ~0.03
        assert np.abs(got - cover).max() < 0.4  # sharp corners: measured <= 0.33
