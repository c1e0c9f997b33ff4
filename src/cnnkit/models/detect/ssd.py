"""SSD and SSDlite (the guide's §6.2 one-stage detectors) on torchvision's SSD framework.

    image (B, C, H, W), already normalised by cnnkit
      -> feature maps at several strides: the body's (VGG-16's conv4_3 and fc7, MobileNetV3's C4
         expansion and last conv, or any cnnkit model's stages through `Backbone`), then extra
         blocks, each halving the map, down to about 1x1
      -> per map, a 3x3 conv head (SSDlite: depthwise 3x3 + 1x1) predicts, at every position, for
         each of its default boxes (anchors) K + 1 class logits (0 is the background) and 4 box
         deltas (cx, cy, log w, log h, scaled by 10, 10, 5, 5)
      -> default boxes (`DefaultBoxGenerator`, page 6 of the SSD paper): map k of m has scale
         s_k (a fraction of the image side, from s_min to s_max), boxes of side s_k and
         sqrt(s_k s_k+1) plus s_k * (sqrt(a), 1 / sqrt(a)) and its transpose for each aspect ratio a,
         centred on every cell
      -> eval: softmax over the classes; per class the `topk_candidates` best above `score_thresh`,
         class-wise NMS, the best `detections_per_img`

Training (torchvision's, computed inside forward): each gt box takes its best default box, and
every default box with IoU >= 0.5 with a gt is positive for it; smooth-L1 box loss over the
positives; cross-entropy over the positives plus hard negative mining: per image only the
3 x (number of positives) negatives with the highest loss count (the rest of the thousands of
background boxes are ignored); both sums are divided by the number of positives.

cnnkit's interface around torchvision's SSD (`SSDDetector`, the model's `net`):
- input is a normalised (B, C, H, W) batch and is never resized: the framework's transform
  (`FixedSizeTransform`) has mean 0 / std 1 (a no-op) and min_size = max_size = the image size,
  and does not resize; default boxes are fractions of whatever size is given.
- labels are 0..K-1 outside, 1..K inside; `num_classes` counts the background, as torchvision's.
- `forward_export(images)` -> every decoded box (B, A, 4) xyxy pixels and its class probabilities
  (B, A, K) (softmax, the background column dropped); eval `forward` is
  `postprocess(*forward_export(images))`, with torchvision's per-class top-k candidate rule.
- `score_thresh`, `nms_thresh`, `detections_per_img`, `topk_candidates` are attributes (also pushed
  into torchvision's SSD, for anyone calling `net` directly).

`ssd300_vgg16` and `ssdlite320_mobilenet_v3_large` at their own sizes (300, 320 px) are exactly
torchvision's: its state dicts load with `cnnkit.models.load_torchvision_weights`, and then the
outputs equal torchvision's. At other sizes or with `backbone=`, the extra blocks and default boxes
are fitted to the image size (see the builders).
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops import batched_nms

from ...nn.conv import ConvNormAct
from ...registry import CnnkitError, register_model
from .._base import IMAGENET_MEAN, IMAGENET_STD, adapt_cfg, make_cfg
from .._tv import register_tv_converter
from ..mobilenet import MobileNetV3, _cna, _ir_pairs
from ..vgg import VGG, VGG_CFGS
from ._base import Detector
from .rcnn import FixedSizeTransform, first_conv_name, image_hw, make_body, to_tv_targets

PAPERS = {
    "ssd": "Liu et al., SSD: Single Shot MultiBox Detector, ECCV 2016",
    "ssdlite": "Sandler et al., MobileNetV2 (SSDlite, section 6.2), CVPR 2018; Howard et al., Searching for "
               "MobileNetV3 (section 6.3), ICCV 2019",
}
# torchvision's pixel statistics: SSD300's VGG-16 sees 0-255 pixels minus the mean (Caffe style),
# SSDlite's MobileNetV3 sees [-1, 1]
VGG_MEAN, VGG_STD = (0.48235, 0.45882, 0.40784), (1.0 / 255.0,) * 3
LITE_MEAN, LITE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
# SSD300's default boxes (torchvision's, from the paper's VOC / COCO setting)
SSD300_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
SSD300_SCALES = [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]
SSD300_STEPS = [8, 16, 32, 64, 100, 300]


def halvings(size: int) -> int:
    """How many 3x3 stride-2 (padding 1) convs bring a `size` map to 1x1: each gives ceil(size / 2)."""
    n = 0
    while size > 1:
        size, n = -(-size // 2), n + 1
    return n


def ssd_ratios(levels: int) -> list[list[int]]:
    """SSD300's aspect-ratio pattern for any number of maps: {2} on the first and the last two,
    {2, 3} in between."""
    return [[2]] + [[2, 3]] * max(levels - 3, 0) + [[2]] * min(2, levels - 1)


def _xavier_(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _normal_(module: nn.Module, std: float = 0.03) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def vgg_extra(in_chs: int, out_chs: int, stride: int = 2, padding: int = 1) -> nn.Sequential:
    """SSD's extra block: 1x1 conv to out / 2 channels, ReLU, 3x3 conv (stride 2, padding 1 halves the
    map; stride 1 without padding takes 2 pixels off), ReLU."""
    mid = out_chs // 2
    return nn.Sequential(nn.Conv2d(in_chs, mid, 1), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, out_chs, 3, stride, padding), nn.ReLU(inplace=True))


def lite_extra(in_chs: int, out_chs: int, norm_layer) -> nn.Sequential:
    """SSDlite's extra block: 1x1 conv to out / 2, depthwise 3x3 stride 2, 1x1 conv to out; each with
    BatchNorm and ReLU6."""
    mid = out_chs // 2
    kw = dict(norm_layer=norm_layer, act_layer="relu6")
    return nn.Sequential(ConvNormAct(in_chs, mid, 1, **kw), ConvNormAct(mid, mid, 3, 2, groups=mid, **kw),
                         ConvNormAct(mid, out_chs, 1, **kw))


def _as_dict(maps: Sequence[torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((str(i), m) for i, m in enumerate(maps))


# ------------------------------------------------------------------ feature extractors


class SSDVGG16Features(nn.Module):
    """SSD's VGG-16, from cnnkit's VGG-16 convolutions (torchvision's module layout, so its weights load).

    - `features`: conv1_1 .. conv4_3 (+ ReLU), pool3 rounding up (300 px: 75 -> 38, the paper's 38x38
      map); its output is L2-normalised per position and rescaled by a learned per-channel
      `scale_weight` (ParseNet; starts at 20), because conv4_3's activations are much larger than
      the later maps'.
    - `extra[0]`: pool4, conv5_1 .. conv5_3, then pool5 as 3x3 stride 1, and fc6 / fc7 as convs
      (fc6: 3x3, dilation 6 -- the atrous conv that keeps a large receptive field): stride 16.
    - `extra[1:]`: torchvision's SSD300 blocks (conv8_2, conv9_2 with stride 2; conv10_2, conv11_2
      as unpadded 3x3: 300 px gives 38, 19, 10, 5, 3, 1) where the image is large enough for
      them (about 268 px and up); below that, stride-2 blocks down to 1x1 (64 px: 8, 4, 2, 1).
    """

    def __init__(self, in_chans: int = 3, image_size=(300, 300)):
        super().__init__()
        layers = list(VGG(VGG_CFGS["D"], num_classes=0, in_chans=in_chans, hidden=8).features)  # head dropped
        pools = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
        layers[pools[2]].ceil_mode = True
        self.features = nn.Sequential(*layers[:pools[3]])  # (B, 512, H/8, W/8)
        self.scale_weight = nn.Parameter(torch.full((512,), 20.0))
        fc67 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(512, 1024, 3, padding=6, dilation=6), nn.ReLU(True),
                             nn.Conv2d(1024, 1024, 1), nn.ReLU(True))
        _xavier_(fc67)
        a = -(-(min(image_size) // 2 // 2) // 2)  # conv4_3's side (pools 1, 2 round down, pool 3 up)
        b = a // 2  # fc7's side
        c9 = -(-(-(-b // 2)) // 2)  # conv9_2's side, after two stride-2 blocks
        self.tv_layout = c9 >= 5  # room for the two unpadded 3x3 convs (c9 - 4 >= 1)
        if self.tv_layout:
            extra = [vgg_extra(1024, 512), vgg_extra(512, 256), vgg_extra(256, 256, 1, 0), vgg_extra(256, 256, 1, 0)]
            widths = [512, 256, 256, 256]
        else:
            widths = [512, 256, 256, 256] + [256] * max(halvings(b) - 4, 0)
            widths = widths[:halvings(b)]
            extra = [vgg_extra(c_in, c) for c_in, c in zip([1024] + widths, widths)]
        _xavier_(nn.ModuleList(extra))
        self.extra = nn.ModuleList([nn.Sequential(*layers[pools[3]:pools[4]], fc67)] + extra)
        self.out_channels = [512, 1024] + widths

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        x = self.features(x)  # conv4_3
        maps = [self.scale_weight.view(1, -1, 1, 1) * F.normalize(x)]  # unit L2 norm per position, rescaled
        for block in self.extra:
            x = block(x)
            maps.append(x)
        return _as_dict(maps)


# MobileNetV3-Large, Table 1 (kernel, expansion, out, SE, non-linearity, stride); SSDlite halves the
# widths of the last stage ("reduced tail", Table 6 of the paper), as torchvision does without a
# pretrained body.
def mobilenet_v3_large_rows(reduced_tail: bool = True) -> tuple:
    d = 2 if reduced_tail else 1
    return (
        (3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
        (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
        (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
        (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
        (5, 672, 160 // d, True, "HS", 2), (5, 960 // d, 160 // d, True, "HS", 1),
        (5, 960 // d, 160 // d, True, "HS", 1),
    )


LITE_WIDTHS = [512, 256, 256, 128]  # SSDlite's extra blocks
SMALL_IMAGE = 200  # below this side SSDlite adds a stride-8 map


class SSDLiteMobileNetV3Features(nn.Module):
    """SSDlite's MobileNetV3-Large, from cnnkit's MobileNetV3 blocks (section 6.3 of the MobileNetV3 paper).

    The first map is taken inside the first block of the last stage (C4), after its 1x1 expansion
    (672 channels, stride 16): the wide expanded tensor is the richer input for the heads. The
    second is the last 1x1 conv (stride 32). That block has no residual (stride 2), so splitting it
    changes nothing. `features[0]`: stem .. C4's expansion; `features[1]`: C4's depthwise conv, SE
    and projection, the rest of the blocks and the last conv. Then `extra`: SSDlite blocks (512,
    256, 256, 128 wide) down to 1x1 (320 px: 20, 10, 5, 3, 2, 1).

    `first_stride=8` (the default below 200 px) adds one map before those, cut the same way inside
    the first block of the stride-16 stage (its 240-channel expansion at stride 8): at 64 px the
    stride-16 map is 4x4, and its 16-pixel cells are as large as the objects, so no default box
    lies close to most of them; a stride-8 map (8x8) has a cell for each. Maps at 64 px: 8, 4, 2, 1.
    """

    def __init__(self, in_chans: int = 3, image_size=(320, 320), norm_layer=None, reduced_tail: bool = True,
                 first_stride: int = 16):
        super().__init__()
        if first_stride not in (8, 16):
            raise CnnkitError(f"ssdlite: first_stride must be 8 or 16, got {first_stride!r}")
        norm_layer = norm_layer or partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03)
        net = MobileNetV3(mobilenet_v3_large_rows(reduced_tail), 8, num_classes=0, in_chans=in_chans,
                          norm_layer=norm_layer)
        _normal_(net)  # torchvision's init for a body trained from scratch
        blocks = [b for stage in net.stages for b in stage]
        starts = [sum(len(s) for s in net.stages[:i]) for i in range(len(net.stages))]
        cuts = starts[-2:] if first_stride == 8 else starts[-1:]  # the first block of each stage split
        parts, head = [], [net.stem]
        for lo, c in zip([0] + [c + 1 for c in cuts[:-1]], cuts):
            cut = blocks[c]
            parts.append(nn.Sequential(*head, *blocks[lo:c], cut.conv_pw))  # .. the cut block's expansion
            head = [nn.Sequential(OrderedDict(conv_dw=cut.conv_dw, se=cut.se, conv_pwl=cut.conv_pwl))]
        parts.append(nn.Sequential(*head, *blocks[cuts[-1] + 1:], net.conv_head))
        self.features = nn.ModuleList(parts)
        n = halvings(-(-min(image_size) // 32))
        widths = (LITE_WIDTHS + [LITE_WIDTHS[-1]] * n)[:n]
        self.extra = nn.ModuleList([lite_extra(c_in, c, norm_layer) for c_in, c in
                                    zip([net.num_features] + widths, widths)])
        _normal_(self.extra)
        self.out_channels = [blocks[c].conv_pw.out_channels for c in cuts] + [net.num_features] + widths

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        maps = []
        for block in list(self.features) + list(self.extra):
            x = block(x)
            maps.append(x)
        return _as_dict(maps)


class SSDBackboneFeatures(nn.Module):
    """Any cnnkit model's stages (through `Backbone`) plus extra stride-2 blocks down to 1x1."""

    def __init__(self, body, extra: Sequence[nn.Module], widths: Sequence[int]):
        super().__init__()
        self.body = body
        self.extra = nn.ModuleList(extra)
        self.out_channels = list(body.channels) + list(widths)

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        maps = self.body(x)
        x = maps[-1]
        for block in self.extra:
            x = block(x)
            maps.append(x)
        return _as_dict(maps)


# ------------------------------------------------------------------ the model


class SSDDetector(Detector):
    """torchvision's SSD (`net`) with cnnkit's detector interface; see the module docstring."""

    def __init__(self, features: nn.Module, anchors: DefaultBoxGenerator, head: nn.Module, num_classes: int,
                 image_size, in_chans: int, score_thresh: float = 0.001, nms_thresh: float = 0.45,
                 detections_per_img: int = 100, topk_candidates: int = 400, iou_thresh: float = 0.5,
                 positive_fraction: float = 0.25):
        super().__init__()
        h, w = image_hw(image_size)
        self.net = SSD(features, anchors, (h, w), num_classes, image_mean=[0.0] * in_chans,
                       image_std=[1.0] * in_chans, head=head, iou_thresh=iou_thresh,
                       positive_fraction=positive_fraction)
        self.net.transform = FixedSizeTransform((h, w), in_chans, size_divisible=1)
        self.num_classes = num_classes
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img, self.topk_candidates = detections_per_img, topk_candidates
        self.push_settings()

    def push_settings(self) -> None:
        self.net.score_thresh = float(self.score_thresh)
        self.net.nms_thresh = float(self.nms_thresh)
        self.net.detections_per_img = int(self.detections_per_img)
        self.net.topk_candidates = int(self.topk_candidates)

    def forward_export(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> boxes (B, A, 4) xyxy pixels clipped to the image, scores (B, A, K) softmax probabilities of
        the K foreground classes (the background column dropped)."""
        maps = list(self.net.backbone(images).values())
        out = self.net.head(maps)  # bbox_regression (B, A, 4), cls_logits (B, A, K + 1)
        b, (h, w) = images.shape[0], images.shape[-2:]
        anchors = self.net.anchor_generator(ImageList(images, [(h, w)] * b), maps)[0]  # (A, 4), as every image's
        deltas = out["bbox_regression"]
        boxes = self.net.box_coder.decode_single(deltas.reshape(-1, 4), anchors.repeat(b, 1)).view(b, -1, 4)
        boxes = torch.stack((boxes[..., 0::2].clamp(0, w), boxes[..., 1::2].clamp(0, h)), -1).flatten(-2)  # clip
        return boxes, out["cls_logits"].softmax(-1)[..., 1:]

    def postprocess(self, boxes: torch.Tensor, scores: torch.Tensor) -> list[dict]:
        """torchvision's SSD rule: per image and class the `topk_candidates` best scores above
        `score_thresh`, class-wise NMS, then the best `detections_per_img` (the candidates are capped per
        class, not over all classes as in `Detector.postprocess`). Equal scores go to the earlier
        default box, so the result never depends on how a sort orders ties."""
        out = []
        for bx, sc in zip(boxes, scores):
            sc = sc.float()
            k = min(self.topk_candidates, sc.shape[0])
            top, idx = sc.sort(dim=0, descending=True, stable=True)  # (A, K): each class's candidates, best first
            top, idx = top[:k], idx[:k]
            rank, cls = (top > self.score_thresh).nonzero(as_tuple=True)
            cand, s = bx[idx[rank, cls]].float(), top[rank, cls]
            # NMS ranks by score; equal scores (a saturated softmax gives many exact 1.0s) would leave the
            # choice to the sort inside NMS. A strict order -- score, then class rank, then class -- makes
            # the result depend on the scores alone.
            order = torch.argsort(s, descending=True, stable=True)
            priority = torch.empty_like(s)
            priority[order] = -torch.arange(len(s), dtype=s.dtype, device=s.device)
            keep = batched_nms(cand, priority, cls, self.nms_thresh)[: self.detections_per_img]
            out.append(dict(boxes=cand[keep], scores=s[keep], labels=cls[keep]))
        return out

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        if self.training and targets is not None:
            return self.net(list(images), to_tv_targets(targets))  # bbox_regression, classification
        self.push_settings()
        return self.postprocess(*self.forward_export(images))


def _default_boxes(levels: int, ratios, min_ratio, max_ratio, tv_default: dict | None) -> DefaultBoxGenerator:
    """torchvision's default boxes when nothing is asked for (`tv_default`), else `ratios` with scales
    spread evenly from `min_ratio` to `max_ratio` (0.15 to 0.9 unless given)."""
    if len(ratios) != levels:
        raise CnnkitError(f"aspect_ratios needs one list per feature map ({levels}), got {len(ratios)}")
    if tv_default is not None and min_ratio is None and max_ratio is None and ratios == tv_default["aspect_ratios"]:
        return DefaultBoxGenerator(**tv_default)
    return DefaultBoxGenerator([list(r) for r in ratios], min_ratio=0.15 if min_ratio is None else min_ratio,
                               max_ratio=0.9 if max_ratio is None else max_ratio)


def _ssd(name: str, kind: str, num_classes: int, in_chans: int, image_size, backbone=None,
         backbone_args: dict | None = None, reductions: Sequence[int] = (8, 16, 32), aspect_ratios=None,
         min_ratio: float | None = None, max_ratio: float | None = None, reduced_tail: bool = True,
         first_stride: int | None = None,
         score_thresh: float = 0.001, nms_thresh: float | None = None, detections_per_img: int = 100,
         topk_candidates: int | None = None, iou_thresh: float = 0.5, positive_fraction: float = 0.25) -> SSDDetector:
    hw = image_hw(image_size)
    lite = kind == "ssdlite"
    if first_stride is not None and (not lite or backbone is not None):
        raise CnnkitError("first_stride is an option of SSDlite's own MobileNetV3 body (no backbone=); "
                          "with backbone=, choose the maps with reductions=")
    norm = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03)
    tv_default = None
    if backbone is None and lite:
        if first_stride is None:  # small images get a stride-8 map (see SSDLiteMobileNetV3Features)
            first_stride = 16 if min(hw) >= SMALL_IMAGE else 8
        features = SSDLiteMobileNetV3Features(in_chans, hw, norm, reduced_tail, first_stride)
        levels = len(features.out_channels)
        ratios = aspect_ratios if aspect_ratios is not None else [[2, 3]] * levels
        tv_default = dict(aspect_ratios=[[2, 3]] * levels, min_ratio=0.2, max_ratio=0.95)
        mean, std, first = LITE_MEAN, LITE_STD, "net.backbone.features.0.0.conv"
    elif backbone is None:
        features = SSDVGG16Features(in_chans, hw)
        levels = len(features.out_channels)
        ratios = aspect_ratios if aspect_ratios is not None else ssd_ratios(levels)
        if features.tv_layout:
            tv_default = dict(aspect_ratios=SSD300_RATIOS, scales=SSD300_SCALES,
                              steps=SSD300_STEPS if hw == (300, 300) else None)
        mean, std, first = VGG_MEAN, VGG_STD, "net.backbone.features.0"
    else:
        body = make_body(backbone, reductions, in_chans, backbone_args)
        n = halvings(-(-min(hw) // body.reductions[-1]))
        if lite:
            widths = (LITE_WIDTHS + [LITE_WIDTHS[-1]] * n)[:n]
            extra = [lite_extra(c_in, c, norm) for c_in, c in zip([body.channels[-1]] + widths, widths)]
            _normal_(nn.ModuleList(extra))
        else:
            widths = ([512] + [256] * n)[:n]
            extra = [vgg_extra(c_in, c) for c_in, c in zip([body.channels[-1]] + widths, widths)]
            _xavier_(nn.ModuleList(extra))
        features = SSDBackboneFeatures(body, extra, widths)
        levels = len(features.out_channels)
        ratios = aspect_ratios if aspect_ratios is not None else ([[2, 3]] * levels if lite else ssd_ratios(levels))
        mean, std, first = IMAGENET_MEAN, IMAGENET_STD, first_conv_name(body, "net.backbone.body.")
        if lite and min_ratio is None and max_ratio is None:
            min_ratio, max_ratio = 0.2, 0.95
    anchors = _default_boxes(levels, ratios, min_ratio, max_ratio, tv_default)
    n_anchors = anchors.num_anchors_per_location()
    head = (SSDLiteHead(features.out_channels, n_anchors, num_classes, norm) if lite
            else SSDHead(features.out_channels, n_anchors, num_classes))
    model = SSDDetector(features, anchors, head, num_classes, hw, in_chans, score_thresh,
                        nms_thresh if nms_thresh is not None else (0.55 if lite else 0.45), detections_per_img,
                        topk_candidates if topk_candidates is not None else (300 if lite else 400), iou_thresh,
                        positive_fraction)
    tv_size = (320, 320) if lite else (300, 300)
    exact = (backbone is None and hw == tv_size and tv_default is not None and (reduced_tail or not lite)
             and (not lite or first_stride == 16))
    bname = backbone if isinstance(backbone, str) else (None if backbone is None else type(backbone).__name__)
    cfg = make_cfg((3,) + hw, mean, std, first_conv=first, classifier="net.head.classification_head",
                   paper=PAPERS[kind], task="detect", background=True, masks=False, backbone=bname,
                   # ssd300_vgg16 not yet: its ONNX candidates equal PyTorch's (5e-5), but after a short
                   # training its scores saturate near 1 and near-ties swap places in the export check
                   export=bool(lite),
                   scales=tuple(anchors.scales), aspect_ratios=tuple(tuple(r) for r in anchors.aspect_ratios),
                   notes="torchvision's SSD on a cnnkit body; input normalised by cnnkit and never resized "
                         "(the framework's transform: mean 0, std 1, no resize)")
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture=name, tv_name=name if exact else None)
    return model


@register_model
def ssd300_vgg16(num_classes: int = 91, in_chans: int = 3, image_size=300, **kwargs) -> SSDDetector:
    """SSD300 on cnnkit's VGG-16 (num_classes counts the background: 91 for COCO). At 300 px, exactly
    torchvision's `ssd300_vgg16`: 35,641,826 parameters at 91 classes, six maps (38, 19, 10, 5, 3, 1)
    with its default boxes (8,732 of them); its state dicts load with `load_torchvision_weights`.
    default_cfg's mean / std are torchvision's (0-255 pixels minus the mean, as VGG was trained),
    so its weights see what they were trained on.

    Smaller images (image_size, e.g. 64): stride-2 extra blocks down to 1x1 (64 px: maps 8, 4, 2, 1)
    and default boxes spread evenly from 0.15 to 0.9 of the image side (min_ratio, max_ratio),
    SSD300's aspect-ratio pattern. The input is not resized and not normalised again: the
    framework's transform has mean 0, std 1 and min_size = max_size = the image size (cnnkit
    normalises with default_cfg's mean / std before the model).

    Keyword options: image_size, backbone (any cnnkit model name, or a built model with
    feature_info: its `reductions` stages, default strides 8, 16, 32, plus SSD extra blocks;
    ImageNet mean / std), backbone_args, reductions, aspect_ratios (one list per map), min_ratio,
    max_ratio, score_thresh (0.001), nms_thresh (0.45), detections_per_img (100), topk_candidates
    (400 per class), iou_thresh (0.5, matching), positive_fraction (0.25: 3 negatives per positive).
    """
    return _ssd("ssd300_vgg16", "ssd", num_classes, in_chans, image_size, **kwargs)


@register_model
def ssdlite320_mobilenet_v3_large(num_classes: int = 91, in_chans: int = 3, image_size=320,
                                  **kwargs) -> SSDDetector:
    """SSDlite320 on cnnkit's MobileNetV3-Large blocks (num_classes counts the background). At 320 px,
    exactly torchvision's `ssdlite320_mobilenet_v3_large` as built without a pretrained body (reduced
    tail: the last stage half as wide): 3,440,060 parameters at 91 classes, six maps (20, 10, 5, 3,
    2, 1), depthwise-separable heads, BatchNorm eps 1e-3 / momentum 0.03; its state dicts load with
    `load_torchvision_weights`. default_cfg's mean / std (0.5, 0.5) map [0, 1] pixels to [-1, 1].

    Smaller images: fewer extra blocks, and below 200 px a first map at stride 8 (64 px: maps 8, 4,
    2, 1; `first_stride`, see SSDLiteMobileNetV3Features). The input is not resized and not
    normalised again: the framework's transform has mean 0, std 1 and min_size = max_size = the
    image size (cnnkit normalises with default_cfg's mean / std before the model).

    Keyword options: image_size, reduced_tail (True), first_stride (8 below 200 px, else 16), backbone (any cnnkit model name or model:
    its `reductions` stages, default 8, 16, 32, plus SSDlite extra blocks; ImageNet mean / std),
    backbone_args, reductions, aspect_ratios, min_ratio (0.2), max_ratio (0.95), score_thresh
    (0.001), nms_thresh (0.55), detections_per_img (100), topk_candidates (300 per class),
    iou_thresh, positive_fraction.
    """
    return _ssd("ssdlite320_mobilenet_v3_large", "ssdlite", num_classes, in_chans, image_size, **kwargs)


# ------------------------------------------------------------------ torchvision weights


@register_tv_converter("ssd300_vgg16")
def _from_torchvision_vgg(sd, model):
    """Our SSD300 has torchvision's module layout: every key moves under `net.`."""
    return {"net." + k: v for k, v in sd.items()}


def _lite_pairs(features: SSDLiteMobileNetV3Features) -> dict:
    """Module renames torchvision -> cnnkit for SSDlite's body and extra blocks (without `net.`).

    torchvision keeps MobileNetV3's blocks flat with numbered parts: `features.0.{0: stem, 1..n:
    blocks (block.{i}), n+1: C4's expansion}` and `features.1.{0: the rest of C4 (parts 1, 2, 3),
    then blocks, then the last conv}`; cnnkit names the parts (conv_pw, conv_dw, se, conv_pwl;
    conv, bn)."""
    pairs = {}
    for half, seq in enumerate(features.features):
        for i, m in enumerate(seq):
            tv, ours = f"backbone.features.{half}.{i}", f"backbone.features.{half}.{i}"
            if isinstance(m, ConvNormAct):
                pairs.update(_cna(tv, ours))
            elif hasattr(m, "conv_dw") and not isinstance(m, nn.Sequential):
                pairs.update(_ir_pairs(f"{tv}.block", ours, m))
            else:  # C4's depthwise conv, SE and projection: torchvision's parts 1, 2, 3
                pairs.update(_cna(f"{tv}.1", f"{ours}.conv_dw"))
                pairs.update({f"{tv}.2.fc1": f"{ours}.se.fc1", f"{tv}.2.fc2": f"{ours}.se.fc2"})
                pairs.update(_cna(f"{tv}.3", f"{ours}.conv_pwl"))
    for i, block in enumerate(features.extra):
        for j in range(len(block)):
            pairs.update(_cna(f"backbone.extra.{i}.{j}", f"backbone.extra.{i}.{j}"))
    return pairs


@register_tv_converter("ssdlite320_mobilenet_v3_large")
def _from_torchvision_lite(sd, model):
    """Body and extra blocks renamed part by part (`_lite_pairs`); the heads are torchvision's own."""
    if not isinstance(model.net.backbone, SSDLiteMobileNetV3Features):
        raise CnnkitError("torchvision's SSDlite weights need the default MobileNetV3 body (no backbone=)")
    pairs = _lite_pairs(model.net.backbone)
    out = {}
    for k, v in sd.items():
        mod, _, leaf = k.rpartition(".")
        out[f"net.{pairs.get(mod, mod)}.{leaf}"] = v
    return out

