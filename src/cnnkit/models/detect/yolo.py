"""An anchor-free one-stage YOLO in the spirit of YOLOv8 (Ultralytics, 2023; the design has no paper).

    image (B, C, H, W)
      -> CSP backbone: stem conv /2, four stages of [3x3 conv /2 -> C2f], SPPF   (P3, P4, P5 at /8, /16, /32)
         (or any cnnkit model through `Backbone(reductions=(8, 16, 32))`)
      -> PAN neck (cnnkit.nn.pan): top-down then bottom-up fusion, C2f blocks
      -> decoupled head, per level: a box branch (2 x 3x3 conv -> 1x1 to 4 * reg_max) and a class
         branch (2 x 3x3 conv -> 1x1 to K); no objectness, no anchor boxes: one prediction per cell

Each cell centre (an "anchor point" p, at (j + 0.5) * stride) predicts the distances from p to the
box's four sides (left, top, right, bottom), each as a distribution over reg_max = 16 bins
0, 1, ..., 15 (in units of the level's stride); the distance is its expected value (DFL decoding):

    d = sum_i softmax(logits)_i * i,   box = (p_x - d_l s, p_y - d_t s, p_x + d_r s, p_y + d_b s)

Training (`YoloLoss`):
- task-aligned assignment (TAL, Feng et al., "TOOD", ICCV 2021; `TaskAlignedAssigner`): for each gt,
  the candidates are the anchor points inside its box; their alignment metric
  t = s^alpha * IoU^beta (s: the predicted score of the gt's class, IoU: of the predicted box with the
  gt; alpha = 0.5, beta = 6) ranks them, the top k = 10 are positives, and an anchor claimed by
  several gts keeps the one it overlaps most. Soft class target of a positive:
  t / max_gt(t) * max_gt(IoU), so the best-aligned anchor of each gt is asked for its best IoU.
- class loss: binary cross-entropy of every anchor and class against those soft targets (zero for
  negatives) -- the score learns to predict the localisation quality ("IoU-aware").
- box loss: CIoU loss (Zheng et al., AAAI 2020) of the positives' decoded boxes.
- DFL (distribution focal loss, Li et al., "Generalized Focal Loss", NeurIPS 2020): cross-entropy of
  the two bins around the target distance y, weighted by closeness:
  -((y_r - y) log p_l + (y - y_l) log p_r), y_l = floor(y), y_r = y_l + 1.
Box and DFL terms are weighted by each positive's soft target; all three are divided by the sum of
the soft targets (at least 1) and multiplied by YOLOv8's gains (box 7.5, cls 0.5, dfl 1.5). The loss
dict holds the weighted terms: `box`, `cls`, `dfl`.

Departures from YOLOv8's training code (not its architecture): the assigner's metric uses plain IoU
(v8 uses CIoU there), its top-k is taken among the anchor points inside the gt only (v8 masks after
ranking all), and a point claimed by several gts picks among those that selected it; the losses are
not multiplied by the batch size (v8 does, for its SGD learning rates); BatchNorm keeps PyTorch's
defaults (v8: eps 1e-3, momentum 0.03). Head initialisation: the class prior is 0.01 at every level
(v8 lowers it by the number of cells per level, for 640 px images), and each side's bins start from
a prior p_i ~ r^i of mean ~2 bins, a box 4 strides wide (v8's bias 1 makes the bins uniform, a box
15 strides wide: far larger than the objects of its level, so the first IoUs, and with them the
soft class targets and the box weights, are ~0 and small images learn slowly).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import complete_box_iou_loss

from ...nn.act import ActLayer
from ...nn.conv import ConvNormAct
from ...nn.csp import C2f, SPPF
from ...nn.norm import NormLayer
from ...nn.pan import PAN
from ...registry import register_model
from .._base import IMAGENET_MEAN, IMAGENET_STD, adapt_cfg, make_cfg
from ._backbone import Backbone
from ._base import Detector

PAPER = ("YOLOv8 (Jocher, Chaurasia & Qiu, Ultralytics 2023; no paper), with TOOD's task-aligned assignment "
         "(Feng et al., ICCV 2021) and Generalized Focal Loss's DFL (Li et al., NeurIPS 2020)")
BASE_WIDTHS = (64, 128, 256, 512, 1024)  # stem, stages 1-4 (strides 2, 4, 8, 16, 32) before the width multiplier
BASE_DEPTHS = (3, 6, 6, 3)  # C2f bottlenecks per backbone stage before the depth multiplier; the neck's use 3
STRIDES = (8, 16, 32)


# ---------------------------------------------------------------- anchor points, boxes and distances
def make_anchors(sizes: Sequence[tuple[int, int]], strides: Sequence[int], device=None, dtype=torch.float32):
    """Cell centres of every level, finest first: points (A, 2) x, y in pixels and strides (A, 1)."""
    points, stride_col = [], []
    for (h, w), s in zip(sizes, strides):
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([xx, yy], -1).reshape(-1, 2))  # row-major, as the maps flatten
        stride_col.append(torch.full((h * w, 1), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(stride_col)


def dist_to_box(points: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """Distances (..., 4) left, top, right, bottom from points (..., 2) -> boxes (..., 4) xyxy."""
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1)


def box_to_dist(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Boxes (..., 4) xyxy -> distances (..., 4) left, top, right, bottom from points (..., 2)."""
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], -1)


def dfl_decode(logits: torch.Tensor) -> torch.Tensor:
    """Bin logits (..., R) -> expected bin index (...): sum_i softmax(logits)_i * i, in [0, R - 1]."""
    bins = torch.arange(logits.shape[-1], device=logits.device, dtype=logits.dtype)
    return logits.softmax(-1) @ bins


def dfl_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss: logits (N, 4, R), target distances (N, 4) in bins, in [0, R - 1) -> (N,),
    the mean over the four sides of the two-bin cross-entropy around each target."""
    left = target.long()  # floor, as target >= 0
    w_right = target - left
    logp = logits.log_softmax(-1)
    lp = logp.gather(-1, left[..., None])[..., 0]
    rp = logp.gather(-1, (left + 1)[..., None])[..., 0]
    return -((1 - w_right) * lp + w_right * rp).mean(-1)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """IoU of boxes a (..., 4) and b (..., 4) broadcast against each other (xyxy)."""
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area_a + area_b - inter + eps)


# ---------------------------------------------------------------- assignment
class TaskAlignedAssigner(nn.Module):
    """Task-aligned label assignment (TOOD): see the module docstring. No parameters.

    forward(pd_scores (B, A, K) probabilities, pd_boxes (B, A, 4) px, points (A, 2) px,
            gt_labels (B, M) int, gt_boxes (B, M, 4) px, gt_mask (B, M) bool: real gts, not padding)
      -> target_labels (B, A) int64, target_boxes (B, A, 4), target_scores (B, A, K) soft targets,
         fg_mask (B, A) bool, target_gt (B, A) the index of the assigned gt (0 where background)
    """

    def __init__(self, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9):
        super().__init__()
        self.topk, self.alpha, self.beta, self.eps = topk, alpha, beta, eps

    @torch.no_grad()
    def forward(self, pd_scores, pd_boxes, points, gt_labels, gt_boxes, gt_mask):
        b, a, k = pd_scores.shape
        m = gt_boxes.shape[1]
        dev = pd_scores.device
        if m == 0:
            return (torch.zeros(b, a, dtype=torch.long, device=dev), torch.zeros(b, a, 4, device=dev),
                    torch.zeros_like(pd_scores), torch.zeros(b, a, dtype=torch.bool, device=dev),
                    torch.zeros(b, a, dtype=torch.long, device=dev))
        gt_labels = gt_labels.long().clamp(min=0)
        # candidates: anchor points strictly inside the gt box
        deltas = box_to_dist(points[None, None], gt_boxes[:, :, None, :])  # (B, M, A, 4)
        valid = (deltas.amin(-1) > self.eps) & gt_mask[:, :, None]  # (B, M, A)
        ious = pairwise_iou(gt_boxes[:, :, None, :], pd_boxes[:, None, :, :])  # (B, M, A)
        ious = torch.where(valid, ious, torch.zeros_like(ious))
        cls_score = pd_scores.gather(2, gt_labels[:, None, :].expand(b, a, m)).transpose(1, 2)  # (B, M, A)
        metric = cls_score.pow(self.alpha) * ious.pow(self.beta)
        metric = torch.where(valid, metric, torch.zeros_like(metric))
        # the top k candidates of each gt (non-candidates rank below every candidate)
        ranked = torch.where(valid, metric, torch.full_like(metric, -1.0))
        top = ranked.topk(min(self.topk, a), dim=-1).indices  # (B, M, k)
        pos = torch.zeros_like(valid).scatter_(-1, top, True) & valid  # (B, M, A)
        # an anchor chosen by several gts keeps the one it overlaps most
        multi = pos.sum(1) > 1  # (B, A)
        if multi.any():
            best = torch.where(pos, ious, torch.full_like(ious, -1.0)).argmax(1)  # (B, A)
            only_best = F.one_hot(best, m).transpose(1, 2).bool()  # (B, M, A)
            pos = torch.where(multi[:, None, :], pos & only_best, pos)
        fg = pos.any(1)  # (B, A)
        target_gt = pos.to(torch.uint8).argmax(1)  # (B, A): the one gt of a positive
        target_labels = gt_labels.gather(1, target_gt)
        target_boxes = gt_boxes.gather(1, target_gt[..., None].expand(b, a, 4))
        # soft targets: each gt's metric rescaled so that its best anchor's target is its best IoU
        metric = metric * pos
        norm = metric * (ious * pos).amax(-1, keepdim=True) / (metric.amax(-1, keepdim=True) + self.eps)
        quality = norm.amax(1) * fg  # (B, A)
        target_scores = F.one_hot(target_labels, k).to(pd_scores.dtype) * quality[..., None]
        target_labels = torch.where(fg, target_labels, torch.zeros_like(target_labels))
        return target_labels, target_boxes, target_scores, fg, target_gt


def pad_targets(targets: list[dict], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image targets -> gt_labels (B, M), gt_boxes (B, M, 4), gt_mask (B, M), M = most objects in an image."""
    m = max((len(t["labels"]) for t in targets), default=0)
    labels = torch.zeros(len(targets), m, dtype=torch.long, device=device)
    boxes = torch.zeros(len(targets), m, 4, device=device)
    mask = torch.zeros(len(targets), m, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t["labels"])
        if n:
            labels[i, :n] = t["labels"].to(device)
            boxes[i, :n] = t["boxes"].to(device=device, dtype=torch.float32)
            mask[i, :n] = True
    return labels, boxes, mask


class YoloLoss(nn.Module):
    """TAL + BCE (soft targets) + CIoU + DFL, as the module docstring says. No parameters.

    forward(cls_logits (B, A, K), dist_logits (B, A, 4, R), points (A, 2) px, strides (A, 1), targets)
      -> dict box, cls, dfl (weighted scalars)
    """

    def __init__(self, reg_max: int = 16, topk: int = 10, alpha: float = 0.5, beta: float = 6.0,
                 box_gain: float = 7.5, cls_gain: float = 0.5, dfl_gain: float = 1.5):
        super().__init__()
        self.reg_max = reg_max
        self.assigner = TaskAlignedAssigner(topk, alpha, beta)
        self.box_gain, self.cls_gain, self.dfl_gain = box_gain, cls_gain, dfl_gain

    def forward(self, cls_logits, dist_logits, points, strides, targets: list[dict]) -> dict[str, torch.Tensor]:
        cls_logits, dist_logits = cls_logits.float(), dist_logits.float()
        pred_boxes = dist_to_box(points, dfl_decode(dist_logits) * strides)  # (B, A, 4) px
        gt_labels, gt_boxes, gt_mask = pad_targets(targets, cls_logits.device)
        _, t_boxes, t_scores, fg, _ = self.assigner(cls_logits.detach().sigmoid(), pred_boxes.detach(), points,
                                                    gt_labels, gt_boxes, gt_mask)
        norm = t_scores.sum().clamp(min=1.0)
        cls = F.binary_cross_entropy_with_logits(cls_logits, t_scores, reduction="sum") / norm
        if fg.any():
            weight = t_scores.sum(-1)[fg]  # (P,) each positive's soft target
            box = (complete_box_iou_loss(pred_boxes[fg], t_boxes[fg]) * weight).sum() / norm
            pt, st = points.expand_as(pred_boxes[..., :2])[fg], strides.expand_as(pred_boxes[..., :1])[fg]
            t_dist = (box_to_dist(pt, t_boxes[fg]) / st).clamp(0, self.reg_max - 1 - 0.01)  # in bins
            dfl = (dfl_loss(dist_logits[fg], t_dist) * weight).sum() / norm
        else:  # no object in the batch: zero, but still part of the graph
            box = dfl = dist_logits.sum() * 0.0
        return dict(box=box * self.box_gain, cls=cls * self.cls_gain, dfl=dfl * self.dfl_gain)


# ---------------------------------------------------------------- network
def _width(c: float, divisor: int = 8) -> int:
    return int(math.ceil(c / divisor) * divisor)


class CSPDarknet(nn.Module):
    """YOLOv8's backbone: stem 3x3/2, four stages of [3x3/2 conv -> C2f (residual bottlenecks)], SPPF at the end.

    `widths`: 5 channel counts (stem, stages 1-4), `depths`: bottlenecks per stage. forward(x) gives the
    maps of the last three stages (strides 8, 16, 32); `channels` their widths. Has the classifier
    interface's `feature_info` / `forward_features`, so `Backbone` can take it too.
    """

    def __init__(self, in_chans: int = 3, widths=(16, 32, 64, 128, 256), depths=(1, 2, 2, 1),
                 act_layer: ActLayer = "silu", norm_layer: NormLayer = "batch"):
        super().__init__()
        kw = dict(act_layer=act_layer, norm_layer=norm_layer)
        self.stem = ConvNormAct(in_chans, widths[0], 3, 2, **kw)  # (B, w0, H/2, W/2)
        self.stages = nn.Sequential()
        for i, n in enumerate(depths):
            blocks = [ConvNormAct(widths[i], widths[i + 1], 3, 2, **kw),
                      C2f(widths[i + 1], widths[i + 1], n, True, **kw)]
            if i == len(depths) - 1:
                blocks.append(SPPF(widths[-1], widths[-1], 5, **kw))
            self.stages.append(nn.Sequential(*blocks))  # (B, w_{i+1}, H / 2^(i+2), W / 2^(i+2))
        self.feature_info = [dict(num_chs=widths[0], reduction=2, module="stem")]
        self.feature_info += [dict(num_chs=widths[i + 1], reduction=2 ** (i + 2), module=f"stages.{i}")
                              for i in range(len(depths))]
        self.channels = list(widths[-3:])
        self.reductions = [2 ** (len(depths) - 1), 2 ** len(depths), 2 ** (len(depths) + 1)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs[-3:]  # P3 (B, w2, H/8, W/8), P4 (B, w3, H/16, W/16), P5 (B, w4, H/32, W/32)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)[-1]


class DecoupledHead(nn.Module):
    """Per level: box branch 3x3 -> 3x3 -> 1x1 (4 * reg_max) and class branch 3x3 -> 3x3 -> 1x1 (K).

    Widths as YOLOv8: box c2 = max(16, C_P3 / 4, 4 * reg_max), class c3 = max(C_P3, min(K, 100)).
    Initialisation: class biases for a prior probability of `prior` (0.01: the BCE of the many
    negatives starts small, as in RetinaNet); box biases i * log r for bin i, r = m / (1 + m), a
    geometric prior over the bins of mean ~m = `box_prior` (2) strides per side (None: YOLOv8's bias 1,
    uniform bins).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, reg_max: int = 16, prior: float = 0.01,
                 box_prior: float | None = 2.0, act_layer: ActLayer = "silu", norm_layer: NormLayer = "batch"):
        super().__init__()
        kw = dict(act_layer=act_layer, norm_layer=norm_layer)
        c2 = max(16, in_channels[0] // 4, 4 * reg_max)
        c3 = max(in_channels[0], min(num_classes, 100))
        self.box = nn.ModuleList(nn.Sequential(ConvNormAct(c, c2, 3, **kw), ConvNormAct(c2, c2, 3, **kw))
                                 for c in in_channels)
        self.cls = nn.ModuleList(nn.Sequential(ConvNormAct(c, c3, 3, **kw), ConvNormAct(c3, c3, 3, **kw))
                                 for c in in_channels)
        self.box_preds = nn.ModuleList(nn.Conv2d(c2, 4 * reg_max, 1) for _ in in_channels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(c3, num_classes, 1) for _ in in_channels)
        bins = torch.arange(reg_max, dtype=torch.float32)
        for conv in self.box_preds:  # bin prior p_i ~ r^i, mean ~ box_prior bins; None: uniform (v8's bias 1)
            if box_prior is None:
                nn.init.constant_(conv.bias, 1.0)
            else:
                conv.bias.data.copy_((bins * math.log(box_prior / (1 + box_prior))).repeat(4))
        for conv in self.cls_preds:
            nn.init.constant_(conv.bias, -math.log((1 - prior) / prior))

    def forward(self, feats: Sequence[torch.Tensor]):
        """-> box logits [(B, 4R, h, w)] and class logits [(B, K, h, w)], one per level."""
        box = [p(b(f)) for f, b, p in zip(feats, self.box, self.box_preds)]
        cls = [p(c(f)) for f, c, p in zip(feats, self.cls, self.cls_preds)]
        return box, cls


class YOLO(Detector):
    """Anchor-free YOLO (YOLOv8 design): CSP backbone (or any cnnkit model) -> PAN -> decoupled DFL head.

    `width` / `depth` multiply BASE_WIDTHS (capped at `max_channels` first) and BASE_DEPTHS.
    `backbone`: a cnnkit model name (its stride-8/16/32 stages through `Backbone`) in place of the CSP
    backbone; the neck then maps its widths to the variant's. See the module docstring for the loss.
    """

    def __init__(self, num_classes: int = 80, in_chans: int = 3, width: float = 0.25, depth: float = 0.33,
                 max_channels: int = 1024, backbone: str | nn.Module | None = None, backbone_args: dict | None = None,
                 reg_max: int = 16, act_layer: ActLayer = "silu", norm_layer: NormLayer = "batch",
                 topk: int = 10, alpha: float = 0.5, beta: float = 6.0, box_gain: float = 7.5, cls_gain: float = 0.5,
                 dfl_gain: float = 1.5, prior: float = 0.01, box_prior: float | None = 2.0,
                 score_thresh: float = 0.001, nms_thresh: float = 0.6, detections_per_img: int = 100):
        super().__init__()
        self.num_classes, self.reg_max = num_classes, reg_max
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.strides = STRIDES
        widths = [_width(min(c, max_channels) * width) for c in BASE_WIDTHS]
        depths = [max(round(n * depth), 1) for n in BASE_DEPTHS]
        neck_depth = max(round(3 * depth), 1)
        kw = dict(act_layer=act_layer, norm_layer=norm_layer)
        if backbone is None:
            self.backbone = CSPDarknet(in_chans, widths, depths, **kw)
        else:
            self.backbone = Backbone(backbone, STRIDES, in_chans=in_chans, **(backbone_args or {}))
        self.neck = PAN(self.backbone.channels, widths[-3:], neck_depth, **kw)
        self.head = DecoupledHead(widths[-3:], num_classes, reg_max, prior, box_prior, **kw)
        self.criterion = YoloLoss(reg_max, topk, alpha, beta, box_gain, cls_gain, dfl_gain)

    def _raw(self, images: torch.Tensor):
        """-> class logits (B, A, K), bin logits (B, A, 4, R), points (A, 2) px, strides (A, 1); A = sum of h*w."""
        box, cls = self.head(self.neck(self.backbone(images)))
        b = images.shape[0]
        sizes = [tuple(f.shape[-2:]) for f in box]
        dist = torch.cat([f.flatten(2) for f in box], 2).transpose(1, 2).reshape(b, -1, 4, self.reg_max)
        cls = torch.cat([f.flatten(2) for f in cls], 2).transpose(1, 2)
        points, strides = make_anchors(sizes, self.strides, images.device, torch.float32)
        return cls, dist, points, strides

    def forward_export(self, images: torch.Tensor):
        """-> boxes (B, A, 4) xyxy pixels (clipped to the image), scores (B, A, K) sigmoid probabilities."""
        cls, dist, points, strides = self._raw(images)
        boxes = dist_to_box(points, dfl_decode(dist.float()) * strides)
        h, w = images.shape[-2:]
        boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h),
                             boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], -1)
        return boxes, cls.float().sigmoid()

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        if self.training and targets is not None:
            return self.criterion(*self._raw(images), targets)
        return self.postprocess(*self.forward_export(images))


# ---------------------------------------------------------------- variants
def _yolo(name: str, width: float, depth: float, max_channels: int, num_classes: int, in_chans: int,
          **kwargs) -> YOLO:
    model = YOLO(num_classes, in_chans, width, depth, max_channels, **kwargs)
    own = kwargs.get("backbone") is None
    first_conv = "backbone.stem.conv" if own else _first_conv(model.backbone.body)
    cfg = make_cfg((3, 64, 64), IMAGENET_MEAN, IMAGENET_STD, first_conv=first_conv, classifier="head.cls_preds",
                   paper=PAPER, task="detect", background=False, export=True, width=width, depth=depth,
                   max_channels=max_channels, strides=STRIDES, reg_max=model.reg_max,
                   backbone=kwargs.get("backbone") if isinstance(kwargs.get("backbone"), str) else None)
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture=name)
    return model


def _first_conv(body: nn.Module) -> str:
    """The module name of a foreign backbone's first conv, seen from the detector."""
    cfg = getattr(body, "default_cfg", {}) or {}
    return "backbone.body." + cfg["first_conv"] if cfg.get("first_conv") else "backbone.body"


# width / depth multipliers and channel caps of YOLOv8's n / s / m (base widths 64-1024, depths 3-6-6-3)
@register_model
def yolo_n(num_classes: int = 80, in_chans: int = 3, image_size: int | None = None, **kwargs):
    """YOLO-n (YOLOv8n-like: anchor-free, DFL + TAL): width 0.25, depth 0.33; 3,157,184 parameters at 80
    classes (v8n: 3,157,200 with its 16 fixed DFL weights), 3,012,392 at 8."""
    return _yolo("yolo_n", 0.25, 0.33, 1024, num_classes, in_chans, **kwargs)


@register_model
def yolo_s(num_classes: int = 80, in_chans: int = 3, image_size: int | None = None, **kwargs):
    """YOLO-s (YOLOv8s-like): width 0.50, depth 0.33; 11,166,544 parameters at 80 classes, 11,138,680 at 8."""
    return _yolo("yolo_s", 0.50, 0.33, 1024, num_classes, in_chans, **kwargs)


@register_model
def yolo_m(num_classes: int = 80, in_chans: int = 3, image_size: int | None = None, **kwargs):
    """YOLO-m (YOLOv8m-like): width 0.75, depth 0.67, widths capped at 768; 25,902,624 parameters at 80
    classes, 25,860,936 at 8."""
    return _yolo("yolo_m", 0.75, 0.67, 768, num_classes, in_chans, **kwargs)
