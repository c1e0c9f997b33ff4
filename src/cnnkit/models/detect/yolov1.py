"""YOLO v1 (Redmon, Divvala, Girshick & Farhadi, "You Only Look Once: Unified, Real-Time Object Detection",
CVPR 2016; arXiv 2015).

Detection as one regression: the image is divided into an S x S grid and the network outputs an
S x S x (B * 5 + C) tensor. Each cell predicts B boxes (x, y: the centre's offset inside the cell;
w, h: relative to the image; a confidence = Pr(object) * IoU) and one set of C class probabilities
Pr(class | object), shared by its boxes. The cell holding an object's centre is responsible for it,
and of its B predictors the one whose box overlaps the object most (highest IoU) learns it.

Loss (sum-squared error, summed over cells and divided by the batch size):

    lambda_coord * sum_resp [(x - x^)^2 + (y - y^)^2 + (sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2]   "coord"
  + sum_resp (C - IoU)^2                       "obj"    (the target is the IoU of the prediction and the object)
  + lambda_noobj * sum_not_resp C^2            "noobj"  (every other predictor, in every cell)
  + sum_object_cells sum_c (p(c) - p^(c))^2    "cls"

lambda_coord = 5 and lambda_noobj = 0.5 (most cells hold no object: their confidence gradients would
otherwise swamp the rest); square roots of w, h make an error on a small box cost more than the same
error on a large one. At test time a box's class score is confidence * Pr(class | object), followed by
class-wise NMS (`Detector.postprocess`).

Departures from the paper (it is kept for teaching, not to compete):
- backbone: a small conv stack of its own (6 convs, stride 8, BatchNorm, leaky ReLU 0.1) instead of
  the paper's 24 conv layers pretrained on ImageNet at 224 px -- too big for a CPU; `backbone=` takes
  any cnnkit model (its last `feature_info` stage) instead;
- the last feature map is average-pooled to S x S (adaptive pooling, `GridPool`), so any input size
  works and S does not depend on it (the paper's 448 px input gives 7 x 7 at stride 64; the default
  backbone gives 8 x 8 at 64 px), then a 1x1 conv narrows it before the paper's two fully connected
  layers (4096 hidden there, `hidden` = 512 here); an exported model keeps the size it was exported at;
- BatchNorm (from YOLOv2) so it trains from scratch;
- bounded outputs instead of the paper's linear last layer: sigmoid for x, y, sqrt w, sqrt h and the
  confidence, softmax for the class probabilities, so scores are probabilities;
- when several objects' centres fall in one cell, the largest object is the cell's target (the paper
  leaves it unsaid: a cell can only learn one).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ...nn.act import ActLayer, create_act
from ...nn.conv import ConvNormAct
from ...nn.norm import NormLayer
from ...registry import register_model
from .._base import IMAGENET_MEAN, IMAGENET_STD, adapt_cfg, make_cfg
from ._backbone import Backbone
from ._base import Detector
from .yolo import _first_conv, pairwise_iou

PAPER = "Redmon et al., You Only Look Once: Unified, Real-Time Object Detection, CVPR 2016 (arXiv 2015)"


def small_darknet(in_chans: int = 3, act_layer: ActLayer = "leaky_relu",
                  norm_layer: NormLayer = "batch") -> nn.Sequential:
    """The default backbone: the paper's pattern (7x7/2 conv, max-pools, 3x3 convs with 1x1 reductions),
    6 convs, stride 8, 256 channels out."""
    kw = dict(act_layer=act_layer, norm_layer=norm_layer)
    return nn.Sequential(OrderedDict(
        stem=ConvNormAct(in_chans, 32, 7, 2, **kw),  # (B, 32, H/2, W/2)
        pool1=nn.MaxPool2d(2, 2),  # (B, 32, H/4, W/4)
        conv2=ConvNormAct(32, 64, 3, **kw),
        pool2=nn.MaxPool2d(2, 2),  # (B, 64, H/8, W/8)
        conv3=ConvNormAct(64, 64, 1, **kw),
        conv4=ConvNormAct(64, 128, 3, **kw),
        conv5=ConvNormAct(128, 128, 1, **kw),
        conv6=ConvNormAct(128, 256, 3, **kw),  # (B, 256, H/8, W/8)
    ))


def adaptive_pool_matrix(n_in: int, n_out: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n_out, n_in): row i averages inputs floor(i n_in / n_out) .. ceil((i + 1) n_in / n_out) - 1,
    the windows of adaptive average pooling (for n_out > n_in too: then inputs repeat)."""
    i = torch.arange(n_out, device=device)
    start, end = (i * n_in) // n_out, ((i + 1) * n_in + n_out - 1) // n_out
    j = torch.arange(n_in, device=device)
    m = ((j[None] >= start[:, None]) & (j[None] < end[:, None])).to(dtype)
    return m / m.sum(1, keepdim=True)


class GridPool(nn.Module):
    """Adaptive average pooling to S x S written as two matrix products, P_h @ x @ P_w^T: the same numbers
    as nn.AdaptiveAvgPool2d(S), and it exports to ONNX whatever the ratio of sizes (ONNX's pooling
    needs S to divide the input)."""

    def __init__(self, grid: int):
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph = adaptive_pool_matrix(h, self.grid, x.device, x.dtype)  # (S, h)
        pw = adaptive_pool_matrix(w, self.grid, x.device, x.dtype)  # (S, w)
        return ph @ x @ pw.T  # (B, C, S, S)


class YOLOv1(Detector):
    """S x S grid, B boxes per cell, C classes: see the module docstring. `grid` = S, `boxes_per_cell` = B."""

    def __init__(self, num_classes: int = 20, in_chans: int = 3, grid: int = 7, boxes_per_cell: int = 2,
                 backbone: str | nn.Module | None = None, backbone_args: dict | None = None, reduce_chs: int = 64,
                 hidden: int = 512, drop_rate: float = 0.5, lambda_coord: float = 5.0, lambda_noobj: float = 0.5,
                 act_layer: ActLayer = "leaky_relu", norm_layer: NormLayer = "batch", score_thresh: float = 0.001,
                 nms_thresh: float = 0.5, detections_per_img: int = 100):
        super().__init__()
        self.num_classes, self.grid, self.boxes_per_cell = num_classes, grid, boxes_per_cell
        self.lambda_coord, self.lambda_noobj = lambda_coord, lambda_noobj
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        if backbone is None:
            self.backbone = small_darknet(in_chans, act_layer, norm_layer)
            chs = 256
        else:
            if isinstance(backbone, str):
                from .. import create_model

                backbone = create_model(backbone, num_classes=0, in_chans=in_chans, **(backbone_args or {}))
            self.backbone = Backbone(backbone, (backbone.feature_info[-1]["reduction"],))
            chs = self.backbone.channels[0]
        self.per_cell = boxes_per_cell * 5 + num_classes
        self.head = nn.Sequential(OrderedDict(
            pool=GridPool(grid),  # (B, chs, S, S): adaptive average pooling
            reduce=ConvNormAct(chs, reduce_chs, 1, act_layer=act_layer, norm_layer=norm_layer),
            flatten=nn.Flatten(1),  # (B, reduce_chs * S * S)
            fc1=nn.Linear(reduce_chs * grid * grid, hidden),
            act=create_act(act_layer),
            drop=nn.Dropout(drop_rate),
            fc2=nn.Linear(hidden, grid * grid * self.per_cell),  # (B, S * S * (B * 5 + C))
        ))

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        f = self.backbone(images)
        return f[0] if isinstance(f, (list, tuple)) else f

    def _raw(self, images: torch.Tensor):
        """-> boxes (N, S, S, B, 4) as (x, y, sqrt w, sqrt h) in [0, 1], confidence (N, S, S, B),
        class probabilities (N, S, S, C)."""
        n, s, nb = images.shape[0], self.grid, self.boxes_per_cell
        out = self.head(self._features(images)).float().view(n, s, s, self.per_cell)
        box = out[..., : nb * 5].reshape(n, s, s, nb, 5).sigmoid()
        return box[..., :4], box[..., 4], out[..., nb * 5:].softmax(-1)

    def _to_xyxy(self, box: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(N, S, S, B, 4) cell-relative (x, y, sqrt w, sqrt h) -> xyxy pixels, clipped to the image."""
        s = self.grid
        cells = torch.arange(s, device=box.device, dtype=box.dtype)
        cx = (cells.view(1, 1, s, 1) + box[..., 0]) / s * w  # column index = x
        cy = (cells.view(1, s, 1, 1) + box[..., 1]) / s * h
        bw, bh = box[..., 2].square() * w, box[..., 3].square() * h
        return torch.stack([(cx - bw / 2).clamp(0, w), (cy - bh / 2).clamp(0, h),
                            (cx + bw / 2).clamp(0, w), (cy + bh / 2).clamp(0, h)], -1)

    def forward_export(self, images: torch.Tensor):
        """-> boxes (N, S*S*B, 4) xyxy pixels, scores (N, S*S*B, K) = confidence * Pr(class | object)."""
        box, conf, prob = self._raw(images)
        n, (h, w) = images.shape[0], images.shape[-2:]
        boxes = self._to_xyxy(box, h, w).reshape(n, -1, 4)
        scores = (conf[..., None] * prob[:, :, :, None, :]).reshape(n, -1, self.num_classes)
        return boxes, scores

    def _grid_targets(self, targets: list[dict], h: int, w: int, device):
        """Objects -> per cell: has-object (N, S, S) bool, box (N, S, S, 4) xyxy px, (x, y, sqrt w, sqrt h)
        (N, S, S, 4), class (N, S, S); the largest object wins a cell that several centres fall in."""
        n, s = len(targets), self.grid
        boxes = torch.cat([t["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4) for t in targets])
        labels = torch.cat([t["labels"].to(device).long().reshape(-1) for t in targets])
        img = torch.cat([torch.full((len(t["labels"]),), i, dtype=torch.long, device=device)
                         for i, t in enumerate(targets)])
        has = torch.zeros(n * s * s, dtype=torch.bool, device=device)
        t_xyxy = torch.zeros(n * s * s, 4, device=device)
        t_reg = torch.zeros(n * s * s, 4, device=device)
        t_cls = torch.zeros(n * s * s, dtype=torch.long, device=device)
        if len(boxes):
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2 / w * s, (boxes[:, 1] + boxes[:, 3]) / 2 / h * s
            gx, gy = cx.long().clamp(0, s - 1), cy.long().clamp(0, s - 1)
            bw, bh = (boxes[:, 2] - boxes[:, 0]) / w, (boxes[:, 3] - boxes[:, 1]) / h
            key = (img * s + gy) * s + gx
            by_area = torch.argsort(bw * bh, stable=True)  # smallest first ...
            order = by_area[torch.argsort(key[by_area], stable=True)]  # ... within each cell
            k = key[order]
            last = torch.ones_like(k, dtype=torch.bool)
            last[:-1] = k[1:] != k[:-1]
            keep = order[last]  # one object per cell: the largest
            idx = key[keep]
            has[idx] = True
            t_xyxy[idx] = boxes[keep]
            t_reg[idx] = torch.stack([cx - gx, cy - gy, bw.clamp(min=0).sqrt(), bh.clamp(min=0).sqrt()], -1)[keep]
            t_cls[idx] = labels[keep]
        return (has.view(n, s, s), t_xyxy.view(n, s, s, 4), t_reg.view(n, s, s, 4), t_cls.view(n, s, s))

    def loss(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        box, conf, prob = self._raw(images)
        n, (h, w) = images.shape[0], images.shape[-2:]
        has, t_xyxy, t_reg, t_cls = self._grid_targets(targets, h, w, images.device)
        with torch.no_grad():  # the responsible predictor: highest IoU with the cell's object
            iou = pairwise_iou(self._to_xyxy(box, h, w), t_xyxy[:, :, :, None, :])  # (N, S, S, B)
            resp = F.one_hot(iou.argmax(-1), self.boxes_per_cell).bool() & has[..., None]
        coord = (box - t_reg[:, :, :, None, :]).square().sum(-1)  # (N, S, S, B)
        coord = self.lambda_coord * coord[resp].sum()
        obj = (conf - iou)[resp].square().sum()
        noobj = self.lambda_noobj * conf[~resp].square().sum()
        cls = (prob - F.one_hot(t_cls, self.num_classes).to(prob.dtype))[has].square().sum()
        return dict(coord=coord / n, obj=obj / n, noobj=noobj / n, cls=cls / n)

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        if self.training and targets is not None:
            return self.loss(images, targets)
        return self.postprocess(*self.forward_export(images))


@register_model
def yolov1(num_classes: int = 20, in_chans: int = 3, image_size: int | None = None, **kwargs):
    """YOLO v1 (2015, detection as regression): 7x7 grid, 2 boxes per cell, sum-squared loss; a small own
    backbone (the paper's 24 layers are too big for a CPU); 2,790,366 parameters at 20 classes, 4,298,586 at 80,
    2,488,722 at 8."""
    model = YOLOv1(num_classes, in_chans, **kwargs)
    own = kwargs.get("backbone") is None
    first_conv = "backbone.stem.conv" if own else _first_conv(model.backbone.body)
    cfg = make_cfg((3, 64, 64), IMAGENET_MEAN, IMAGENET_STD, first_conv=first_conv, classifier="head.fc2",
                   paper=PAPER, task="detect", background=False, export=True,
                   grid=model.grid, boxes_per_cell=model.boxes_per_cell,
                   backbone=kwargs.get("backbone") if isinstance(kwargs.get("backbone"), str) else None)
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture="yolov1")
    return model
