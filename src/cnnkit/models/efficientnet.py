"""EfficientNet B0-B7 (Tan & Le, ICML 2019): one baseline, scaled in depth, width and resolution together.

The guide's compound scaling (section 5.6): pick phi, then

    depth d = alpha^phi,   width w = beta^phi,   resolution r = gamma^phi,
    alpha = 1.2, beta = 1.1, gamma = 1.15,  with  alpha * beta^2 * gamma^2 ~ 2

so FLOPs (linear in depth, quadratic in width and resolution) grow by about 2^phi. The baseline B0
is the paper's Table 1 (MBConv rows below). The *published* B1-B7 do not use alpha^phi exactly: their
coefficients were rounded by hand (and torchvision's weights follow them). Both rules are here:

    scaling="published" (default): the table `PUBLISHED` -> parameter counts equal torchvision's
    scaling="compound" (or "guide"): d = 1.2^phi, w = 1.1^phi, r = round(224 * 1.15^phi)  (the guide)

Guide rule vs published coefficients (`print(format_scaling_table())`; parameters at 1000 classes):

    phi | depth 1.2^phi  pub | width 1.1^phi  pub | res 224*1.15^phi  pub | FLOPs x | params compound   published
      0 |          1.00  1.0 |          1.00  1.0 |              224  224 |    1.00 |       5,288,548   5,288,548
      1 |          1.20  1.1 |          1.10  1.0 |              258  240 |    1.92 |       9,109,994   7,794,184
      2 |          1.44  1.2 |          1.21  1.1 |              296  260 |    3.69 |      12,233,232   9,109,994
      3 |          1.73  1.4 |          1.33  1.2 |              341  300 |    7.08 |      16,338,888  12,233,232
      4 |          2.07  1.8 |          1.46  1.4 |              392  380 |   13.60 |      25,940,032  19,341,616
      5 |          2.49  2.2 |          1.61  1.6 |              451  456 |   26.11 |      33,702,516  30,389,784
      6 |          2.99  2.6 |          1.77  1.8 |              518  528 |   50.14 |      45,477,208  43,040,704
      7 |          3.58  3.1 |          1.95  2.0 |              596  600 |   96.28 |      68,741,810  66,347,960

alpha * beta^2 * gamma^2 = 1.92, so the guide predicts FLOPs x 1.92^phi (column "FLOPs x"). The
published variants are shallower than alpha^phi at every phi >= 1 (3.1 vs 3.58 at B7), narrower than
beta^phi up to B5 (slightly wider at B6, B7), and use lower resolutions than gamma^phi up to B4 (higher
from B5). After channel rounding, the guide's phi=1 and phi=2 networks are exactly the published B2 and
B3 networks (w, d = 1.1, 1.2 and 1.21, 1.44 round to the same layers as 1.1, 1.2 and 1.2, 1.4), at
258 / 296 px instead of 260 / 300.

Departures from the paper, all as torchvision: symmetric padding (TensorFlow uses "SAME", asymmetric
at stride 2); BatchNorm eps 1e-5 / momentum 0.1 for B0-B4 but 1e-3 / 0.01 for B5-B7 (TensorFlow uses
1e-3 / 0.01 everywhere; torchvision's B5-B7 weights were ported from it); SE squeezes to
max(1, block input channels // 4). Stochastic depth: rate 0.2 grows linearly with the block index.
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from ..nn.act import ActLayer
from ..nn.conv import ConvNormAct
from ..nn.mbconv import InvertedResidual, make_divisible
from ..nn.norm import NormLayer
from ..registry import CnnkitError, register_model, suggest
from ._base import ClassifierHead, ClassifierModel, adapt_cfg, make_cfg
from ._tv import register_tv_converter
from .mobilenet import _cna, _ir_pairs, _rename

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # found by grid search on B0 under alpha * beta^2 * gamma^2 ~ 2
BASE_RESOLUTION = 224

# phi: (width multiplier, depth multiplier, resolution, dropout): the released B0-B7
PUBLISHED = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
    3: (1.2, 1.4, 300, 0.3),
    4: (1.4, 1.8, 380, 0.4),
    5: (1.6, 2.2, 456, 0.4),
    6: (1.8, 2.6, 528, 0.5),
    7: (2.0, 3.1, 600, 0.5),
}

# B0, Table 1: expand ratio t, kernel k, first stride s, out channels c, repeats n (stem 32, head 1280)
B0_ARCH = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)

SCALINGS = ("published", "compound", "guide")  # "guide" = "compound"


def efficientnet_scaling(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA,
                         base_resolution: int = BASE_RESOLUTION) -> dict:
    """The guide's compound scaling for coefficient phi: depth alpha^phi, width beta^phi, resolution
    gamma^phi (times the base 224 px) and the FLOPs factor (alpha * beta^2 * gamma^2)^phi ~ 2^phi."""
    return dict(phi=phi, depth=alpha**phi, width=beta**phi, resolution=round(base_resolution * gamma**phi),
                flops=(alpha * beta**2 * gamma**2) ** phi)


def _coefficients(phi: float, scaling: str) -> tuple[float, float, int, float]:
    """(width, depth, resolution, dropout) for `phi` under `scaling`."""
    if scaling not in SCALINGS:
        raise suggest(scaling, SCALINGS, "EfficientNet scaling rule")
    scaling = "compound" if scaling == "guide" else scaling
    nearest = min(7, max(0, round(phi)))
    if scaling == "published":
        if phi not in PUBLISHED:
            raise CnnkitError(f"published EfficientNet coefficients exist for phi 0..7 only, got {phi}; "
                             f"use scaling='compound' for other values")
        return PUBLISHED[phi]
    g = efficientnet_scaling(phi)
    return g["width"], g["depth"], g["resolution"], PUBLISHED[nearest][3]


class EfficientNet(ClassifierModel):
    """EfficientNet: stem conv 3x3 s2 -> MBConv stages (B0 rows scaled) -> conv 1x1 (4x last width) -> head.

    Width: every channel count c -> make_divisible(c * width, 8); depth: every repeat n -> ceil(n * depth).
    """

    def __init__(self, arch=B0_ARCH, width_mult: float = 1.0, depth_mult: float = 1.0, num_classes: int = 1000,
                 in_chans: int = 3, stem_chs: int = 32, act_layer: ActLayer = "silu",
                 norm_layer: NormLayer = "batch", drop_rate: float = 0.2, drop_path_rate: float = 0.2,
                 se_ratio: float = 0.25, small_input: bool = False):
        super().__init__()
        ch = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
        stem_stride = 1 if small_input else 2
        c_in = ch(stem_chs)
        self.stem = ConvNormAct(in_chans, c_in, 3, stem_stride, norm_layer=norm_layer, act_layer=act_layer)
        repeats = [int(math.ceil(n * depth_mult)) for *_, n in arch]
        total, idx, stages, self.feature_info, red = sum(repeats), 0, [], [], stem_stride
        for i, ((t, k, s, c, _), n) in enumerate(zip(arch, repeats)):
            blocks = []
            for j in range(n):
                se_chs = max(1, int(c_in * se_ratio)) if se_ratio > 0 else 0  # from the block *input* width
                blocks.append(InvertedResidual(c_in, ch(c), make_divisible(c_in * t, 8), k, s if j == 0 else 1,
                                               act_layer=act_layer, norm_layer=norm_layer, se_chs=se_chs,
                                               se_act=act_layer, se_gate="sigmoid",
                                               drop_path=drop_path_rate * idx / total))
                c_in, idx = ch(c), idx + 1
            stages.append(nn.Sequential(*blocks))
            red *= s
            self.feature_info.append(dict(num_chs=c_in, reduction=red, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = 4 * c_in  # 1280 for B0
        self.conv_head = ConvNormAct(c_in, self.num_features, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.feature_info.append(dict(num_chs=self.num_features, reduction=red, module="conv_head"))
        self.num_classes = num_classes
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate=drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_head(self.stages(self.stem(x)))  # (B, 4 * last width, H/32, W/32)


def efficientnet(phi: float = 0, scaling: str = "compound", num_classes: int = 1000, in_chans: int = 3,
                 name: str | None = None, tv_name: str | None = None, **kwargs) -> EfficientNet:
    """EfficientNet for any phi. `scaling="compound"` uses the guide's d, w, r = 1.2^phi, 1.1^phi, 1.15^phi
    (phi may be fractional); `scaling="published"` the released B0-B7 coefficients (integer phi 0..7).

    kwargs: act_layer, norm_layer, drop_rate (default: the nearest published variant's),
    drop_path_rate (0.2), se_ratio (0.25), small_input.
    """
    width, depth, res, dropout = _coefficients(phi, scaling)
    scaling = "compound" if scaling == "guide" else scaling
    if "norm_layer" not in kwargs:  # torchvision: TensorFlow's BN settings for its B5-B7 ports only
        kwargs["norm_layer"] = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01) if phi >= 5 else nn.BatchNorm2d
    kwargs.setdefault("drop_rate", dropout)
    model = EfficientNet(B0_ARCH, width, depth, num_classes, in_chans, **kwargs)
    small = kwargs.get("small_input", False)
    name = name or f"efficientnet_phi{phi:g}_{scaling}"
    cfg = make_cfg(input_size=(3, 32, 32) if small else (3, res, res), first_conv="stem.conv", classifier="head.fc",
                   small_input=small,
                   paper="Tan & Le, EfficientNet: Rethinking Model Scaling for CNNs, ICML 2019",
                   scaling=dict(rule=scaling, phi=phi, width=width, depth=depth, resolution=res,
                                guide=efficientnet_scaling(phi)),
                   notes="torchvision layout: symmetric padding; BN eps 1e-5 (B0-B4) / 1e-3 (B5-B7); "
                         "SE width max(1, block input // 4)")
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture=name, tv_name=tv_name)
    return model


def _variant(phi: int, num_classes: int, in_chans: int, scaling: str = "published", **kwargs) -> EfficientNet:
    name = f"efficientnet_b{phi}"
    return efficientnet(phi, scaling, num_classes, in_chans, name=name,
                        tv_name=name if scaling == "published" else None, **kwargs)


@register_model
def efficientnet_b0(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B0 (phi 0, 224 px): 5,288,548 parameters (= torchvision). kwargs: scaling
    ("published" | "compound"), act_layer, norm_layer, drop_rate, drop_path_rate, se_ratio, small_input."""
    return _variant(0, num_classes, in_chans, **kwargs)


@register_model
def efficientnet_b1(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B1 (width 1.0, depth 1.1, 240 px)."""
    return _variant(1, num_classes, in_chans, **kwargs)


@register_model
def efficientnet_b2(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B2 (width 1.1, depth 1.2, 260 px)."""
    return _variant(2, num_classes, in_chans, **kwargs)


@register_model
def efficientnet_b3(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B3 (width 1.2, depth 1.4, 300 px)."""
    return _variant(3, num_classes, in_chans, **kwargs)


@register_model
def efficientnet_b4(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B4 (width 1.4, depth 1.8, 380 px)."""
    return _variant(4, num_classes, in_chans, **kwargs)


@register_model
def efficientnet_b5(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B5 (width 1.6, depth 2.2, 456 px)."""
    return _variant(5, num_classes, in_chans, **kwargs)


@register_model
def efficientnet_b6(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B6 (width 1.8, depth 2.6, 528 px)."""
    return _variant(6, num_classes, in_chans, **kwargs)


@register_model
def efficientnet_b7(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B7 (width 2.0, depth 3.1, 600 px)."""
    return _variant(7, num_classes, in_chans, **kwargs)


def scaling_table(count_params: bool = True) -> list[dict]:
    """One row per phi 0..7: the guide's alpha^phi, beta^phi, 224 * gamma^phi next to the published
    depth, width, resolution, and (optionally) both models' parameter counts at 1000 classes."""
    rows = []
    for phi, (w, d, r, _) in PUBLISHED.items():
        g = efficientnet_scaling(phi)
        row = dict(phi=phi, guide_depth=g["depth"], depth=d, guide_width=g["width"], width=w,
                   guide_resolution=g["resolution"], resolution=r, flops=g["flops"])
        if count_params:
            for rule in ("compound", "published"):
                with torch.device("meta"):  # no memory is allocated, even for B7
                    m = efficientnet(phi, rule)
                row[f"params_{rule}"] = sum(p.numel() for p in m.parameters())
        rows.append(row)
    return rows


def format_scaling_table(rows: list[dict] | None = None) -> str:
    """`scaling_table()` as text: for each quantity, the guide's value then the published one."""
    rows = scaling_table() if rows is None else rows
    has_params = "params_compound" in rows[0]
    lines = ["phi | depth 1.2^phi  pub | width 1.1^phi  pub | res 224*1.15^phi  pub | FLOPs x"
             + (" | params compound   published" if has_params else "")]
    for r in rows:
        line = (f"{r['phi']:>3} | {r['guide_depth']:13.2f} {r['depth']:4.1f} | {r['guide_width']:13.2f} "
                f"{r['width']:4.1f} | {r['guide_resolution']:16d} {r['resolution']:4d} | {r['flops']:7.2f}")
        if has_params:
            line += f" | {r['params_compound']:>15,} {r['params_published']:>11,}"
        lines.append(line)
    return "\n".join(lines)


@register_tv_converter("efficientnet_b*")
def _convert(sd, model):
    """torchvision: features.0 stem, features.1..7 stages (each block's parts in `.block`), features.8 last conv."""
    pairs = _cna("features.0", "stem")
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage):
            pairs.update(_ir_pairs(f"features.{i + 1}.{j}.block", f"stages.{i}.{j}", block))
    pairs.update(_cna(f"features.{len(model.stages) + 1}", "conv_head"))
    pairs["classifier.1"] = "head.fc"
    return _rename(sd, pairs)
