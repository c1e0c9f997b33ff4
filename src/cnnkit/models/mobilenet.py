"""MobileNet V1, V2 and V3: depthwise separable convolutions for mobile devices (the guide's section 7.2).

- V1 (Howard et al., 2017): a plain stack of depthwise separable convs (depthwise 3x3 + pointwise 1x1).
- V2 (Sandler et al., 2018): inverted residuals with linear bottlenecks (rows `t, c, n, s`).
- V3 (Howard et al., 2019): V2 blocks found by architecture search, plus squeeze-excitation with a
  hard-sigmoid gate and hard-swish activations in the deeper layers.

Every variant's body is its paper table; the blocks come from `cnnkit.nn` (separable, mbconv, se).
Module layout: `stem` -> `stages` (one Sequential per stage) -> `conv_head` (V2/V3) -> `head`.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..nn.act import ActLayer, create_act
from ..nn.conv import ConvNormAct
from ..nn.mbconv import InvertedResidual, make_divisible
from ..nn.norm import NormLayer, create_global_pool
from ..nn.separable import DepthwiseSeparableConv
from ..registry import register_model
from ._base import ClassifierHead, ClassifierModel, adapt_cfg, make_cfg
from ._tv import register_tv_converter


class PreLogitsHead(nn.Module):
    """Global pool -> flatten -> Linear(C, hidden) -> act -> dropout -> Linear(hidden, classes).

    MobileNetV3 and GhostNet put one more (wide) layer after pooling: it is cheap there because it
    runs on a 1x1 map. `pre_logits=True` returns the (B, hidden) vector."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, act_layer: ActLayer = "hardswish",
                 drop_rate: float = 0.0):
        super().__init__()
        self.in_features = hidden  # the classifier's input width
        self.pool = create_global_pool("avg")
        self.flatten = nn.Flatten(1)
        self.pre = nn.Linear(in_features, hidden)
        self.act = create_act(act_layer, inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.act(self.pre(self.flatten(self.pool(x)))))  # (B, hidden)
        return x if pre_logits else self.fc(x)

    def reset(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()


def _cfg(name: str, tv_name: str | None, in_chans: int, num_classes: int, small_input: bool, **extra) -> dict:
    size = 32 if small_input else 224
    cfg = make_cfg(input_size=(3, size, size), first_conv="stem.conv", classifier="head.fc",
                   small_input=small_input, **extra)
    return adapt_cfg(cfg, in_chans, num_classes, architecture=name, tv_name=tv_name)


def _stage_info(stages: list[list[nn.Module]], strides: list[int], reduction: int) -> list[dict]:
    """feature_info for `stages.i`: channels and cumulative stride after each stage."""
    info = []
    for i, (blocks, s) in enumerate(zip(stages, strides)):
        reduction *= s
        info.append(dict(num_chs=blocks[-1].out_channels, reduction=reduction, module=f"stages.{i}"))
    return info


# --------------------------------------------------------------------------------------------- V1


class MobileNetV1(ClassifierModel):
    """MobileNetV1: 3x3 conv stem, then depthwise separable convs; `width_mult` is the paper's alpha.

    Paper departures: Table 1 gives the last depthwise conv stride 2 on a 7x7 map (a typo; stride 1
    here, as in every implementation). Widths are rounded to multiples of 8 for alpha != 1.
    `act_layer="relu6"` gives the TensorFlow / timm variant (ReLU6 everywhere).
    """

    def __init__(self, arch, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 stem_chs: int = 32, act_layer: ActLayer = "relu", norm_layer: NormLayer = "batch",
                 drop_rate: float = 0.0, small_input: bool = False):
        super().__init__()
        ch = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
        stem_stride = 1 if small_input else 2
        self.stem = ConvNormAct(in_chans, ch(stem_chs), 3, stem_stride, norm_layer=norm_layer, act_layer=act_layer)
        stages, c_in = [], ch(stem_chs)
        for c, n, s in arch:
            blocks = []
            for j in range(n):
                blocks.append(DepthwiseSeparableConv(c_in, ch(c), 3, s if j == 0 else 1, norm_layer=norm_layer,
                                                     act_layer=act_layer))
                c_in = ch(c)
            stages.append(blocks)
        self.stages = nn.Sequential(*[nn.Sequential(*b) for b in stages])
        self.feature_info = _stage_info(stages, [s for _, _, s in arch], stem_stride)
        self.num_features = c_in
        self.num_classes = num_classes
        self.head = ClassifierHead(c_in, num_classes, drop_rate=drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))  # (B, 1024*alpha, H/32, W/32)


@register_model
def mobilenet_v1(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV1:
    """MobileNetV1 1.0x. 4,231,976 parameters at 1000 classes (paper: 4.2M; same as timm `mobilenetv1_100`);
    width_mult 0.75 / 0.5 / 0.25: 2,585,560 / 1,331,592 / 470,072 (paper: 2.6M / 1.3M / 0.5M).

    kwargs: width_mult (alpha), act_layer, norm_layer, drop_rate, small_input.
    """
    arch = (  # c, n, s: n depthwise separable blocks with c output channels, the first with stride s (Table 1)
        (64, 1, 1),
        (128, 2, 2),
        (256, 2, 2),
        (512, 6, 2),
        (1024, 2, 2),
    )
    model = MobileNetV1(arch, num_classes, in_chans, **kwargs)
    model.default_cfg = _cfg("mobilenet_v1", None, in_chans, num_classes, kwargs.get("small_input", False),
                             paper="Howard et al., MobileNets, arXiv 2017",
                             notes="last depthwise conv stride 1 (Table 1's stride 2 at 7x7 is a typo); "
                                   "widths rounded to multiples of 8")
    return model


# --------------------------------------------------------------------------------------------- V2


class MobileNetV2(ClassifierModel):
    """MobileNetV2: rows (t, c, n, s) of inverted residuals = stages; torchvision's layout and rounding
    (widths to multiples of 8, last conv 1280 * max(1, width_mult))."""

    def __init__(self, arch, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 stem_chs: int = 32, last_chs: int = 1280, act_layer: ActLayer = "relu6",
                 norm_layer: NormLayer = "batch", drop_rate: float = 0.2, drop_path_rate: float = 0.0,
                 small_input: bool = False):
        super().__init__()
        stem_stride = 1 if small_input else 2
        c_in = make_divisible(stem_chs * width_mult, 8)
        self.stem = ConvNormAct(in_chans, c_in, 3, stem_stride, norm_layer=norm_layer, act_layer=act_layer)
        total, idx, stages = sum(n for _, _, n, _ in arch), 0, []
        for t, c, n, s in arch:
            c_out, blocks = make_divisible(c * width_mult, 8), []
            for j in range(n):
                blocks.append(InvertedResidual(c_in, c_out, int(round(c_in * t)), 3, s if j == 0 else 1,
                                               act_layer=act_layer, norm_layer=norm_layer,
                                               drop_path=drop_path_rate * idx / total))
                c_in, idx = c_out, idx + 1
            stages.append(blocks)
        self.stages = nn.Sequential(*[nn.Sequential(*b) for b in stages])
        self.num_features = make_divisible(last_chs * max(1.0, width_mult), 8)
        self.conv_head = ConvNormAct(c_in, self.num_features, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.feature_info = _stage_info(stages, [s for *_, s in arch], stem_stride)
        self.feature_info.append(dict(num_chs=self.num_features, reduction=self.feature_info[-1]["reduction"],
                                      module="conv_head"))
        self.num_classes = num_classes
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate=drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_head(self.stages(self.stem(x)))  # (B, 1280, H/32, W/32)


@register_model
def mobilenet_v2(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV2:
    """MobileNetV2 1.0x: 3,504,872 parameters (= torchvision). kwargs: width_mult, act_layer, norm_layer,
    drop_rate, drop_path_rate, small_input."""
    arch = (  # t (expansion), c (out channels), n (repeats), s (first stride): Table 2
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )
    model = MobileNetV2(arch, num_classes, in_chans, **kwargs)
    model.default_cfg = _cfg("mobilenet_v2", "mobilenet_v2", in_chans, num_classes, kwargs.get("small_input", False),
                             paper="Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018")
    return model


# --------------------------------------------------------------------------------------------- V3

_V3_ACT = {"RE": "relu", "HS": "hardswish"}


class MobileNetV3(ClassifierModel):
    """MobileNetV3: rows (k, exp, c, se, nl, s), one inverted residual each; a new stage starts at every
    stride-2 row. SE squeezes to make_divisible(exp / 4, 8) with a hard-sigmoid gate; the head is
    conv 1x1 (6 * last width, hard-swish) -> pool -> Linear(hidden) -> hard-swish -> dropout -> fc.
    BatchNorm eps 1e-3, momentum 0.01 (torchvision, from the TensorFlow original).

    dilated: the last stage (from the last stride-2 row on) keeps stride 1 and its depthwise convs
    dilate by 2, as torchvision's `dilated=True` for segmentation: output stride 16 instead of 32.
    Module names and stages stay the same; feature_info reports stride 16 for that stage."""

    def __init__(self, arch, head_hidden: int, num_classes: int = 1000, in_chans: int = 3,
                 width_mult: float = 1.0, stem_chs: int = 16, norm_layer: NormLayer = None,
                 drop_rate: float = 0.2, drop_path_rate: float = 0.0, small_input: bool = False,
                 dilated: bool = False):
        super().__init__()
        last_down = max(i for i, row in enumerate(arch) if row[-1] > 1)
        norm_layer = norm_layer or partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)
        ch = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
        stem_stride = 1 if small_input else 2
        c_in = ch(stem_chs)
        self.stem = ConvNormAct(in_chans, c_in, 3, stem_stride, norm_layer=norm_layer, act_layer="hardswish")
        stages, strides = [], []
        for i, (k, exp, c, se, nl, s) in enumerate(arch):
            mid = ch(exp)
            dil = 2 if dilated and i >= last_down else 1
            block = InvertedResidual(c_in, ch(c), mid, k, 1 if dil > 1 else s, dilation=dil, act_layer=_V3_ACT[nl],
                                     norm_layer=norm_layer, se_chs=make_divisible(mid // 4, 8) if se else 0,
                                     se_act="relu", se_gate="hardsigmoid", drop_path=drop_path_rate * i / len(arch))
            if not stages or s > 1:
                stages.append([])
                strides.append(1 if dil > 1 else s)
            stages[-1].append(block)
            c_in = ch(c)
        self.stages = nn.Sequential(*[nn.Sequential(*b) for b in stages])
        self.num_features = 6 * c_in
        self.conv_head = ConvNormAct(c_in, self.num_features, 1, norm_layer=norm_layer, act_layer="hardswish")
        self.feature_info = _stage_info(stages, strides, stem_stride)
        self.feature_info.append(dict(num_chs=self.num_features, reduction=self.feature_info[-1]["reduction"],
                                      module="conv_head"))
        self.num_classes = num_classes
        self.head = PreLogitsHead(self.num_features, ch(head_hidden), num_classes, "hardswish", drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_head(self.stages(self.stem(x)))  # (B, 6 * last width, H/32, W/32)


def _v3(name: str, arch, head_hidden: int, num_classes: int, in_chans: int, **kwargs) -> MobileNetV3:
    model = MobileNetV3(arch, head_hidden, num_classes, in_chans, **kwargs)
    model.default_cfg = _cfg(name, name, in_chans, num_classes, kwargs.get("small_input", False),
                             paper="Howard et al., Searching for MobileNetV3, ICCV 2019",
                             notes="BatchNorm eps 1e-3 / momentum 0.01 and SE width make_divisible(exp/4, 8) "
                                   "as torchvision")
    return model


@register_model
def mobilenet_v3_large(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV3:
    """MobileNetV3-Large 1.0x: 5,483,032 parameters (= torchvision). kwargs: width_mult, norm_layer,
    drop_rate, drop_path_rate, small_input."""
    arch = (  # kernel, expansion width, out, SE, non-linearity, stride: Table 1
        (3, 16, 16, False, "RE", 1),
        (3, 64, 24, False, "RE", 2),
        (3, 72, 24, False, "RE", 1),
        (5, 72, 40, True, "RE", 2),
        (5, 120, 40, True, "RE", 1),
        (5, 120, 40, True, "RE", 1),
        (3, 240, 80, False, "HS", 2),
        (3, 200, 80, False, "HS", 1),
        (3, 184, 80, False, "HS", 1),
        (3, 184, 80, False, "HS", 1),
        (3, 480, 112, True, "HS", 1),
        (3, 672, 112, True, "HS", 1),
        (5, 672, 160, True, "HS", 2),
        (5, 960, 160, True, "HS", 1),
        (5, 960, 160, True, "HS", 1),
    )
    return _v3("mobilenet_v3_large", arch, 1280, num_classes, in_chans, **kwargs)


@register_model
def mobilenet_v3_small(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV3:
    """MobileNetV3-Small 1.0x: 2,542,856 parameters (= torchvision). kwargs as mobilenet_v3_large."""
    arch = (  # kernel, expansion width, out, SE, non-linearity, stride: Table 2
        (3, 16, 16, True, "RE", 2),
        (3, 72, 24, False, "RE", 2),
        (3, 88, 24, False, "RE", 1),
        (5, 96, 40, True, "HS", 2),
        (5, 240, 40, True, "HS", 1),
        (5, 240, 40, True, "HS", 1),
        (5, 120, 48, True, "HS", 1),
        (5, 144, 48, True, "HS", 1),
        (5, 288, 96, True, "HS", 2),
        (5, 576, 96, True, "HS", 1),
        (5, 576, 96, True, "HS", 1),
    )
    return _v3("mobilenet_v3_small", arch, 1024, num_classes, in_chans, **kwargs)


# ------------------------------------------------------------------------------ torchvision weights


def _cna(tv: str, ours: str) -> dict:
    """torchvision's Conv2dNormActivation numbers its children (0: conv, 1: norm); ConvNormAct names them."""
    return {f"{tv}.0": f"{ours}.conv", f"{tv}.1": f"{ours}.bn"}


def _ir_pairs(tv: str, ours: str, block: InvertedResidual, split_pwl: bool = False) -> dict:
    """Module renames for one inverted residual. torchvision numbers the parts in order
    ([expand], depthwise, [SE], project); `split_pwl`: MobileNetV2's projection is a bare conv + BN."""
    pairs, i = {}, 0
    for name in ("conv_pw", "conv_dw", "se", "conv_pwl"):
        if isinstance(getattr(block, name), nn.Identity):
            continue
        q = f"{tv}.{i}"
        if name == "se":
            pairs.update({f"{q}.fc1": f"{ours}.se.fc1", f"{q}.fc2": f"{ours}.se.fc2"})
        elif name == "conv_pwl" and split_pwl:
            pairs.update({q: f"{ours}.conv_pwl.conv", f"{tv}.{i + 1}": f"{ours}.conv_pwl.bn"})
        else:
            pairs.update(_cna(q, f"{ours}.{name}"))
        i += 1
    return pairs


def _rename(sd: dict, pairs: dict) -> dict:
    """Rename state-dict keys module by module; keys of unknown modules are kept (and then reported)."""
    out = {}
    for k, v in sd.items():
        mod, _, leaf = k.rpartition(".")
        out[f"{pairs.get(mod, mod)}.{leaf}"] = v
    return out


def _flat_tv_pairs(model: nn.Module, block_seq: str, split_pwl: bool) -> dict:
    """torchvision's MobileNetV2/V3 keep every block flat in `features`: 0 stem, 1..N blocks, N+1 last conv."""
    pairs, k = _cna("features.0", "stem"), 1
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage):
            pairs.update(_ir_pairs(f"features.{k}.{block_seq}", f"stages.{i}.{j}", block, split_pwl))
            k += 1
    pairs.update(_cna(f"features.{k}", "conv_head"))
    return pairs


@register_tv_converter("mobilenet_v2")
def _convert_v2(sd, model):
    return _rename(sd, {**_flat_tv_pairs(model, "conv", split_pwl=True), "classifier.1": "head.fc"})


@register_tv_converter("mobilenet_v3_*")
def _convert_v3(sd, model):
    return _rename(sd, {**_flat_tv_pairs(model, "block", split_pwl=False),
                        "classifier.0": "head.pre", "classifier.3": "head.fc"})
