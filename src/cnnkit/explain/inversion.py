"""Feature inversion (Mahendran & Vedaldi, "Understanding Deep Image Representations by Inverting
Them", CVPR 2015): which image x' has the same features as x at a layer? Minimise

    ||phi(x') - phi(x)||^2 / ||phi(x)||^2  +  lambda_tv TV(x')  +  lambda_l2 mean(x'^2)

over x' from faint noise. The normalised feature loss makes one weight fit every layer; the
total-variation prior (beta = 2) prefers piecewise-smooth images, so what comes back is what the
layer keeps. Early layers give the image back almost exactly; deep ones keep the object's kind
and rough place but lose exact shape, texture and colour (`invert_depths` shows this).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from ..registry import CnnkitError
from ._core import as_batch, capture, explaining, pixel_bounds, resolve_layer, total_variation


def inversion(model: nn.Module, x: torch.Tensor, layer=None, steps: int = 200, tv_weight: float = 0.05,
              l2_weight: float = 1e-4, lr: float = 0.05, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Reconstruct x (B, C, H, W) or (C, H, W) from the features of `layer` (default: last stage).

    Adam on x' with `lr`, pixels kept in the valid [0, 1] range of the model's normalisation.
    Returns (reconstruction shaped like x, loss history (steps,), the batch total of the objective)."""
    if steps < 1:
        raise CnnkitError(f"steps must be >= 1, got {steps}")
    single = x.ndim == 3
    x = as_batch(model, x)
    _, module = resolve_layer(model, layer)
    gen = torch.Generator().manual_seed(seed)
    rec = (0.1 * torch.randn(x.shape, generator=gen)).to(x).requires_grad_(True)
    lo, hi = pixel_bounds(model, x.shape[1], x.device, x.dtype)
    opt = torch.optim.Adam([rec], lr=lr)
    history = []
    with explaining(model):
        with torch.no_grad():
            _, goal = capture(model, x, module, stop=True)
            goal = goal.detach()
            goal_norm = goal.flatten(1).pow(2).sum(1).clamp(min=1e-12)  # (B,)
        for _ in range(steps):
            _, feat = capture(model, rec, module, stop=True)
            match = (feat - goal).flatten(1).pow(2).sum(1) / goal_norm  # (B,)
            loss = (match + tv_weight * total_variation(rec) + l2_weight * rec.pow(2).flatten(1).mean(1)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward(inputs=[rec])
            opt.step()
            with torch.no_grad():
                rec.copy_(torch.maximum(torch.minimum(rec, hi), lo))
            history.append(float(loss.detach()))
    rec = rec.detach()
    return (rec[0] if single else rec), torch.tensor(history)


def invert_depths(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None, steps: int = 200,
                  **kwargs) -> List[dict]:
    """`inversion` at several depths (default: every `feature_info` module, shallow to deep).

    One dict per layer: layer, reduction (stride, when known), reconstruction, history and
    pixel_error = ||x' - x|| / ||x - mean(x)||, which grows with depth as detail is discarded."""
    info = {d["module"]: d for d in (getattr(model, "feature_info", None) or [])}
    if layers is None:
        if not info:
            raise CnnkitError(f"{type(model).__name__} has no feature_info; pass layers=[...]")
        layers = list(info)
    xb = as_batch(model, x)
    spread = (xb - xb.mean((2, 3), keepdim=True)).flatten(1).norm(dim=1).clamp(min=1e-12)  # (B,)
    out = []
    for name in layers:
        rec, hist = inversion(model, xb, name, steps=steps, **kwargs)
        err = ((rec - xb).flatten(1).norm(dim=1) / spread).mean()
        out.append(dict(layer=name, reduction=info.get(name, {}).get("reduction"), reconstruction=rec,
                        history=hist, pixel_error=float(err)))
    return out
