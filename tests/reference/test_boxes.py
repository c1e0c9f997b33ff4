"""NumPy box formats, IoU and NMS against torchvision.ops, float64."""
import numpy as np
import pytest
import torch
import torchvision.ops as ops

from cnnkit.reference.boxes import (FORMATS, batched_nms, box_area, box_convert, box_iou, cxcywh_to_xyxy, nms,
                                    xywh_to_xyxy, xyxy_to_cxcywh, xyxy_to_xywh)
from cnnkit.registry import CnnkitError

TOL = dict(rtol=1e-12, atol=1e-12)
T = torch.from_numpy


def random_boxes(n: int, rng, size: float = 100.0, max_side: float = 40.0) -> np.ndarray:
    """n valid xyxy boxes inside a size x size image (many overlapping pairs)."""
    xy = rng.uniform(0, size - max_side, (n, 2))
    wh = rng.uniform(1, max_side, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def distinct_scores(n: int, rng) -> np.ndarray:
    """Scores with no ties (a random permutation of evenly spaced values), so the order is unique."""
    return (rng.permutation(n) + rng.uniform(0.1, 0.9)) / n


def degenerate_boxes() -> np.ndarray:
    """Zero width, zero height and a point, all inside the image."""
    return np.array([[10.0, 10.0, 10.0, 30.0], [5.0, 20.0, 40.0, 20.0], [15.0, 15.0, 15.0, 15.0]])


@pytest.mark.parametrize("out_fmt", FORMATS)
@pytest.mark.parametrize("in_fmt", FORMATS)
def test_box_convert_matches_torchvision(in_fmt, out_fmt):
    b = np.random.default_rng(0).uniform(0, 50, (7, 4))
    np.testing.assert_allclose(box_convert(b, in_fmt, out_fmt), ops.box_convert(T(b), in_fmt, out_fmt).numpy(), **TOL)


def test_named_conversions_and_round_trips():
    rng = np.random.default_rng(1)
    b = random_boxes(9, rng)
    np.testing.assert_allclose(xyxy_to_xywh(b), ops.box_convert(T(b), "xyxy", "xywh").numpy(), **TOL)
    np.testing.assert_allclose(xyxy_to_cxcywh(b), ops.box_convert(T(b), "xyxy", "cxcywh").numpy(), **TOL)
    np.testing.assert_allclose(xywh_to_xyxy(xyxy_to_xywh(b)), b, **TOL)
    np.testing.assert_allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b, **TOL)
    np.testing.assert_allclose(box_convert(box_convert(b, "xyxy", "cxcywh"), "cxcywh", "xywh"), xyxy_to_xywh(b),
                               **TOL)
    np.testing.assert_array_equal(xyxy_to_cxcywh(np.array([[0.0, 0.0, 4.0, 2.0]])), [[2.0, 1.0, 4.0, 2.0]])


def test_conversions_of_empty_and_degenerate_boxes():
    empty = np.zeros((0, 4))
    for i in FORMATS:
        for o in FORMATS:
            assert box_convert(empty, i, o).shape == (0, 4)
    d = degenerate_boxes()
    np.testing.assert_allclose(xyxy_to_xywh(d), ops.box_convert(T(d), "xyxy", "xywh").numpy(), **TOL)
    np.testing.assert_allclose(xyxy_to_cxcywh(d), ops.box_convert(T(d), "xyxy", "cxcywh").numpy(), **TOL)


def test_bad_inputs_raise():
    with pytest.raises(CnnkitError, match="format"):
        box_convert(np.zeros((1, 4)), "xyxy", "yolo")
    with pytest.raises(CnnkitError, match=r"\(N, 4\)"):
        box_iou(np.zeros((3,)), np.zeros((1, 4)))
    with pytest.raises(CnnkitError, match="scores"):
        nms(np.zeros((2, 4)), np.zeros(3), 0.5)


def test_box_area_matches_torchvision():
    b = np.concatenate([random_boxes(6, np.random.default_rng(2)), degenerate_boxes()])
    np.testing.assert_allclose(box_area(b), ops.box_area(T(b)).numpy(), **TOL)
    assert box_area(np.zeros((0, 4))).shape == (0,)


def test_box_iou_matches_torchvision():
    rng = np.random.default_rng(3)
    a, b = random_boxes(12, rng), random_boxes(9, rng)
    iou = box_iou(a, b)
    assert iou.shape == (12, 9) and 0 < iou.max() <= 1 and iou.min() == 0  # overlapping and disjoint pairs
    np.testing.assert_allclose(iou, ops.box_iou(T(a), T(b)).numpy(), **TOL)
    np.testing.assert_allclose(np.diag(box_iou(a, a)), 1.0, **TOL)


def test_box_iou_hand_computed():
    a = np.array([[0.0, 0.0, 2.0, 2.0]])
    b = np.array([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 4.0, 2.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 1.0, 1.0]])
    # overlap 1x1 of union 4 + 4 - 1; touching edge; disjoint; inside (1 / 4)
    np.testing.assert_allclose(box_iou(a, b), [[1 / 7, 0.0, 0.0, 0.25]], **TOL)


def test_box_iou_empty_inputs():
    b = random_boxes(5, np.random.default_rng(4))
    empty = np.zeros((0, 4))
    assert box_iou(empty, b).shape == (0, 5) == tuple(ops.box_iou(T(empty), T(b)).shape)
    assert box_iou(b, empty).shape == (5, 0)
    assert box_iou(empty, empty).shape == (0, 0)


def test_box_iou_degenerate_boxes():
    d, b = degenerate_boxes(), random_boxes(6, np.random.default_rng(5), size=50)
    np.testing.assert_allclose(box_iou(d, b), ops.box_iou(T(d), T(b)).numpy(), **TOL)  # all 0: no area
    assert (box_iou(d, b) == 0).all()
    ours, tv = box_iou(d, d), ops.box_iou(T(d), T(d)).numpy()
    assert (ours == 0).all() and np.isnan(tv).all()  # empty union: 0 here, torchvision's 0 / 0 is NaN


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("n", [1, 8, 60])
def test_nms_matches_torchvision(n, threshold):
    rng = np.random.default_rng(n)
    b, s = random_boxes(n, rng), distinct_scores(n, rng)
    keep = nms(b, s, threshold)
    ref = ops.nms(T(b), T(s), threshold).numpy()
    np.testing.assert_array_equal(keep, ref)
    assert keep.dtype == np.int64 and (np.diff(s[keep]) < 0).all()  # best first


def test_nms_suppresses_only_above_the_threshold():
    b = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [20.0, 20.0, 30.0, 30.0]])
    s = np.array([0.9, 0.8, 0.7])
    # box 1 has IoU exactly 0.5 with box 0: kept at 0.5, suppressed below
    np.testing.assert_array_equal(nms(b, s, 0.5), [0, 1, 2])
    np.testing.assert_array_equal(nms(b, s, 0.49), [0, 2])


def test_nms_empty_and_degenerate():
    keep = nms(np.zeros((0, 4)), np.zeros(0), 0.5)
    assert keep.shape == (0,) and keep.dtype == np.int64
    assert ops.nms(torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.float64), 0.5).numel() == 0
    rng = np.random.default_rng(6)
    b = np.concatenate([random_boxes(10, rng, size=50), degenerate_boxes()])
    s = distinct_scores(len(b), rng)
    np.testing.assert_array_equal(nms(b, s, 0.4), ops.nms(T(b), T(s), 0.4).numpy())
    assert set(range(10, 13)) <= set(nms(b, s, 0.4).tolist())  # degenerate boxes overlap nothing: all kept


@pytest.mark.parametrize("threshold", [0.3, 0.6])
def test_batched_nms_matches_torchvision(threshold):
    rng = np.random.default_rng(7)
    b, s = random_boxes(80, rng, size=80), distinct_scores(80, rng)
    c = rng.integers(0, 4, 80)
    keep = batched_nms(b, s, c, threshold)
    np.testing.assert_array_equal(keep, ops.batched_nms(T(b), T(s), T(c), threshold).numpy())
    assert len(keep) > len(nms(b, s, threshold))  # other classes do not suppress
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), 0.5).shape == (0,)
