"""Faster R-CNN and Mask R-CNN (the guide's §6.2 two-stage detectors) on torchvision's framework.

    image (B, C, H, W), already normalised by cnnkit
      -> body: a cnnkit model through `Backbone` (ResNet-50 for the torchvision-sized variants), its
         stages at strides 4, 8, 16, 32 (C2..C5)
      -> FPN (torchvision.ops.FeaturePyramidNetwork): a 1x1 lateral conv per level, top-down
         nearest-neighbour upsampling and sum, a 3x3 output conv; plus a stride-2 max-pool of the
         top level ("pool"): P2..P6, all `fpn_channels` wide
      -> RPN (region proposal network): at every position of every level, anchors of one size per
         level times 3 aspect ratios; a shared 3x3 conv predicts an objectness logit and 4 box deltas
         per anchor; the best-scoring decoded anchors per level, after NMS, are the proposals
      -> MultiScaleRoIAlign: each proposal is read from the level that matches its size
         (k = 4 + log2(sqrt(wh) / 224)), as a 7x7 grid of bilinear samples, never rounded to cells
      -> box head: two fully connected layers -> K + 1 class logits (0 is the background) and
         class-specific box deltas; per class, boxes above `score_thresh`, NMS, the best
         `detections_per_img`
      -> Mask R-CNN only: RoIAlign 14x14 -> 3x3 convs -> 2x transposed conv -> a 28x28 mask logit
         map per class, pasted into the image for the predicted class (a probability in [0, 1])

Training (torchvision's losses, computed inside forward): the RPN samples `rpn_batch_size_per_image`
anchors per image (half positive at most: IoU >= 0.7 with a gt box, or a gt's best anchor;
negatives IoU < 0.3) for binary cross-entropy and smooth L1; the box head samples
`box_batch_size_per_image` proposals (a quarter positive at most: IoU >= 0.5) for cross-entropy
and smooth L1; the mask head gets per-pixel binary cross-entropy on the positive proposals, for the
gt class only (masks and classes do not compete). Images without objects are allowed.

cnnkit's interface around torchvision's model (`RCNN`, the model's `net`):
- input is a normalised (B, C, H, W) batch and is never resized: the framework's own transform
  (`FixedSizeTransform`) normalises with mean 0 / std 1, a no-op, and does not resize; it only pads
  to a multiple of 32 for the FPN (boxes stay in the input's pixels).
- labels are 0..K-1 outside and 1..K inside (0 is torchvision's background): `num_classes` counts the
  background, as torchvision's does (`default_cfg["background"]`).
- masks come out (N, H, W), not (N, 1, H, W).
- `score_thresh`, `nms_thresh` and `detections_per_img` are attributes of the wrapper, pushed into
  torchvision's `roi_heads` before every prediction, so the task can change them at any time.

The torchvision-sized variants (`fasterrcnn_resnet50_fpn`, `maskrcnn_resnet50_fpn`) have exactly
torchvision's modules: its state dicts load with `cnnkit.models.load_torchvision_weights`, and then
the outputs equal torchvision's. The small variants are for 64-128 px images on a CPU.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, RPNHead, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ...registry import CnnkitError, register_model
from .._base import IMAGENET_MEAN, IMAGENET_STD, adapt_cfg, make_cfg
from .._tv import register_tv_converter
from ._backbone import Backbone
from ._base import Detector

PAPERS = {
    "faster": "Ren, He, Girshick & Sun, Faster R-CNN: Towards Real-Time Object Detection with Region Proposal "
              "Networks, NeurIPS 2015; Lin et al., Feature Pyramid Networks for Object Detection, CVPR 2017",
    "mask": "He, Gkioxari, Dollar & Girshick, Mask R-CNN, ICCV 2017; Lin et al., Feature Pyramid Networks for "
            "Object Detection, CVPR 2017",
}


# ------------------------------------------------------------------ pieces shared with ssd.py


def image_hw(image_size) -> tuple[int, int]:
    """300 -> (300, 300); (h, w) stays."""
    if isinstance(image_size, (tuple, list)):
        if len(image_size) != 2:
            raise CnnkitError(f"image_size must be an int or (height, width), got {image_size!r}")
        return int(image_size[0]), int(image_size[1])
    return int(image_size), int(image_size)


class FixedSizeTransform(GeneralizedRCNNTransform):
    """torchvision's detection input stage with its resizing switched off.

    cnnkit normalises the images before the model (with `default_cfg["mean"/"std"]`) and gives
    them at the size the model is meant for, so of torchvision's transform only the batching is
    left: images are zero-padded at the bottom / right to a multiple of `size_divisible`. The mean
    is 0 and the std 1, so its normalisation (x - 0) / 1 changes nothing; min_size = max_size =
    the image size, and `resize` returns its input (boxes and masks keep the input's pixels).
    """

    def __init__(self, image_size, in_chans: int, size_divisible: int = 32):
        h, w = image_hw(image_size)
        super().__init__(min(h, w), max(h, w), [0.0] * in_chans, [1.0] * in_chans, size_divisible)

    def resize(self, image, target=None):
        return image, target


def to_tv_targets(targets: Sequence[dict], masks: bool = False) -> list[dict]:
    """cnnkit targets (labels 0..K-1) -> torchvision's (labels 1..K, 0 being the background)."""
    if targets is None:
        raise CnnkitError("training needs targets: a list of {'boxes', 'labels'} dicts, one per image")
    out = []
    for t in targets:
        d = {"boxes": t["boxes"].float(), "labels": t["labels"].long() + 1}
        if masks:
            if "masks" not in t:
                raise CnnkitError("Mask R-CNN needs instance masks in its targets ('masks', (M, H, W))")
            d["masks"] = t["masks"].to(torch.uint8)
        out.append(d)
    return out


def from_tv_detections(dets: Sequence[dict]) -> list[dict]:
    """torchvision's detections -> cnnkit's: labels shifted back to 0..K-1, masks (N, 1, H, W) -> (N, H, W)."""
    out = []
    for d in dets:
        o = {"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - 1}
        if "masks" in d:
            o["masks"] = d["masks"][:, 0]
        out.append(o)
    return out


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """Run `module` in eval mode for a while, then give every submodule back its own mode."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in `module` by a FrozenBatchNorm2d with the same statistics, in place.

    A frozen norm is the fixed affine map y = (x - mean) / sqrt(var + eps) * gamma + beta: its four
    vectors are buffers, not parameters, so they are neither trained nor counted as parameters. Used
    when a detector fine-tunes a pretrained body with a few images per batch, too few for batch
    statistics.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                if child.weight is not None:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.running_mean is not None:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


def freeze_stages(model: nn.Module, trainable_layers: int | None) -> None:
    """Keep only the last `trainable_layers` stages of `model.feature_info` trainable.

    Every parameter registered before the first parameter of the first trainable stage stops
    receiving gradients (ResNet, 3: conv1, bn1 and layer1 are frozen, as in torchvision's detectors
    with a pretrained body). None, or at least the number of stages: everything trains.
    """
    info = model.feature_info
    if trainable_layers is None or trainable_layers >= len(info):
        return
    first = info[len(info) - trainable_layers]["module"] if trainable_layers > 0 else None
    for name, p in model.named_parameters():
        if first is not None and (name == first or name.startswith(first + ".")):
            break
        p.requires_grad_(False)


def make_body(model: str | nn.Module, reductions: Sequence[int], in_chans: int, backbone_args: dict | None = None,
              frozen_bn: bool = False, trainable_layers: int | None = None) -> Backbone:
    """A cnnkit model (by name, or built) as a `Backbone` at `reductions`, without its classifier head
    (a detector never calls it, and VGG's or MobileNetV3's would carry unused parameters)."""
    if isinstance(model, str):
        from .. import create_model

        model = create_model(model, num_classes=0, in_chans=in_chans, **(backbone_args or {}))
    if isinstance(getattr(model, "head", None), nn.Module):
        model.head = nn.Identity()
    if frozen_bn:
        freeze_batch_norm(model)
    if getattr(model, "feature_info", None):
        freeze_stages(model, trainable_layers)
    return Backbone(model, tuple(reductions))


def first_conv_name(module: nn.Module, prefix: str) -> str:
    return next(prefix + n for n, m in module.named_modules() if isinstance(m, nn.Conv2d))


def remap_bn_counters(sd: dict, model: nn.Module) -> dict:
    """BatchNorm has a `num_batches_tracked` buffer, FrozenBatchNorm2d none: drop or add it so
    state dicts move between the two."""
    own = model.state_dict()
    out = {k: v for k, v in sd.items() if not (k.endswith("num_batches_tracked") and k not in own)}
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in out:
            out[k] = torch.zeros_like(v, device="cpu")
    return out


# ------------------------------------------------------------------ the model


class FPNBackbone(nn.Module):
    """`Backbone` maps -> FeaturePyramidNetwork -> OrderedDict '0', '1', ..., 'pool', `out_channels` wide
    (what torchvision's R-CNNs take as their backbone)."""

    def __init__(self, body: Backbone, out_channels: int = 256):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body(x)  # [(B, C_i, H / r_i, W / r_i)]
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))  # + 'pool' at 2 * r_last


class RCNN(Detector):
    """A torchvision Faster / Mask R-CNN (`net`) with cnnkit's detector interface (see `_base.py` and
    this module's docstring): labels 0..K-1 outside, masks (N, H, W), settings pushed in before
    every prediction. In training mode without targets it predicts (the net briefly in eval mode)."""

    def __init__(self, net: FasterRCNN, num_classes: int, score_thresh: float = 0.001, nms_thresh: float = 0.5,
                 detections_per_img: int = 100):
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.has_masks = bool(net.roi_heads.has_mask())
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.push_settings()

    def push_settings(self) -> None:
        heads = self.net.roi_heads
        heads.score_thresh = float(self.score_thresh)
        heads.nms_thresh = float(self.nms_thresh)
        heads.detections_per_img = int(self.detections_per_img)

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        batch = list(images)  # torchvision takes a list of (C, H, W) images
        if self.training and targets is not None:
            return self.net(batch, to_tv_targets(targets, self.has_masks))  # the loss dict
        self.push_settings()
        with eval_mode(self.net) if self.training else contextlib.nullcontext():
            dets = self.net(batch)
        return from_tv_detections(dets)


# The two sizes: torchvision's (800 px COCO images) and a small one for 64-128 px images on a CPU.
_TV_SIZE = dict(image_size=800, frozen_bn=True, trainable_layers="auto", reductions=(4, 8, 16, 32),
                anchor_sizes=None, anchor_scale=8, fpn_channels=256, box_hidden=1024, mask_layers=(256,) * 4,
                rpn_pre_nms_top_n_train=2000, rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_train=2000,
                rpn_post_nms_top_n_test=1000, rpn_batch_size_per_image=256, box_batch_size_per_image=512,
                roi_sampling=2)
_SMALL = dict(image_size=128, frozen_bn=False, trainable_layers="auto", reductions=(4, 8, 16, 32),
              anchor_sizes=None, anchor_scale=2, fpn_channels=128, box_hidden=512, mask_layers=(128,) * 4,
              rpn_pre_nms_top_n_train=600, rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_train=300,
              rpn_post_nms_top_n_test=150, rpn_batch_size_per_image=64, box_batch_size_per_image=64,
              # one RoIAlign sample per bin: on a CPU RoIAlign's backward is half the step at 2x2 samples,
              # and 7x7 bins over 8-30 px objects on stride-4-16 maps already overlap
              roi_sampling=1)
_FRAME_KEYS = ("rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_train",
               "rpn_post_nms_top_n_test", "rpn_batch_size_per_image", "box_batch_size_per_image")


def _rcnn(name: str, body: str, masks: bool, preset: dict, num_classes: int, in_chans: int,
          backbone: str | nn.Module | None = None, backbone_args: dict | None = None, **kwargs) -> RCNN:
    unknown = set(kwargs) - set(_TV_SIZE) - {"score_thresh", "nms_thresh", "detections_per_img", "aspect_ratios",
                                              "rpn_nms_thresh", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh",
                                              "box_fg_iou_thresh", "box_bg_iou_thresh"}
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}")
    o = {**preset, **kwargs}
    if backbone is not None and "reductions" not in kwargs:
        o["reductions"] = (8, 16, 32)  # the strides nearly every cnnkit model has
    if o["trainable_layers"] == "auto":  # torchvision's: 3 stages with a frozen (pretrained) body, else all
        o["trainable_layers"] = 3 if o["frozen_bn"] else None
    reductions = tuple(o["reductions"])
    image_size = image_hw(o["image_size"])

    trunk = make_body(backbone or body, reductions, in_chans, backbone_args, o["frozen_bn"], o["trainable_layers"])
    fpn = FPNBackbone(trunk, o["fpn_channels"])
    levels = len(reductions) + 1  # + the max-pool level
    scale = o["anchor_scale"]  # anchor side / level stride: 8 for 800 px images (32 ... 512 px), 2 for small ones
    sizes = o["anchor_sizes"] or tuple(scale * r for r in reductions) + (2 * scale * reductions[-1],)
    if len(sizes) != levels:
        raise CnnkitError(f"anchor_sizes needs one size per FPN level ({levels}: strides {reductions} + pool), "
                          f"got {sizes}")
    ratios = tuple(o.get("aspect_ratios") or (0.5, 1.0, 2.0))
    anchors = AnchorGenerator(tuple((int(s),) for s in sizes), (ratios,) * levels)
    names = [str(i) for i in range(len(reductions))]  # RoIs are read from P2..P5, not from the pool level
    ch = o["fpn_channels"]
    frame = dict(
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(ch, anchors.num_anchors_per_location()[0]),
        box_roi_pool=MultiScaleRoIAlign(names, output_size=7, sampling_ratio=o["roi_sampling"]),
        box_head=TwoMLPHead(ch * 7 * 7, o["box_hidden"]),
        box_predictor=FastRCNNPredictor(o["box_hidden"], num_classes),
        **{k: o[k] for k in _FRAME_KEYS},
        **{k: o[k] for k in ("rpn_nms_thresh", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "box_fg_iou_thresh",
                             "box_bg_iou_thresh") if k in o},
    )
    if masks:
        layers = tuple(o["mask_layers"])
        frame.update(mask_roi_pool=MultiScaleRoIAlign(names, output_size=14, sampling_ratio=o["roi_sampling"]),
                     mask_head=MaskRCNNHeads(ch, layers, 1),
                     mask_predictor=MaskRCNNPredictor(layers[-1], layers[-1], num_classes))
    cls = MaskRCNN if masks else FasterRCNN
    net = cls(fpn, num_classes=None, min_size=min(image_size), max_size=max(image_size),
              image_mean=[0.0] * in_chans, image_std=[1.0] * in_chans, **frame)
    net.transform = FixedSizeTransform(image_size, in_chans, size_divisible=32)
    model = RCNN(net, num_classes, o.get("score_thresh", 0.001), o.get("nms_thresh", 0.5),
                 o.get("detections_per_img", 100))

    bname = backbone if isinstance(backbone, str) else (body if backbone is None else type(backbone).__name__)
    cfg = make_cfg((3,) + image_size, IMAGENET_MEAN, IMAGENET_STD,
                   first_conv=first_conv_name(trunk, "net.backbone.body."),
                   classifier="net.roi_heads.box_predictor.cls_score", paper=PAPERS["mask" if masks else "faster"],
                   task="detect", background=True, export=False, masks=masks, backbone=bname, reductions=reductions,
                   anchor_sizes=tuple(int(s) for s in sizes), fpn_channels=ch, frozen_bn=o["frozen_bn"],
                   notes="torchvision's FasterRCNN / MaskRCNN on a cnnkit body; input normalised by cnnkit "
                         "and never resized (the framework's transform: mean 0, std 1, no resize)")
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture=name,
                                  tv_name=name if backbone is None and preset is _TV_SIZE else None)
    return model


_OPTIONS = """
    Keyword options: image_size (int or (h, w): the size the model is meant for; sets only the
    default_cfg, since the input is never resized), backbone (any cnnkit model name, or a built
    model with feature_info, in place of the default body; its stride-8/16/32 stages unless
    `reductions` is given), backbone_args (dict for that model), reductions (body strides fed to
    the FPN), frozen_bn (BatchNorm2d -> FrozenBatchNorm2d in the body), trainable_layers (body
    stages left trainable, from the last; None: all; default 3 with frozen_bn, else all),
    anchor_sizes (one per FPN level, the pool level last; default anchor_scale x each level's
    stride), anchor_scale (8 for the ResNet-50 models: 32-512 px as torchvision's; 2 for the small
    ones), aspect_ratios, fpn_channels, box_hidden (the box head's FC width), mask_layers (Mask
    R-CNN's conv widths), score_thresh (0.001), nms_thresh (0.5), detections_per_img (100), and
    torchvision's rpn_* / box_* sampling and NMS counts.
    The input is not resized and not normalised again: the framework's transform has mean 0, std 1
    and min_size = max_size = the image size (cnnkit normalises with default_cfg's mean / std)."""


def _doc(text: str):
    def deco(fn):
        fn.__doc__ = text + "\n" + _OPTIONS
        return fn

    return deco


@register_model
@_doc("""Faster R-CNN, ResNet-50 FPN, torchvision's model on cnnkit's ResNet-50 (num_classes counts the
    background: 91 for COCO). 41,755,286 parameters at 91 classes with frozen BatchNorm (the default,
    torchvision's setting for a pretrained body, with 3 trainable stages) and 41,808,406 with
    frozen_bn=False (torchvision built without a pretrained body): a frozen norm's scale and shift
    are buffers. torchvision's state dicts load with `load_torchvision_weights`.""")
def fasterrcnn_resnet50_fpn(num_classes: int = 91, in_chans: int = 3, **kwargs) -> RCNN:
    return _rcnn("fasterrcnn_resnet50_fpn", "resnet50", False, _TV_SIZE, num_classes, in_chans, **kwargs)


@register_model
@_doc("""Mask R-CNN, ResNet-50 FPN, torchvision's model on cnnkit's ResNet-50: 44,401,393 parameters at 91
    classes with frozen BatchNorm (default) and 44,454,513 with frozen_bn=False, as torchvision's.
    Eval outputs also hold masks (N, H, W) in [0, 1].""")
def maskrcnn_resnet50_fpn(num_classes: int = 91, in_chans: int = 3, **kwargs) -> RCNN:
    return _rcnn("maskrcnn_resnet50_fpn", "resnet50", True, _TV_SIZE, num_classes, in_chans, **kwargs)


@register_model
@_doc("""Faster R-CNN on a ResNet-18 FPN for small images (128 px by default; 64-128 px): anchors 8, 16,
    32, 64, 128 px on P2..P6, a 128-wide FPN, a 512-wide box head, fewer proposals and samples
    (RPN 300 / 150 proposals after NMS in training / eval, 64 anchors and 128 RoIs sampled per
    image), trainable BatchNorm (right for training from scratch on little data).""")
def fasterrcnn_resnet18_fpn(num_classes: int = 91, in_chans: int = 3, **kwargs) -> RCNN:
    return _rcnn("fasterrcnn_resnet18_fpn", "resnet18", False, _SMALL, num_classes, in_chans, **kwargs)


@register_model
@_doc("""Faster R-CNN on a MobileNetV3-Large FPN (strides 8, 16, 32 + pool; anchors 16-128 px) for small
    images, with the small-variant settings of fasterrcnn_resnet18_fpn.""")
def fasterrcnn_mobilenet_v3_large_fpn(num_classes: int = 91, in_chans: int = 3, **kwargs) -> RCNN:
    kwargs.setdefault("reductions", (8, 16, 32))
    return _rcnn("fasterrcnn_mobilenet_v3_large_fpn", "mobilenet_v3_large", False, _SMALL, num_classes, in_chans,
                 **kwargs)


@register_model
@_doc("""Mask R-CNN on a ResNet-18 FPN for small images: fasterrcnn_resnet18_fpn's settings plus a mask
    head of four 128-wide 3x3 convs (RoIAlign 14x14 -> 28x28 mask logits per class).""")
def maskrcnn_resnet18_fpn(num_classes: int = 91, in_chans: int = 3, **kwargs) -> RCNN:
    return _rcnn("maskrcnn_resnet18_fpn", "resnet18", True, _SMALL, num_classes, in_chans, **kwargs)


# ------------------------------------------------------------------ torchvision weights


@register_tv_converter("fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn")
def _from_torchvision(sd, model):
    """torchvision's `backbone.body.*` (its ResNet without the classifier) is our
    `net.backbone.body.body.*` (cnnkit's ResNet inside `Backbone`, same module names); every other
    module is torchvision's own, under `net.`. BatchNorm counters are dropped or added to fit."""
    out = {}
    for k, v in sd.items():
        if k.startswith("backbone.body."):
            out["net.backbone.body.body." + k[len("backbone.body."):]] = v
        else:
            out["net." + k] = v
    return remap_bn_counters(out, model)
