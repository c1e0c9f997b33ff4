"""YOLO (v8-style, anchor-free: yolo_n/s/m) and YOLO v1: the detector interface, the pieces of the loss
(task-aligned assignment, DFL, CIoU), and that yolo_n overfits four small synthetic images."""
import pytest
import torch
from torchvision.ops import box_iou, complete_box_iou_loss

from cnnkit.models import create_model
from cnnkit.models.detect.yolo import (TaskAlignedAssigner, box_to_dist, dfl_decode, dfl_loss, dist_to_box,
                                       make_anchors, pairwise_iou)
from cnnkit.models.detect.yolov1 import GridPool

from models._zoo_helpers import n_params

K = 8


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads per process contend and run up to ~10x
    slower, and these small 64 px batches gain little from a second one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TARGETS = [dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long)),
           dict(boxes=torch.tensor([[5.0, 6.0, 30.0, 25.0], [30.0, 30.0, 60.0, 58.0]]), labels=torch.tensor([1, 7]))]
LOSS_KEYS = {"yolo_n": {"box", "cls", "dfl"}, "yolov1": {"coord", "obj", "noobj", "cls"}}


def _check_detections(out, n, h=64, w=64, limit=100):
    assert isinstance(out, list) and len(out) == n
    for d in out:
        assert set(d) == {"boxes", "scores", "labels"}
        m = len(d["scores"])
        assert d["boxes"].shape == (m, 4) and d["labels"].shape == (m,) and m <= limit
        assert d["boxes"].dtype == torch.float32 and d["labels"].dtype == torch.int64
        if m:
            assert d["labels"].min() >= 0 and d["labels"].max() < K
            assert (d["boxes"][:, 2:] >= d["boxes"][:, :2]).all()
            assert d["boxes"][:, 0::2].min() >= 0 and d["boxes"][:, 0::2].max() <= w
            assert d["boxes"][:, 1::2].min() >= 0 and d["boxes"][:, 1::2].max() <= h
            assert (d["scores"][:-1] >= d["scores"][1:]).all()  # NMS keeps them sorted


@pytest.mark.parametrize("name", ["yolo_n", "yolov1"])
@pytest.mark.parametrize("backbone", [None, "resnet18"])
def test_train_losses_gradients_eval_and_export(name, backbone):
    torch.manual_seed(0)
    model = create_model(name, num_classes=K, backbone=backbone)
    cfg = model.default_cfg
    assert cfg["task"] == "detect" and cfg["background"] is False and cfg["export"] is True
    assert cfg["input_size"] == (3, 64, 64) and cfg["num_classes"] == K and cfg["architecture"] == name
    modules = dict(model.named_modules())
    assert cfg["first_conv"] in modules and cfg["classifier"] in modules
    x = torch.randn(2, 3, 64, 64)
    model.train()
    losses = model(x, TARGETS)
    assert set(losses) == LOSS_KEYS[name]
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient: {missing[:5]}"
    model.eval()
    with torch.no_grad():
        out = model(x)
        boxes, scores = model.forward_export(x)
        again = model.postprocess(boxes, scores)
    _check_detections(out, 2)
    assert boxes.shape[:2] == scores.shape[:2] and boxes.shape[-1] == 4 and scores.shape[-1] == K
    assert scores.min() >= 0 and scores.max() <= 1
    for a, b in zip(out, again):
        for key in a:
            assert torch.equal(a[key], b[key])


@pytest.mark.parametrize("name", ["yolo_n", "yolov1"])
def test_any_multiple_of_32_and_empty_batch(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=K).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 128))
    _check_detections(out, 1, h=96, w=128)
    model.train()
    empty = [TARGETS[0], TARGETS[0]]
    losses = model(torch.randn(2, 3, 64, 64), empty)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()  # still a graph with no object at all


def test_yolo_sizes_and_param_counts():
    # v8's own summaries: n 3,157,200, s 11,166,560, m 25,902,640 at 80 classes, with 16 fixed DFL weights we lack
    expected = {"yolo_n": 3_157_184, "yolo_s": 11_166_544, "yolo_m": 25_902_624, "yolov1": 4_298_586}
    for name, count in expected.items():
        with torch.device("meta"):
            assert n_params(create_model(name, num_classes=80)) == count, name
    x = torch.randn(1, 3, 64, 64)
    for name in ("yolo_s", "yolo_m"):
        model = create_model(name, num_classes=K).eval()
        with torch.no_grad():
            boxes, scores = model.forward_export(x)
        assert boxes.shape == (1, 64 + 16 + 4, 4) and scores.shape == (1, 84, K)  # 8x8 + 4x4 + 2x2 anchor points
        _check_detections(model.postprocess(boxes, scores), 1)
    # yolo_m caps its widths at 768 * 0.75 = 576
    with torch.device("meta"):
        assert create_model("yolo_m").backbone.channels == [192, 384, 576]


def test_head_initialisation():
    """Class prior 0.01 everywhere; each side's bins start with mean ~2 (None: uniform, mean 7.5, as YOLOv8)."""
    x = torch.randn(2, 3, 64, 64)
    for box_prior, mean in ((2.0, 1.98), (None, 7.5)):
        torch.manual_seed(0)
        model = create_model("yolo_n", num_classes=K, box_prior=box_prior)
        for conv in model.head.cls_preds:
            assert torch.allclose(conv.bias.detach().sigmoid(), torch.full((K,), 0.01))
        for conv in model.head.box_preds:
            assert dfl_decode(conv.bias.detach().view(4, 16)).tolist() == pytest.approx([mean] * 4, abs=0.01)
    with torch.no_grad():
        _, scores = model.eval().forward_export(x)
    assert scores.mean().item() == pytest.approx(0.01, rel=0.5)


def test_anchor_points_and_distances():
    points, strides = make_anchors([(2, 2), (1, 1)], [8, 16])
    assert points.tolist() == [[4, 4], [12, 4], [4, 12], [12, 12], [8, 8]]
    assert strides.flatten().tolist() == [8, 8, 8, 8, 16]
    boxes = torch.tensor([[0.0, 1.0, 10.0, 20.0]]).expand(5, 4)
    assert torch.allclose(dist_to_box(points, box_to_dist(points, boxes)), boxes)


def test_dfl_decoding_and_loss():
    probs = torch.zeros(16)
    probs[2], probs[3] = 0.3, 0.7
    logits = probs.clamp(min=1e-12).log()
    assert dfl_decode(logits).item() == pytest.approx(2.7, abs=1e-5)  # 0.3 * 2 + 0.7 * 3
    assert dfl_decode(torch.zeros(16)).item() == pytest.approx(7.5)  # uniform: the middle of 0..15
    # the loss of target 2.7 is the cross-entropy around bins 2 and 3, smallest at that very distribution
    side = logits.expand(1, 4, 16)
    best = dfl_loss(side, torch.full((1, 4), 2.7))
    entropy = -(0.3 * torch.tensor(0.3).log() + 0.7 * torch.tensor(0.7).log())
    assert best.item() == pytest.approx(entropy.item(), abs=1e-5)
    assert (dfl_loss(side, torch.full((1, 4), 2.2)) > best).all()


def test_ciou_of_identical_boxes_is_zero():
    b = torch.tensor([[3.0, 4.0, 20.0, 30.0], [0.0, 0.0, 64.0, 64.0]])
    assert complete_box_iou_loss(b, b).abs().max() < 1e-6
    assert torch.allclose(pairwise_iou(b, b), torch.ones(2))
    assert complete_box_iou_loss(b[:1], b[:1] + 5).item() > 0


def _assign(gt_boxes, gt_labels, pd_boxes, points, topk=10, scores=None):
    a = len(points)
    scores = torch.full((1, a, K), 0.5) if scores is None else scores
    assigner = TaskAlignedAssigner(topk=topk)
    m = len(gt_boxes)
    return assigner(scores, pd_boxes[None], points, gt_labels.view(1, m), gt_boxes.view(1, m, 4),
                    torch.ones(1, m, dtype=torch.bool))


def test_task_aligned_assigner_hand_made():
    points, _ = make_anchors([(4, 4)], [8])  # centres 4, 12, 20, 28 in a 32 px image
    gt = torch.tensor([[0.0, 0.0, 17.0, 17.0]])  # holds the 4 centres (4|12, 4|12)
    inside = (points < 17).all(1)
    assert inside.sum() == 4
    pd = torch.tensor([[0.0, 0.0, 16.0, 16.0]]).repeat(16, 1)
    pd[0] = gt[0]  # anchor 0 (4, 4) predicts the gt exactly; anchor 1 (12, 4) nearly
    pd[1] = torch.tensor([0.0, 0.0, 17.0, 16.5])
    labels, boxes, scores, fg, gt_idx = _assign(gt, torch.tensor([3]), pd, points)
    assert torch.equal(fg[0], inside)  # every candidate inside (4 < top-k), none outside
    assert (labels[0][fg[0]] == 3).all() and torch.allclose(boxes[0][fg[0]], gt.expand(4, 4))
    assert (scores[0][~fg[0]] == 0).all() and (scores[0][:, [c for c in range(K) if c != 3]] == 0).all()
    assert scores[0, 0, 3].item() == pytest.approx(1.0, abs=1e-4)  # the best-aligned anchor: its IoU, 1
    assert scores[0, 0, 3] > scores[0, 1, 3] > 0
    # top-k: only the k best-aligned candidates are positives
    labels, boxes, scores, fg, _ = _assign(gt, torch.tensor([3]), pd, points, topk=2)
    assert fg[0].sum() == 2 and fg[0, 0] and fg[0, 1]
    # an anchor inside two gts belongs to the one its prediction overlaps most
    gts = torch.tensor([[0.0, 0.0, 17.0, 17.0], [8.0, 0.0, 32.0, 17.0]])
    pd[1] = gts[1]  # anchor (12, 4) lies in both and predicts gt 1
    labels, boxes, scores, fg, gt_idx = _assign(gts, torch.tensor([3, 5]), pd, points)
    assert fg[0, 1] and gt_idx[0, 1] == 1 and labels[0, 1] == 5
    assert gt_idx[0, 0] == 0 and labels[0, 0] == 3
    # no gt at all: nothing assigned
    labels, boxes, scores, fg, _ = TaskAlignedAssigner()(torch.full((1, 16, K), 0.5), pd[None], points,
                                                         torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, 4),
                                                         torch.zeros(1, 0, dtype=torch.bool))
    assert not fg.any() and scores.sum() == 0


def test_yolov1_grid_targets():
    model = create_model("yolov1", num_classes=K)  # 7x7 grid
    t = [dict(boxes=torch.tensor([[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 9.0, 9.0], [40.0, 40.0, 60.0, 60.0]]),
              labels=torch.tensor([1, 2, 4]))]
    has, xyxy, reg, cls = model._grid_targets(t, 64, 64, "cpu")
    assert has.sum() == 2 and has[0, 0, 0] and has[0, 5, 5]  # centre (50, 50) * 7 / 64 -> cell 5
    assert cls[0, 0, 0] == 2 and torch.equal(xyxy[0, 0, 0], t[0]["boxes"][1])  # the larger object wins the cell
    offset, root = 50 * 7 / 64 - 5, (20 / 64) ** 0.5  # centre offset inside the cell, sqrt of w / image width
    assert torch.allclose(reg[0, 5, 5], torch.tensor([offset, offset, root, root]))


def test_yolov1_grid_pool_is_adaptive_average_pooling():
    for h, w, s in [(8, 8, 7), (2, 2, 7), (14, 14, 7), (3, 5, 4)]:  # shrinking, growing, exact, uneven
        x = torch.randn(2, 3, h, w)
        assert torch.allclose(GridPool(s)(x), torch.nn.AdaptiveAvgPool2d(s)(x), atol=1e-6)


# ---------------------------------------------------------------- learning
COLOURS = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1], [0.5, 0.5, 0.5]])


def _rectangles(n: int, seed: int = 0):
    """n 64 px images of 1-4 non-overlapping filled rectangles (13-29 px), the class is the colour."""
    g = torch.Generator().manual_seed(seed)
    images, targets = torch.zeros(n, 3, 64, 64), []
    for i in range(n):
        boxes, labels = [], []
        want = int(torch.randint(1, 5, (1,), generator=g))
        while len(boxes) < want:
            w, h = torch.randint(13, 30, (2,), generator=g).tolist()
            x0, y0 = int(torch.randint(0, 64 - w, (1,), generator=g)), int(torch.randint(0, 64 - h, (1,), generator=g))
            box = torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=torch.float32)
            if boxes and box_iou(box, torch.cat(boxes)).max() > 0:
                continue
            c = int(torch.randint(0, K, (1,), generator=g))
            images[i, :, y0:y0 + h, x0:x0 + w] = COLOURS[c][:, None, None]
            boxes.append(box)
            labels.append(c)
        targets.append(dict(boxes=torch.cat(boxes), labels=torch.tensor(labels)))
    return (images - 0.5) / 0.5, targets


def test_yolo_n_overfits_four_images():
    """~5 s on one free core: 120 AdamW steps on 4 images of 9 rectangles; every object is then found."""
    torch.manual_seed(0)
    x, targets = _rectangles(4)
    model = create_model("yolo_n", num_classes=K)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    for _ in range(120):
        loss = sum(model(x, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(x)
    found = confident = total = false_pos = 0
    for det, t in zip(out, targets):
        for box, label in zip(t["boxes"], t["labels"]):
            total += 1
            same = det["labels"] == label
            iou = box_iou(box[None], det["boxes"])[0]
            found += bool((same & (iou > 0.5)).any())
            confident += bool((same & (iou > 0.5) & (det["scores"] > 0.25)).any())
        for box, label, score in zip(det["boxes"], det["labels"], det["scores"]):
            hit = (t["labels"] == label) & (box_iou(box[None], t["boxes"])[0] > 0.5)
            false_pos += bool(score > 0.5 and not hit.any())
    assert total == 9 and found == total, f"{found} of {total} objects found"
    assert confident >= 0.9 * total, f"only {confident} of {total} objects found with a score > 0.25"
    assert false_pos <= 1, f"{false_pos} confident detections match no object"
