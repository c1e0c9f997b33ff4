"""The effective receptive field (Luo et al., NeurIPS 2016): how strongly each input pixel moves one
central output unit. The theoretical receptive field is a box; the effective one is a soft,
roughly Gaussian blob well inside it, because central pixels reach the unit along many more
paths than the border ones."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from ._core import as_batch, capture, explaining, input_size, model_device, resolve_layer, to_map

Box = Tuple[float, float, float, float]


def effective_receptive_field(model: nn.Module, x_shape: Sequence[int] | None = None, layer=None, n: int = 4,
                              seed: int = 0, x: torch.Tensor | None = None, rf: dict | None = None
                              ) -> Tuple[torch.Tensor, Optional[Box]]:
    """(erf (H, W) scaled so its peak is 1, analytic box or None) for the central unit of `layer`.

    The map is |d (sum over channels of the unit at the centre of the layer's grid) / d x|, summed
    over input channels and averaged over `n` standard-normal inputs of shape `x_shape` ((C, H, W),
    default: default_cfg's input size), or over the images `x` (B, C, H, W) when given (the ERF a
    trained model has on real data). The box (x0, y0, x1, y1, in pixel edges, not clipped to the
    image) is the theoretical receptive field of the same unit from
    `cnnkit.analysis.receptive_field` (pass its table as `rf` when drawing several layers of one model),
    or None if that is not available or cannot trace the model."""
    if x is not None:
        x = as_batch(model, x).clone().requires_grad_(True)
        shape = tuple(x.shape[1:])
    else:
        shape = tuple(int(v) for v in (x_shape if x_shape is not None else input_size(model)))[-3:]
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((n,) + shape, generator=gen).to(model_device(model)).requires_grad_(True)
    name, module = resolve_layer(model, layer)
    with explaining(model):
        _, act = capture(model, x, module, stop=True)
        maps = to_map(model, act, name, shape[-2:])  # (n, K, h, w)
        h, w = maps.shape[-2:]
        unit = (h // 2, w // 2)
        (grad,) = torch.autograd.grad(maps[:, :, unit[0], unit[1]].sum(), x)
    erf = grad.abs().sum(1).mean(0).float()  # (H, W)
    erf = erf / erf.max().clamp(min=1e-12)
    if rf is None:
        rf = receptive_field_table(model, shape)
    return erf, _analytic_box(rf, name, shape, unit)


def erf_extent(erf: torch.Tensor, share: float = 0.95) -> int:
    """Side in pixels of the smallest square around the ERF's centre of mass that holds `share` of its
    mass: the "effective" size to set against the theoretical box. erf (H, W), non-negative."""
    H, W = erf.shape
    total = erf.sum().clamp(min=1e-12)
    ys, xs = torch.arange(H, dtype=erf.dtype), torch.arange(W, dtype=erf.dtype)
    cy, cx = float((erf.sum(1) * ys).sum() / total), float((erf.sum(0) * xs).sum() / total)
    for r in range(max(H, W)):
        y0, y1 = max(round(cy - r), 0), min(round(cy + r) + 1, H)
        x0, x1 = max(round(cx - r), 0), min(round(cx + r) + 1, W)
        if float(erf[y0:y1, x0:x1].sum() / total) >= share:
            return min(2 * r + 1, max(H, W))
    return max(H, W)


def receptive_field_table(model: nn.Module, shape) -> Optional[dict]:
    """`cnnkit.analysis.receptive_field(model, shape)`, or None where the analysis cannot trace the model."""
    try:
        from ..analysis import receptive_field
    except ImportError:
        return None
    try:
        return receptive_field(model, tuple(shape))
    except Exception:  # the analysis is optional here: a model it cannot trace just has no box
        return None


def _analytic_box(rows: Optional[dict], name: str, shape, unit) -> Optional[Box]:
    if not rows:
        return None
    rows = [v for k, v in rows.items() if k == name or k.startswith(name + ".")]
    if not rows:
        return None
    size, jump, start = rows[-1]
    H, W = shape[-2:]
    if jump is None or start is None:  # a global layer sees the whole input
        return (0.0, 0.0, float(W), float(H))
    pair = lambda v: (float(v[0]), float(v[1])) if isinstance(v, (tuple, list)) else (float(v), float(v))  # noqa: E731
    (sy, sx), (jy, jx), (oy, ox) = pair(size), pair(jump), pair(start)
    cy, cx = oy + unit[0] * jy, ox + unit[1] * jx  # centre of the unit in input pixels (pixel i at i)
    return (cx - (sx - 1) / 2, cy - (sy - 1) / 2, cx + (sx - 1) / 2 + 1, cy + (sy - 1) / 2 + 1)
