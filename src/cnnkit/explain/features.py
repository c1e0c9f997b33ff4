"""What a layer computes: its activations for an image, the first layer's kernels, and the input
that a deeper filter responds to most (activation maximisation, Erhan et al. 2009; the
regularised form of Olah et al. 2017: jitter, small L2 and total-variation penalties)."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

from ..registry import CnnkitError
from ._core import (as_batch, capture, explaining, input_size, model_device, pixel_bounds, resolve_layer,
                    to_map, total_variation)


def feature_maps(model: nn.Module, x: torch.Tensor, layer=None) -> torch.Tensor:
    """Activations of `layer` (default: the last feature stage): (C, h, w) for one image (C, H, W),
    (B, C, h, w) for a batch. ViT tokens come back laid on their patch grid."""
    single = x.ndim == 3
    xb = as_batch(model, x)
    name, module = resolve_layer(model, layer)
    with explaining(model), torch.no_grad():
        _, act = capture(model, xb, module, stop=True)
        maps = to_map(model, act, name, xb.shape[-2:]).float()
    return maps[0] if single else maps


def filters(model: nn.Module, per_filter: bool = True) -> torch.Tensor:
    """The first convolution's kernels (O, I, kh, kw) scaled into [0, 1] for display.

    The layer is `default_cfg["first_conv"]`. `per_filter` stretches each kernel to the full range
    (shapes are easy to see); otherwise one range for all keeps their relative strength."""
    cfg = getattr(model, "default_cfg", None) or {}
    name = cfg.get("first_conv")
    if not name:
        raise CnnkitError(f"{type(model).__name__} has no default_cfg['first_conv']; cannot find its first layer")
    try:
        conv = model.get_submodule(name)
    except AttributeError:
        raise CnnkitError(f"default_cfg['first_conv'] = {name!r} is not a module of {type(model).__name__}") from None
    w = getattr(conv, "weight", None)
    if not torch.is_tensor(w) or w.ndim != 4:
        raise CnnkitError(f"first_conv {name!r} has no (O, I, kh, kw) kernel to show")
    w = w.detach().float().cpu()
    dims = (1, 2, 3) if per_filter else (0, 1, 2, 3)
    lo, hi = w.amin(dims, keepdim=True), w.amax(dims, keepdim=True)
    return (w - lo) / (hi - lo).clamp(min=1e-12)


def _jitter(x: torch.Tensor, jitter: int, gen: torch.Generator) -> torch.Tensor:
    """Roll the image by a random shift of up to `jitter` pixels (translation robustness)."""
    if jitter <= 0:
        return x
    dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
    return torch.roll(x, (dy, dx), dims=(-2, -1))


def activation_maximization(model: nn.Module, layer=None, channel: int | Sequence[int] = 0, steps: int = 128,
                            size: Tuple[int, int] | None = None, lr: float = 0.05, l2_weight: float = 1e-3,
                            tv_weight: float = 0.05, jitter: int = 2, seed: int = 0
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """An input that drives channel `channel` of `layer` high, and the objective per step.

    Gradient ascent with Adam on the (normalised) input from noise (std 0.5: strong enough that
    some units start active, as a ReLU unit at zero has no gradient): maximise the mean
    activation of the channel minus `l2_weight` * mean(x^2) and `tv_weight` * TV(x); each step
    sees the image rolled by up to `jitter` pixels; pixels stay within the valid [0, 1] range
    (mapped through default_cfg mean/std). `size` defaults to default_cfg's input size.

    One channel (an int) gives (image (C, H, W) in the model's input space, mean activation per
    step (steps,), on the jittered input). A list of N channels optimises N images at once, image i
    for channel i (in eval mode the images do not interact), and gives ((N, C, H, W), (steps, N)).
    """
    if steps < 1:
        raise CnnkitError(f"steps must be >= 1, got {steps}")
    single = isinstance(channel, int)
    chans = torch.tensor([channel] if single else list(channel), dtype=torch.long)
    if chans.numel() == 0:
        raise CnnkitError("channel: give at least one channel index")
    c, h, w = input_size(model)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
    name, module = resolve_layer(model, layer)
    dev = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    n = chans.numel()
    x = (0.5 * torch.randn(n, c, h, w, generator=gen)).to(dev).requires_grad_(True)
    lo, hi = pixel_bounds(model, c, dev)
    opt = torch.optim.Adam([x], lr=lr)
    rows = torch.arange(n, device=dev)
    history = []
    with explaining(model):
        for _ in range(steps):
            _, act = capture(model, _jitter(x, jitter, gen), module, stop=True)
            act = to_map(model, act, name, (h, w))  # (N, K, h', w')
            if int(chans.min()) < 0 or int(chans.max()) >= act.shape[1]:
                raise CnnkitError(f"layer {name!r} has {act.shape[1]} channels; channel must be 0..{act.shape[1] - 1}")
            objective = act[rows, chans.to(dev)].flatten(1).mean(1)  # (N,)
            penalty = l2_weight * x.pow(2).flatten(1).mean(1) + tv_weight * total_variation(x)  # (N,)
            opt.zero_grad(set_to_none=True)
            (penalty - objective).sum().backward(inputs=[x])  # images are independent: sum of N objectives
            opt.step()
            history.append(objective.detach().float().cpu())
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, hi), lo))
    history = torch.stack(history)  # (steps, N)
    return (x.detach()[0], history[:, 0]) if single else (x.detach(), history)
