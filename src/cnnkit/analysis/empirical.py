"""The receptive field measured with autograd, to check the analytic one.

The gradient of one output position with respect to the input is non-zero exactly on the
pixels that position depends on, provided nothing cancels or switches off on the way. So the
model runs in float64 with every weight made positive (conv / linear weights 1/fan_in, biases 0,
BatchNorm in eval with running mean 0 and variance 1) on a positive input, where every ReLU
passes its gradient. Max pooling routes the gradient to one argmax per window, so it is replaced
by an average over the same window (same kernel, stride, padding, dilation, ceil_mode): the
region a max-pool output *can* depend on. The model itself is not changed (`functional_call`
with substituted tensors).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from ..registry import CnnkitError
from .ops import first_tensor
from .summary import _resolve_input_size

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MAX = {getattr(F, f"max_pool{n}d"): n for n in (1, 2, 3)}
_MAX.update({getattr(torch, f"max_pool{n}d"): n for n in (1, 2, 3) if hasattr(torch, f"max_pool{n}d")})
_ADAPTIVE_MAX = {getattr(F, f"adaptive_max_pool{n}d"): n for n in (1, 2, 3)}
_ADAPTIVE_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


def _tup(v, n):
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        return None
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * n


class _MaxAsAverage(TorchFunctionMode):
    """Runs every max pool as an average over the same windows (output shape unchanged)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            n = _MAX.get(func) or 0
            na = _ADAPTIVE_MAX.get(func) or 0
        except TypeError:  # unhashable callables
            n = na = 0
        if na and not kwargs.get("return_indices", False):
            out_size = args[1] if len(args) > 1 else kwargs["output_size"]
            return _ADAPTIVE_AVG[na](args[0], out_size)
        if not n or kwargs.get("return_indices", False) or (len(args) > 6 and args[6]):
            return func(*args, **kwargs)
        names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
        a = dict(zip(names, args), **kwargs)
        x = a["input"]
        ref = func(*args, **kwargs)  # the real pool, for its output shape
        k = _tup(a["kernel_size"], n)
        s = _tup(a.get("stride"), n) or k
        p = _tup(a.get("padding", 0), n)
        d = _tup(a.get("dilation", 1), n)
        out = ref.shape[-n:]
        pad = []
        for i in reversed(range(n)):  # F.pad order: last dim first; extra right padding for ceil_mode
            need = (out[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 - (x.shape[-n + i] + 2 * p[i])
            pad += [p[i], p[i] + max(0, need)]
        c = x.shape[1]
        w = torch.full((c, 1) + k, 1.0 / math.prod(k), dtype=x.dtype, device=x.device)
        y = _CONV[n](F.pad(x, pad), w, stride=s, dilation=d, groups=c)
        return y[(...,) + tuple(slice(0, o) for o in out)]


def _positive(name: str, p: torch.Tensor, dtype) -> torch.Tensor:
    q = p.detach().to(dtype)
    if q.dim() >= 2:  # conv / linear weights, embeddings: 1/fan_in keeps activations near 1
        return torch.full_like(q, 1.0 / q[0].numel())
    if name.rsplit(".", 1)[-1] == "bias":
        return torch.zeros_like(q)
    return torch.ones_like(q)


def _buffer(name: str, b: torch.Tensor, dtype) -> torch.Tensor:
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_mean":
        return torch.zeros_like(b, dtype=dtype)
    if leaf == "running_var":
        return torch.ones_like(b, dtype=dtype)
    return b.to(dtype) if b.is_floating_point() else b


def empirical_receptive_field(
    model: nn.Module,
    input_size=None,
    layer: Optional[str] = None,
    position: Optional[Sequence[int]] = None,
    return_region: bool = False,
    dtype: torch.dtype = torch.float64,
) -> Union[int, Tuple[int, Tuple[Tuple[int, int], ...]]]:
    """Extent (in input pixels) of the non-zero input gradient of one output position.

    layer: a module name whose output is probed (default: the model output), which must be a
    grid (B, C, *spatial). position: the output position (default: the central one).
    Returns the largest extent over the spatial axes; with `return_region`, also the inclusive
    (first, last) input pixel per axis, whose midpoint is the position's centre. Warns when
    the region touches the border (the measurement is then clipped: use a larger input).
    """
    size = _resolve_input_size(model, input_size)
    n = len(size) - 1
    flags = {m: m.training for m in model.modules()}
    model.eval()
    captured = {}
    handle = None
    if layer is not None:
        try:
            target = model.get_submodule(layer)
        except AttributeError:
            from ..registry import suggest

            raise suggest(layer, [k for k, _ in model.named_modules() if k], "layer") from None
        handle = target.register_forward_hook(lambda m, i, o: captured.__setitem__("out", o))
    try:
        tensors = {k: _positive(k, p, dtype) for k, p in model.named_parameters()}
        tensors.update({k: _buffer(k, b, dtype) for k, b in model.named_buffers()})
        device = next(iter(tensors.values())).device if tensors else torch.device("cpu")
        gen = torch.Generator().manual_seed(0)
        x = (torch.rand((1,) + size, generator=gen, dtype=dtype) + 0.5).to(device).requires_grad_(True)
        with _MaxAsAverage():
            out = functional_call(model, tensors, (x,))
    finally:
        if handle is not None:
            handle.remove()
        for m, flag in flags.items():
            m.training = flag
    y = first_tensor(captured["out"] if layer is not None else out)
    if y is None or y.dim() != n + 2:
        shape = tuple(y.shape) if y is not None else None
        raise CnnkitError(f"the probed output has shape {shape}, not a (B, C, *spatial) grid; "
                          "pick a convolutional layer with `layer=`")
    pos = tuple(position) if position is not None else tuple(s // 2 for s in y.shape[2:])
    y[(0, slice(None)) + pos].sum().backward()
    nz = x.grad.detach().abs().sum(dim=(0, 1)) > 0  # (*spatial)
    if not bool(nz.any()):
        raise CnnkitError("the output does not depend on the input at that position (zero gradient)")
    region = []
    for axis in range(n):
        others = tuple(a for a in range(n) if a != axis)
        line = nz.any(dim=others) if others else nz
        idx = line.nonzero().flatten()
        region.append((int(idx.min()), int(idx.max())))
    if any(lo == 0 or hi == size[1 + i] - 1 for i, (lo, hi) in enumerate(region)):
        warnings.warn(f"receptive field region {region} touches the input border {size[1:]}: the measured "
                      "extent is clipped; use a larger input", stacklevel=2)
    extent = max(hi - lo + 1 for lo, hi in region)
    return (extent, tuple(region)) if return_region else extent
