"""What every explain method shares: the target layer, the class to explain, capturing a layer's
output (and its gradient), and turning tokens into maps. Only the model interface is used
(`feature_info`, `forward_features`, `get_classifier`, `default_cfg`, `tokens_to_map`)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import CnnkitError, suggest

Layer = Union[str, None]


def resolve_layer(model: nn.Module, layer: Layer = None) -> Tuple[str, nn.Module]:
    """(name, module) of the layer to explain: `layer` by dotted name, or the last feature stage.

    The default is `model.feature_info[-1]["module"]`: the last convolutional stage of a CNN, the
    token layer of a ViT (whose entry carries "grid")."""
    if layer is None:
        info = getattr(model, "feature_info", None)
        if not info:
            raise CnnkitError(f"{type(model).__name__} has no feature_info; pass layer=<module name>, "
                              "e.g. one from model.named_modules()")
        layer = info[-1]["module"]
    if not isinstance(layer, str):
        raise CnnkitError(f"layer must be a module name such as 'layer3', got {type(layer).__name__}")
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        raise suggest(layer, [n for n in modules if n], "layer")
    return layer, modules[layer]


def _token_info(model: nn.Module) -> Optional[dict]:
    """The feature_info entry that describes a token sequence (it has "grid"), if any."""
    for info in reversed(getattr(model, "feature_info", None) or []):
        if "grid" in info:
            return info
    return None


def to_map(model: nn.Module, act: torch.Tensor, name: str, input_hw: Tuple[int, int]) -> torch.Tensor:
    """A layer's output as a (B, C, h, w) map: CNN maps pass through; ViT tokens (B, 1 + N, D) are laid
    on their patch grid by the model's own `tokens_to_map`."""
    if act.ndim == 4:
        return act
    if act.ndim == 3 and hasattr(model, "tokens_to_map"):
        info = _token_info(model)
        grid = None
        if info is not None and info.get("reduction"):
            r = int(info["reduction"])
            grid = (input_hw[0] // r, input_hw[1] // r)
        return model.tokens_to_map(act, grid)
    raise CnnkitError(f"layer {name!r} outputs shape {tuple(act.shape)}; explain methods need a (B, C, H, W) map, "
                      "or (B, 1 + N, D) tokens of a model with tokens_to_map; pick another layer")


@contextmanager
def explaining(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (dropout off, BN running statistics) and in-place activations switched off while we
    hook the model: an in-place ReLU would overwrite a captured activation and breaks backward hooks.
    Both are restored afterwards."""
    modes = {m: m.training for m in model.modules()}
    inplace = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    model.eval()
    for m in inplace:
        m.inplace = False
    try:
        yield model
    finally:
        for m in inplace:
            m.inplace = True
        for m, mode in modes.items():
            m.training = mode


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted layer has run."""


def capture(model: nn.Module, x: torch.Tensor, module: nn.Module, stop: bool = False
            ) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
    """Run `model(x)` and return (logits, output of `module`). With `stop`, the pass ends at the layer
    (logits None): inversion and activation maximisation need nothing after it.

    The hook hands the rest of the network a clone of the output, so later in-place ops (`out += x`)
    cannot change the captured tensor, while gradients still flow back through it."""
    store = {}

    def hook(mod, inputs, out):
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not torch.is_tensor(out):
            raise CnnkitError(f"the chosen layer outputs {type(out).__name__}, not a tensor; pick another layer")
        store["act"] = out
        if stop:
            raise _Stop
        return out.clone()

    handle = module.register_forward_hook(hook)
    try:
        try:
            logits = model(x)
        except _Stop:
            logits = None
    finally:
        handle.remove()
    if "act" not in store:
        raise CnnkitError("the chosen layer was not used by the forward pass; pick another layer")
    return logits, store["act"]


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def as_batch(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(C, H, W) or (B, C, H, W) float input -> (B, C, H, W) on the model's device and dtype."""
    if not torch.is_tensor(x) or x.ndim not in (3, 4):
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise CnnkitError(f"expected an image tensor (C, H, W) or (B, C, H, W), got {shape}")
    x = x if x.ndim == 4 else x[None]
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return x.detach().to(model_device(model), dtype)


def pick_target(logits: torch.Tensor, target=None) -> torch.Tensor:
    """Class per image (B,): the prediction when `target` is None, else an int or one index per image."""
    B, K = logits.shape
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target, device=logits.device).long().flatten()
    if t.numel() == 1:
        t = t.expand(B)
    if t.numel() != B:
        raise CnnkitError(f"target must be one class or one per image ({B}), got {t.numel()} values")
    if bool(((t < 0) | (t >= K)).any()):
        raise CnnkitError(f"target class out of range: the model has {K} classes (0..{K - 1})")
    return t


def upsample(maps: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, H, W), bilinear."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def normalize_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Each (h, w) map divided by its maximum, so the peak is 1; an all-zero map stays zero. (B, h, w)"""
    peak = maps.flatten(1).amax(1).clamp(min=eps)
    return maps / peak[:, None, None]


def pixel_bounds(model: nn.Module, channels: int, device, dtype=torch.float32):
    """(low, high), each (1, C, 1, 1): where pixel values 0 and 1 land after the model's normalisation,
    from default_cfg mean/std; (-inf, inf) when the model does not say."""
    cfg = getattr(model, "default_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is None or std is None or len(mean) != channels:
        inf = torch.full((1, channels, 1, 1), float("inf"), device=device, dtype=dtype)
        return -inf, inf
    m = torch.tensor(mean, device=device, dtype=dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device, dtype=dtype).view(1, -1, 1, 1)
    return (0 - m) / s, (1 - m) / s


def input_size(model: nn.Module) -> Tuple[int, int, int]:
    """(C, H, W) from default_cfg["input_size"]."""
    cfg = getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size")
    if not size:
        raise CnnkitError(f"{type(model).__name__} has no default_cfg['input_size']; pass the input shape")
    return tuple(int(v) for v in size)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels, per image (the beta = 2 TV of Mahendran &
    Vedaldi, averaged rather than summed so the weight does not depend on the image size). (B,)"""
    dh = (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1).mean(1)
    return dh + dw
