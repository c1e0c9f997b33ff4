"""torchvision and timm models by name beside cnnkit's own (`tv:resnet50`, `timm:convnext_tiny`),
and pretrained weights from a file on disk (`weights=path.pth`).

External models are wrapped so the engine, `summary` and the checkpoints treat them like any
other: `num_classes`, `in_chans`, `default_cfg`, `forward_features` / `forward_head`,
`get_classifier` / `reset_classifier`. Nothing is downloaded: they are built with random weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..registry import CnnkitError, suggest
from ._base import IMAGENET_MEAN, IMAGENET_STD, adapt_cfg, make_cfg

PREFIXES = ("tv:", "timm:")


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise CnnkitError("this model has no convolution to adapt to other input channels")


def adapt_input_channels(model: nn.Module, in_chans: int) -> None:
    """Make the first convolution take `in_chans` channels; RGB weights are summed for grey input."""
    name, conv = _first_conv(model)
    if conv.in_channels == in_chans:
        return
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        w = conv.weight
        if in_chans == 1:
            new.weight.copy_(w.sum(1, keepdim=True))
        else:  # repeat the RGB filters and rescale so activations keep their size
            reps = -(-in_chans // w.shape[1])
            new.weight.copy_(w.repeat(1, reps, 1, 1)[:, :in_chans] * (w.shape[1] / in_chans))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    model.set_submodule(name, new) if hasattr(model, "set_submodule") else _set(model, name, new)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


class TorchvisionModel(nn.Module):
    """A torchvision classifier with the cnnkit interface.

    The classifier is the last nn.Linear; `forward_features` is everything before it (for most
    torchvision models that is the pooled feature vector, not a map).
    """

    def __init__(self, name: str, num_classes: int = 1000, in_chans: int = 3, **kwargs):
        super().__init__()
        import torchvision

        try:
            self.net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        except ValueError:
            raise suggest(name, torchvision.models.list_models(torchvision.models), "torchvision model") from None
        adapt_input_channels(self.net, in_chans)
        linears = [n for n, m in self.net.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise CnnkitError(f"torchvision model {name!r} has no linear classifier")
        self.classifier_name = linears[-1]
        self.num_classes = num_classes
        first = _first_conv(self.net)[0]
        cfg = make_cfg((3, 224, 224), IMAGENET_MEAN, IMAGENET_STD, first_conv=f"net.{first}",
                       classifier=f"net.{self.classifier_name}")
        self.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture=f"tv:{name}", tv_name=name)
        self.feature_info = [dict(num_chs=_first_conv(self.net)[1].out_channels, reduction=1, module=f"net.{first}")]

    def get_classifier(self) -> nn.Module:
        return self.net.get_submodule(self.classifier_name)

    def forward_features(self, x):
        fc = self.get_classifier()
        _set(self.net, self.classifier_name, nn.Identity())
        try:
            return self.net(x)
        finally:
            _set(self.net, self.classifier_name, fc)

    def forward_head(self, x, pre_logits: bool = False):
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x):
        return self.net(x)

    def reset_classifier(self, num_classes: int) -> None:
        fc = self.get_classifier()
        _set(self.net, self.classifier_name, nn.Linear(fc.in_features, num_classes))
        self.num_classes = num_classes
        self.default_cfg = dict(self.default_cfg, num_classes=num_classes)


def create_timm(name: str, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise CnnkitError("timm is not installed: pip install timm (or pip install 'cnnkit[test]')") from None
    if not timm.list_models(name):
        raise suggest(name, timm.list_models(), "timm model")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    # timm models already have forward_features/forward_head/reset_classifier/feature_info
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    size = tuple(cfg.get("input_size", (3, 224, 224)))
    base = make_cfg(size, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD),
                    first_conv=cfg.get("first_conv", ""), classifier=cfg.get("classifier", ""))
    model.default_cfg = adapt_cfg(base, in_chans, num_classes, architecture=f"timm:{name}", tv_name=None)
    if not isinstance(getattr(model, "feature_info", None), list):
        model.feature_info = []
    return model


def create_external(name: str, num_classes: int | None, in_chans: int | None, **kwargs) -> nn.Module:
    prefix, _, bare = name.partition(":")
    kw = dict(num_classes=1000 if num_classes is None else num_classes, in_chans=3 if in_chans is None else in_chans)
    if prefix == "tv":
        return TorchvisionModel(bare, **kw, **kwargs)
    return create_timm(bare, **kw, **kwargs)


def load_weights_file(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights of the same architecture into `model`: a torchvision state dict (`.pth`, read
    with weights_only, so no code runs) or cnnkit's own `weights.safetensors`."""
    from ..engine.checkpoint import load_into
    from ._tv import load_torchvision_weights

    p = Path(path)
    if not p.is_file():
        raise CnnkitError(f"weights file not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read is the user's file
        raise CnnkitError(f"cannot read weights {p}: {str(e).splitlines()[0]}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CnnkitError(f"{p} does not hold a state dict of tensors")
    if isinstance(model, TorchvisionModel):
        sd = {f"net.{k}": v for k, v in sd.items()}
    if set(sd) == set(model.state_dict()) or not model.default_cfg.get("tv_name"):
        load_into(model, sd, f"weights {p}")
    else:
        load_torchvision_weights(model, sd)
    return model


def create_with_weights(build, path: str | Path, num_classes: int | None, in_chans: int | None) -> nn.Module:
    """Build with the weights' own head and RGB stem, load them, then adapt the input channels and
    replace the classifier for `num_classes` (fine-tuning keeps the pretrained backbone)."""
    model = build()
    load_weights_file(model, path)
    cfg = model.default_cfg
    if in_chans is not None and in_chans != cfg["input_size"][0]:
        adapt_input_channels(model, in_chans)
    if num_classes is not None and num_classes != cfg.get("num_classes"):
        model.reset_classifier(num_classes)
    model.default_cfg = adapt_cfg(cfg, in_chans or cfg["input_size"][0], num_classes or cfg["num_classes"])
    return model
