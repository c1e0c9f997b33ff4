"""What every segmentation model shares: the base class, the encoder over a cnnkit body, the
FCN head, bilinear transposed convs and the default_cfg helper. The interface itself is described
in the package docstring (`cnnkit.models.segment`).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...nn.conv import ConvNormAct
from ...registry import CnnkitError
from .._base import IMAGENET_MEAN, IMAGENET_STD, adapt_cfg, make_cfg
from ..detect._backbone import _module as module_at  # "layer3" / "stages.2.0" -> the submodule

AUX_WEIGHT = 0.5  # torchvision's segmentation reference recipe: loss = main + 0.5 * aux


def with_doc(text: str, options: str = ""):
    """Set a builder's docstring: its own text, then the keyword options it shares with its family."""

    def deco(fn):
        fn.__doc__ = text + options
        return fn

    return deco


def resize_to(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear (align_corners=False, as torchvision) to `size`; nothing when it already is that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad at the bottom and right to the next multiple of `multiple` (0 is the mean pixel of a
    normalised image); the caller crops its output back to the input size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


# ------------------------------------------------------------------ the encoder


def _keep_output(module: nn.Module, _inputs, output) -> None:
    # kept on the module itself, not in a closure: a deepcopy (EMA) or a pickled model keeps working
    module.__dict__["_segment_out"] = output


class Encoder(nn.Module):
    """A cnnkit model as a feature extractor: the outputs of chosen `feature_info` stages.

    `stages` are feature_info entries ({"num_chs", "reduction", "module"}); forward runs the body's
    `forward_features` once and returns each stage's output, caught by a forward hook, in the
    order given. `channels` and `reductions` list their widths and strides.
    """

    def __init__(self, body: nn.Module, stages: Sequence[dict]):
        super().__init__()
        self.body = body
        self.stages = [dict(s) for s in stages]
        self.channels = [s["num_chs"] for s in stages]
        self.reductions = [s["reduction"] for s in stages]
        self.modules_ = [s["module"] for s in stages]
        for name in dict.fromkeys(self.modules_):
            module_at(body, name).register_forward_hook(_keep_output)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.body.forward_features(x)
        caught = {n: module_at(self.body, n).__dict__.pop("_segment_out") for n in dict.fromkeys(self.modules_)}
        return [caught[n] for n in self.modules_]


def stage_at(info: Sequence[dict], reduction: int) -> dict:
    """The last feature_info stage with this stride."""
    found = [f for f in info if f["reduction"] == reduction]
    if not found:
        raise CnnkitError(f"the backbone has no stage at stride {reduction} (it has "
                          f"{sorted({f['reduction'] for f in info})})")
    return found[-1]


def stages_by_stride(info: Sequence[dict]) -> list[dict]:
    """One stage per distinct stride (the last one of each), from the finest to the coarsest."""
    return [stage_at(info, r) for r in sorted({f["reduction"] for f in info})]


def dilation_args(name: str, in_chans: int, output_stride: int, args: dict) -> dict:
    """Builder arguments that bring the cnnkit model `name` to `output_stride` by dilation, where its
    family can dilate: ResNets (`replace_stride_with_dilation`, any of 8 / 16) and MobileNetV3
    (`dilated`, 16 only). Other families get none and keep their strides. A meta-device build tells
    the family (no weights are made)."""
    from .. import create_model
    from ..mobilenet import MobileNetV3
    from ..resnet import ResNet

    with torch.device("meta"):
        probe = create_model(name, num_classes=0, in_chans=in_chans, **args)
    if isinstance(probe, ResNet):
        strides = [f["reduction"] for f in probe.feature_info if f["module"] in ("layer2", "layer3", "layer4")]
        return dict(replace_stride_with_dilation=tuple(r > output_stride for r in strides))
    if isinstance(probe, MobileNetV3) and output_stride <= 16:
        return dict(dilated=True)
    return {}


def make_body(backbone: str | nn.Module, in_chans: int, output_stride: int | None = None,
              backbone_args: dict | None = None) -> tuple[nn.Module, str]:
    """(the body, its name): a cnnkit classification model (by name, or built) with feature_info and
    without its classifier head. For a name, `output_stride` (8, 16 or None for the model's own 32)
    asks for dilation where the family has it (`dilation_args`); a built model is used as it is."""
    args = dict(backbone_args or {})
    if isinstance(backbone, str):
        from .. import create_model

        name = backbone
        if output_stride is not None and output_stride < 32:
            args = {**dilation_args(name, in_chans, output_stride, args), **args}
        body = create_model(name, num_classes=0, in_chans=in_chans, **args)
    else:
        body = backbone
        name = getattr(body, "default_cfg", {}).get("architecture") or type(body).__name__
    if not getattr(body, "feature_info", None) or not hasattr(body, "forward_features"):
        raise CnnkitError(f"{name} has no feature_info / forward_features, so it cannot serve as a backbone")
    if isinstance(getattr(body, "head", None), nn.Module):
        body.head = nn.Identity()  # never called; MobileNetV3's and VGG's would hold unused parameters
    return body, name


def body_first_conv(body: nn.Module, prefix: str) -> str:
    cfg = getattr(body, "default_cfg", None) or {}
    if cfg.get("first_conv"):
        return prefix + cfg["first_conv"]
    return prefix + next(n for n, m in body.named_modules() if isinstance(m, nn.Conv2d))


# ------------------------------------------------------------------ heads and layers


class FCNHead(nn.Module):
    """torchvision's FCN head: 3x3 conv to in/4 channels, BN, ReLU, dropout 0.1, 1x1 conv to K (with bias).

    (B, C, h, w) -> (B, K, h, w). Parameters: 9*C*C/4 + 2*C/4 + (C/4 + 1)*K."""

    def __init__(self, in_chs: int, num_classes: int, mid_chs: int | None = None, drop_rate: float = 0.1):
        super().__init__()
        mid = mid_chs or in_chs // 4
        self.block = ConvNormAct(in_chs, mid, 3)
        self.drop = nn.Dropout(drop_rate)
        self.cls = nn.Conv2d(mid, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.drop(self.block(x)))


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """(C, C, k, k) transposed-conv weights that upsample every channel on its own (a diagonal in the
    channel axes) by bilinear interpolation, factor f = ceil(k / 2): tap t has weight
    (1 - |t - c| / f) along each axis, c = f - 1/2 for even k (the FCN paper's initialisation).

    With stride f and padding f / 2 (k = 2f) output pixel j reads the inputs at (j + 1/2) / f - 1/2,
    which is F.interpolate(..., mode="bilinear", align_corners=False) away from the border."""
    f = (kernel_size + 1) // 2
    c = f - 1 if kernel_size % 2 else f - 0.5
    t = torch.arange(kernel_size, dtype=torch.float32)
    w1 = 1 - (t - c).abs() / f
    return torch.eye(channels)[:, :, None, None] * (w1[:, None] * w1[None, :])


def bilinear_upsampler(channels: int, factor: int, learnable: bool = True) -> nn.ConvTranspose2d:
    """ConvTranspose2d(C, C, 2f, stride f, padding f/2, no bias): exactly f times the size, initialised
    to bilinear upsampling; `learnable=False` freezes it (requires_grad False)."""
    if factor < 2 or factor % 2:
        raise ValueError(f"bilinear upsampling factor must be even, got {factor}")
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, factor, factor // 2, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 2 * factor))
    up.weight.requires_grad_(learnable)
    return up


def new_classifier(old: nn.Conv2d, num_classes: int) -> nn.Conv2d:
    """A 1x1 conv like `old` with `num_classes` outputs, on the same device, PyTorch's default init (as
    every new head layer here, like torchvision's heads)."""
    return nn.Conv2d(old.in_channels, num_classes, 1, bias=old.bias is not None, device=old.weight.device)


# ------------------------------------------------------------------ the model base class


class SegmentationModel(nn.Module):
    """Base class. Subclasses implement `forward_logits(x, aux)` -> (logits, aux logits or None), each
    at the input size or coarser, and `reset_classifier(num_classes)`; this class brings them to the
    input size and picks the output of `forward` by mode (see the package docstring).

    Attributes: `num_classes`, `aux_head` (None without an auxiliary head), `aux_loss_weight`,
    `default_cfg`."""

    default_cfg: dict
    num_classes: int
    aux_loss_weight: float = AUX_WEIGHT

    # `aux_head` is set by every subclass (a module or None); a class attribute would shadow the module
    @property
    def has_aux(self) -> bool:
        return getattr(self, "aux_head", None) is not None

    def forward_logits(self, x: torch.Tensor, aux: bool = False):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, aux logits or None), both (B, K, H, W), in either mode: what training returns, also
        in eval mode (for checks against torchvision's `aux` output)."""
        out, aux = self.forward_logits(x, aux=self.has_aux)
        size = x.shape[-2:]
        return resize_to(out, size), (resize_to(aux, size) if aux is not None else None)

    def forward(self, x: torch.Tensor):
        if self.training and self.has_aux:
            return self.forward_with_aux(x)
        out, _ = self.forward_logits(x, aux=False)
        return resize_to(out, x.shape[-2:])

    def get_classifier(self) -> nn.Module:
        return module_at(self, self.default_cfg["classifier"])

    def reset_classifier(self, num_classes: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_classes(self, num_classes: int) -> None:
        self.num_classes = num_classes
        if hasattr(self, "default_cfg"):
            self.default_cfg = dict(self.default_cfg, num_classes=num_classes)


def segment_cfg(name: str, num_classes: int, in_chans: int, *, image_size: int | Sequence[int], first_conv: str,
                classifier: str, paper: str, backbone: str | None, tv_name: str | None, output_stride: int,
                aux: bool, mean=IMAGENET_MEAN, std=IMAGENET_STD, **extra) -> dict:
    """default_cfg of a segmentation model (task "segment")."""
    hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    cfg = make_cfg((3,) + tuple(hw), mean, std, first_conv=first_conv, classifier=classifier, task="segment",
                   paper=paper, backbone=backbone, export=True, output_stride=output_stride, aux=aux,
                   aux_loss_weight=AUX_WEIGHT, **extra)
    return adapt_cfg(cfg, in_chans, num_classes, architecture=name, tv_name=tv_name)


def scaled_rates(base: Sequence[int], output_stride: int) -> tuple[int, ...]:
    """The paper's rates are for output stride 16; at stride s they scale by 16 / s (8: x2, 32: /2)."""
    return tuple(max(1, int(math.floor(r * 16 / output_stride))) for r in base)


class SimpleSegmenter(SegmentationModel):
    """Encoder -> `head` on one stage (the deepest by default) -> logits; optionally an auxiliary
    FCNHead on an earlier stage, used in training only. torchvision's FCN and DeepLabv3 layout.

    Modules: `encoder.body` (the cnnkit body), `head` (its last conv `head.cls`), `aux_head` (or None)."""

    def __init__(self, body: nn.Module, head: nn.Module, out_stage: dict, num_classes: int,
                 aux_stage: dict | None = None, aux_head: nn.Module | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.encoder = Encoder(body, [out_stage] + ([aux_stage] if aux_head is not None else []))
        self.head = head
        self.aux_head = aux_head

    def forward_logits(self, x: torch.Tensor, aux: bool = False):
        feats = self.encoder(x)
        out = self.head(feats[0])  # (B, K, H/s, W/s)
        return out, (self.aux_head(feats[1]) if aux and self.aux_head is not None else None)

    def reset_classifier(self, num_classes: int) -> None:
        self.head.cls = new_classifier(self.head.cls, num_classes)
        if self.aux_head is not None:
            self.aux_head.cls = new_classifier(self.aux_head.cls, num_classes)
        self._set_classes(num_classes)


def aux_stage_of(body: nn.Module) -> dict:
    """The default auxiliary stage: the feature_info stage before the last (ResNet: layer3)."""
    return body.feature_info[-2]
