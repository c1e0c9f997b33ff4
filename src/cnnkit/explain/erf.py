"""The effective receptive field (Luo et al., NeurIPS 2016): how strongly each input pixel moves one
central output unit. The theoretical receptive field is a box; the effective one is a soft,
roughly Gaussian blob well inside it, because central pixels reach the unit along many more
paths than the border ones."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from ._core import capture, explaining, input_size, model_device, resolve_layer, to_map

Box = Tuple[float, float, float, float]


def effective_receptive_field(model: nn.Module, x_shape: Sequence[int] | None = None, layer=None, n: int = 4,
                              seed: int = 0) -> Tuple[torch.Tensor, Optional[Box]]:
    """(erf (H, W) scaled so its peak is 1, analytic box or None) for the central unit of `layer`.

    The map is |d (sum over channels of the unit at the centre of the layer's grid) / d x|, summed
    over input channels and averaged over `n` standard-normal inputs of shape `x_shape` ((C, H, W),
    default: default_cfg's input size). The box (x0, y0, x1, y1, in pixel edges, not clipped to the
    image) is the theoretical receptive field of the same unit from
    `cnnkit.analysis.receptive_field`, or None if that is not available or cannot trace the model."""
    shape = tuple(int(v) for v in (x_shape if x_shape is not None else input_size(model)))
    shape = shape[-3:]
    name, module = resolve_layer(model, layer)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n,) + shape, generator=gen).to(model_device(model)).requires_grad_(True)
    with explaining(model):
        _, act = capture(model, x, module, stop=True)
        maps = to_map(model, act, name, shape[-2:])  # (n, K, h, w)
        h, w = maps.shape[-2:]
        unit = (h // 2, w // 2)
        (grad,) = torch.autograd.grad(maps[:, :, unit[0], unit[1]].sum(), x)
    erf = grad.abs().sum(1).mean(0).float()  # (H, W)
    erf = erf / erf.max().clamp(min=1e-12)
    return erf, _analytic_box(model, name, shape, unit)


def _analytic_box(model: nn.Module, name: str, shape, unit) -> Optional[Box]:
    try:
        try:
            from ..analysis import receptive_field
        except ImportError:
            from ..analysis.summary import receptive_field
    except ImportError:
        return None
    try:
        rows = receptive_field(model, shape)
    except Exception:  # the analysis is optional here: a model it cannot trace just has no box
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
