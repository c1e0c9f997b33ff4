"""The interface every detector shares; the detection task (`tasks/detect.py`) uses only this.

Input: `images` (B, C, H, W) float, already normalised with `default_cfg["mean"/"std"]`, all of
one size (the data set's `image_size`). Detectors never resize: anchors and image sizes are
fitted to the size they are given.

    forward(images, targets=None)
        training, targets given -> dict[str, Tensor]: scalar losses; the task adds them up
                                   (torchvision's R-CNNs and SSD compute losses inside forward,
                                   and so do ours, so every detector trains the same way)
        eval                    -> list (one per image) of dict:
                                     boxes  (N, 4) float xyxy, pixels of the input
                                     scores (N,)   float
                                     labels (N,)   int64 in 0..K-1
                                     masks  (N, H, W) float in [0, 1]   (instance models only)
    targets: list (one per image) of dict, as `ObjectTargets.per_image()` gives:
        boxes (M, 4) float xyxy pixels, labels (M,) int64 0..K-1, masks (M, H, W) uint8 (instance models)

Labels are always 0..K-1 for the K foreground classes. Models built on torchvision's frameworks,
which reserve label 0 for the background, shift labels on the way in and out, and their
`num_classes` counts that background class, as torchvision's does (`default_cfg["background"]`):
the task builds them with K + 1.

One-stage models that can be exported (`default_cfg["export"]`) also have
    forward_export(images) -> (boxes (B, A, 4) xyxy pixels, scores (B, A, K) probabilities)
        every candidate before thresholds and NMS: plain tensors, traceable for ONNX
    postprocess(boxes, scores) -> the eval list above (score threshold, class-wise NMS, top-k)
and `forward` in eval mode is `postprocess(*forward_export(images))`.

Post-processing settings are attributes every detector has: `score_thresh` (default 0.001 for
mAP, as COCO evaluation wants), `nms_thresh` (0.5-0.7 by family) and `detections_per_img`
(100). Predict raises `score_thresh` for drawing.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import batched_nms


class Detector(nn.Module):
    default_cfg: dict
    num_classes: int
    score_thresh: float = 0.001
    nms_thresh: float = 0.6
    detections_per_img: int = 100

    def postprocess(self, boxes: torch.Tensor, scores: torch.Tensor) -> list[dict]:
        """(B, A, 4), (B, A, K) -> per image: the top `detections_per_img` of the class-wise NMS of every
        (candidate, class) pair scoring above `score_thresh`."""
        out = []
        for b, s in zip(boxes, scores):
            s = s.float()
            cand, cls = (s > self.score_thresh).nonzero(as_tuple=True)
            bx, sc = b[cand].float(), s[cand, cls]
            if len(sc) > 10 * self.detections_per_img:  # NMS cost grows with the square of the candidates
                top = sc.topk(10 * self.detections_per_img).indices
                bx, sc, cls = bx[top], sc[top], cls[top]
            keep = batched_nms(bx, sc, cls, self.nms_thresh)[: self.detections_per_img]
            out.append(dict(boxes=bx[keep], scores=sc[keep], labels=cls[keep].long()))
        return out
