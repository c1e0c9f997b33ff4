"""Bounding boxes (guide §6.2): formats, IoU and non-maximum suppression, in plain NumPy.

Three ways to write the same box, all in pixels, x to the right and y down:

    xyxy     (x1, y1, x2, y2)   top-left and bottom-right corners    (torchvision, COCO results)
    xywh     (x1, y1, w, h)     top-left corner and size             (COCO annotations)
    cxcywh   (cx, cy, w, h)     centre and size                      (YOLO labels, box regression)

Intersection over union of boxes A and B:

    IoU(A, B) = |A n B| / |A u B| = inter / (area(A) + area(B) - inter)

1 for the same box, 0 for disjoint ones. It is the detector's yardstick three times over: matching
anchors to ground truth in training, removing duplicates at test time (NMS), and deciding whether a
detection counts as a hit in mAP (IoU >= 0.5, or 0.5:0.95 for COCO).

Greedy non-maximum suppression: a detector fires many overlapping boxes on each object; keep the
highest-scoring box, delete every remaining box that overlaps it by more than the threshold, and
repeat with the best of what is left. Class-wise NMS (`batched_nms`) does this separately per class,
so a cat box never suppresses a dog box.

Boxes are float arrays (N, 4); every function also takes N = 0. A box with x2 <= x1 or y2 <= y1 is
degenerate (a line or a point): its area is taken as 0, it overlaps nothing, and two of them have
IoU 0 (torchvision's 0 / 0 gives NaN there).
"""
from __future__ import annotations

import numpy as np

from ..registry import CnnkitError

FORMATS = ("xyxy", "xywh", "cxcywh")


def _check_boxes(boxes: np.ndarray, name: str = "boxes") -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64 if np.asarray(boxes).dtype.kind in "iub" else None)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise CnnkitError(f"{name} must have shape (N, 4), got {boxes.shape}")
    return boxes


# ---------------------------------------------------------------------------------- formats


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (x1, y1, w, h): w = x2 - x1, h = y2 - y1."""
    b = _check_boxes(boxes)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(x1, y1, w, h) -> (x1, y1, x2, y2): x2 = x1 + w, y2 = y1 + h."""
    b = _check_boxes(boxes)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (cx, cy, w, h): the centre is the corners' mean."""
    b = _check_boxes(boxes)
    return np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], axis=1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h) -> (x1, y1, x2, y2): half the size either side of the centre."""
    b = _check_boxes(boxes)
    half = b[:, 2:] / 2
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)


_TO_XYXY = {"xyxy": lambda b: _check_boxes(b).copy(), "xywh": xywh_to_xyxy, "cxcywh": cxcywh_to_xyxy}
_FROM_XYXY = {"xyxy": lambda b: b, "xywh": xyxy_to_xywh, "cxcywh": xyxy_to_cxcywh}


def box_convert(boxes: np.ndarray, in_fmt: str, out_fmt: str) -> np.ndarray:
    """Any format to any other, through xyxy (torchvision.ops.box_convert's names)."""
    for f in (in_fmt, out_fmt):
        if f not in FORMATS:
            raise CnnkitError(f"unknown box format {f!r}; known: {', '.join(FORMATS)}")
    return _FROM_XYXY[out_fmt](_TO_XYXY[in_fmt](boxes))


# ---------------------------------------------------------------------------------- IoU


def box_area(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> (N,) areas w * h; degenerate boxes (x2 < x1 or y2 < y1) count as 0."""
    b = _check_boxes(boxes)
    wh = np.clip(b[:, 2:] - b[:, :2], 0, None)
    return wh[:, 0] * wh[:, 1]


def box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4), (M, 4) xyxy -> (N, M) intersection areas.

    The intersection of two boxes is the box between the larger top-left corner and the smaller
    bottom-right corner; when they do not overlap its width or height is negative, clipped to 0.
    Broadcasting (N, 1, 2) against (1, M, 2) builds all N x M pairs at once.
    """
    a, b = _check_boxes(a, "a"), _check_boxes(b, "b")
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])      # (N, M, 2)
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    wh = np.clip(bottom_right - top_left, 0, None)             # (N, M, 2), 0 where they do not overlap
    return wh[..., 0] * wh[..., 1]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU, (N, 4), (M, 4) xyxy -> (N, M): inter / (area_a + area_b - inter).

    A pair whose union is empty (two degenerate boxes) gets 0, not 0 / 0.
    """
    inter = box_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


# ---------------------------------------------------------------------------------- NMS


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices of the kept boxes, highest score first.

    Loop: take the best remaining box, keep it, drop every remaining box whose IoU with it is
    greater than `iou_threshold` (equal is kept, as in torchvision), repeat until none remain.
    At most N rounds of one (1, N) IoU row each: O(N^2) in the worst case (nothing suppressed).
    Equal scores keep their input order (a stable sort).
    """
    boxes = _check_boxes(boxes)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(boxes),):
        raise CnnkitError(f"scores must have shape ({len(boxes)},), got {scores.shape}")
    order = np.argsort(-scores, kind="stable")  # best first
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        overlap = box_iou(boxes[best][None], boxes[rest])[0]  # (len(rest),)
        order = rest[overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Class-wise NMS: boxes suppress only boxes of their own class. Returns indices, highest score first.

    (torchvision shifts each class's boxes far apart and runs one NMS, which gives the same
    result; a loop over the classes shows the idea more plainly.)
    """
    boxes = _check_boxes(boxes)
    scores, classes = np.asarray(scores, dtype=np.float64), np.asarray(classes)
    if classes.shape != scores.shape:
        raise CnnkitError(f"classes must have the shape of scores {scores.shape}, got {classes.shape}")
    keep = [np.flatnonzero(classes == c)[nms(boxes[classes == c], scores[classes == c], iou_threshold)]
            for c in np.unique(classes)]
    keep = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    return keep[np.argsort(-scores[keep], kind="stable")]
