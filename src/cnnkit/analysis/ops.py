"""What one call in a model does to shapes and receptive fields.

A call is a leaf module (`nn.Conv2d`, `nn.ReLU`, ...), a function (`torch.cat`, `F.max_pool2d`,
`operator.add`, ...) or a tensor method (`x.flatten(1)`, `x.mean((2, 3))`). `describe` reads its
hyper-parameters (kernel, stride, padding, dilation, groups, channels) and `rf_step` applies the
receptive-field rule of `geometry.py`. Anything not named here is treated as pointwise in space
when it keeps the grid's shape (activations, norms, dropout, channel shuffles, elementwise math);
when it does not, positions are dropped and the result is marked inexact.

Conventions (documented choices, not accidents):
- adaptive pooling to 1 (per axis: 1x1) is global; to n/k with equal windows it is a pool with
  kernel = stride = n/k (exact); with unequal windows the largest window is used (marked ~);
- transposed convs, interpolation and pixel shuffle put outputs on a finer grid whose taps vary
  from position to position: the uniform-grid numbers are approximations (marked ~);
- a function from outside torch kept whole by `torch.fx.wrap` is assumed pointwise when it keeps
  the grid (and noted), or attention when its name says so;
- normalisation statistics (BatchNorm in training, GroupNorm, InstanceNorm, LayerNorm) are treated
  as pointwise, like BatchNorm at inference; they are context, not receptive field;
- an input that depends on the whole image (squeeze-excitation gates, global context) makes the
  result global: strictly, every output then sees every pixel;
- attention (nn.MultiheadAttention, scaled_dot_product_attention, products of two position-
  dependent tensors) is global: exact for ViT-style global attention, an upper bound for
  windowed attention.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import geometry as G
from .geometry import Geo


@dataclass
class Call:
    """One executed call: what ran, on what, with which input geometries."""

    op: str  # "module" | "function" | "method"
    target: Any  # the module, the function, or the method name
    args: tuple
    kwargs: dict
    geos: tuple  # same structure as args, a Geo (or None) in place of each value
    kgeos: dict
    out: Any
    extent: tuple  # input spatial size, for global results


@dataclass
class Step:
    geo: Optional[Geo]
    rule: str  # which rule produced it: window, transposed, merge, pointwise, global, ...
    inputs: List[Geo] = field(default_factory=list)
    note: Optional[str] = None


def _tup(v, n: int) -> tuple:
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v) if len(v) == n else tuple(int(v[0]) for _ in range(n))
    return (int(v),) * n


def _nd(name: str) -> int:
    m = re.search(r"([123])d", name)
    return int(m.group(1)) if m else 2


def _arg(args, kwargs, i, name, default=None):
    return args[i] if len(args) > i else kwargs.get(name, default)


def first_tensor(x) -> Optional[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (list, tuple)):
        for v in x:
            t = first_tensor(v)
            if t is not None:
                return t
    if isinstance(x, dict):
        return first_tensor(list(x.values()))
    return None


def flat_geos(x) -> List[Geo]:
    if isinstance(x, Geo):
        return [x]
    if isinstance(x, (list, tuple)):
        return [g for v in x for g in flat_geos(v)]
    if isinstance(x, dict):
        return flat_geos(list(x.values()))
    return []


# ---------------------------------------------------------------------------------------------
# categories
# ---------------------------------------------------------------------------------------------
def _fns(*names, mod=F):
    return {getattr(mod, n) for n in names if hasattr(mod, n)}


_CONV_F = _fns("conv1d", "conv2d", "conv3d") | _fns("conv1d", "conv2d", "conv3d", mod=torch)
_CONVT_F = _fns("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
_POOL_F = _fns("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
               "lp_pool1d", "lp_pool2d", "lp_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
               "max_pool3d_with_indices") | _fns("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", mod=torch)
_ADAPTIVE_F = _fns("adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
                   "adaptive_max_pool2d", "adaptive_max_pool3d") | _fns("adaptive_avg_pool1d", "adaptive_max_pool1d",
                                                                       mod=torch)
_RESAMPLE_F = _fns("interpolate", "upsample", "upsample_nearest", "upsample_bilinear")
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp", "prod", "median", "norm",
           "nansum", "nanmean", "argmax", "argmin", "all", "any"}
_FUNCTIONS = {
    **{f: "conv" for f in _CONV_F},
    **{f: "transposed" for f in _CONVT_F},
    **{f: "pool" for f in _POOL_F},
    **{f: "adaptive" for f in _ADAPTIVE_F},
    **{f: "resample" for f in _RESAMPLE_F},
    F.pad: "pad",
    F.pixel_shuffle: "shuffle",
    F.pixel_unshuffle: "unshuffle",
    F.linear: "linear",
    F.bilinear: "attention",
    F.scaled_dot_product_attention: "attention",
    F.multi_head_attention_forward: "attention",
    torch.einsum: "attention",
    torch.matmul: "matmul", operator.matmul: "matmul", torch.mm: "matmul", torch.bmm: "matmul",
    torch.baddbmm: "matmul3", torch.addmm: "matmul3",
    F.softmax: "softmax", F.log_softmax: "softmax", F.softmin: "softmax",
    torch.softmax: "softmax", torch.log_softmax: "softmax",
    torch.flatten: "reshape", torch.reshape: "reshape",
    torch.permute: "permute", torch.transpose: "permute", torch.swapaxes: "permute", torch.movedim: "permute",
    torch.cat: "cat",
    operator.getitem: "getitem",
    **{getattr(torch, n): "reduce" for n in _REDUCE if hasattr(torch, n)},
}
for _n in ("concat", "concatenate", "unflatten", "swapdims"):
    if hasattr(torch, _n):
        _FUNCTIONS[getattr(torch, _n)] = {"unflatten": "reshape", "swapdims": "permute"}.get(_n, "cat")
_METHODS = {
    **{m: "reshape" for m in ("flatten", "view", "reshape", "unflatten", "view_as", "reshape_as")},
    **{m: "permute" for m in ("permute", "transpose", "movedim", "swapaxes", "swapdims", "t")},
    **{m: "matmul" for m in ("matmul", "mm", "bmm", "__matmul__")},
    **{m: "reduce" for m in _REDUCE},
    "softmax": "softmax", "log_softmax": "softmax",
}

_PAD_MODULES = tuple(getattr(nn.modules.padding, n) for n in
                     ("_ConstantPadNd", "_ReflectionPadNd", "_ReplicationPadNd", "_CircularPadNd", "ZeroPad2d")
                     if hasattr(nn.modules.padding, n))
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
_ATTENTION = (nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoder, nn.TransformerDecoder,
              nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.RNNBase, nn.Bilinear)


def category(call: Call) -> str:
    if call.op == "module":
        m = call.target
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            return "transposed"
        if isinstance(m, nn.modules.conv._ConvNd):
            return "conv"
        if isinstance(m, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                          nn.modules.pooling._LPPoolNd)):
            return "pool"
        if isinstance(m, (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
            return "adaptive"
        if _PAD_MODULES and isinstance(m, _PAD_MODULES):
            return "pad"
        if isinstance(m, nn.Upsample):
            return "resample"
        if isinstance(m, nn.PixelShuffle):
            return "shuffle"
        if isinstance(m, nn.PixelUnshuffle):
            return "unshuffle"
        if isinstance(m, (nn.Flatten, nn.Unflatten)):
            return "reshape"
        if isinstance(m, nn.Linear):
            return "linear"
        if isinstance(m, _ATTENTION):
            return "attention"
        if isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Softmin)):
            return "softmax"
        if isinstance(m, _NORMS):
            return "norm"
        return "pointwise"
    if call.op == "function":
        try:
            cat = _FUNCTIONS.get(call.target)
        except TypeError:  # unhashable target
            cat = None
        if cat is not None:
            return cat
        mod = getattr(call.target, "__module__", None) or ""
        if mod in ("_operator", "operator", "builtins", "math", "torch") or mod.startswith("torch."):
            return "pointwise"
        # a library function kept whole by torch.fx.wrap (torchvision's window attention, stochastic depth)
        name = getattr(call.target, "__name__", "").lower()
        return "attention" if "attention" in name or "attn" in name else "foreign"
    return _METHODS.get(call.target, "pointwise")


# ---------------------------------------------------------------------------------------------
# hyper-parameters
# ---------------------------------------------------------------------------------------------
def describe(call: Call, cat: str) -> dict:
    """Kernel, stride, padding, dilation, groups and channels of conv / pool / linear calls."""
    a, kw = call.args, call.kwargs
    if cat in ("conv", "transposed"):
        if call.op == "module":
            m = call.target
            nk = len(m.kernel_size)
            k, s, d = tuple(m.kernel_size), tuple(m.stride), tuple(m.dilation)
            p, g, cin, cout, bias = m.padding, m.groups, m.in_channels, m.out_channels, m.bias is not None
            op = tuple(getattr(m, "output_padding", (0,) * nk))
        else:
            w = _arg(a, kw, 1, "weight")
            nk = w.dim() - 2
            k = tuple(w.shape[2:])
            bias = _arg(a, kw, 2, "bias") is not None
            s = _tup(_arg(a, kw, 3, "stride", 1), nk)
            if cat == "conv":
                p = _arg(a, kw, 4, "padding", 0)
                d = _tup(_arg(a, kw, 5, "dilation", 1), nk)
                g = int(_arg(a, kw, 6, "groups", 1))
                cout, cin, op = w.shape[0], w.shape[1] * g, (0,) * nk
            else:
                p = _arg(a, kw, 4, "padding", 0)
                op = _tup(_arg(a, kw, 5, "output_padding", 0), nk)
                g = int(_arg(a, kw, 6, "groups", 1))
                d = _tup(_arg(a, kw, 7, "dilation", 1), nk)
                cin, cout = w.shape[0], w.shape[1] * g
        if isinstance(p, str):  # 'same' pads (d*(k-1))//2 before, the rest after; 'valid' none
            p = tuple((dd * (kk - 1)) // 2 for kk, dd in zip(k, d)) if p == "same" else (0,) * nk
        hp = dict(nk=nk, kernel=k, stride=s, padding=_tup(p, nk), dilation=d, groups=int(g),
                  in_channels=int(cin), out_channels=int(cout), bias=bias)
        if cat == "transposed":
            hp["output_padding"] = op
        return hp
    if cat == "pool":
        if call.op == "module":
            m = call.target
            name = type(m).__name__
            nk = _nd(name)
            if isinstance(m, nn.modules.pooling._LPPoolNd):
                k, s, p, d, ceil = m.kernel_size, m.stride, 0, 1, m.ceil_mode
            else:
                k, s, p = m.kernel_size, m.stride, m.padding
                d, ceil = getattr(m, "dilation", 1), m.ceil_mode
        else:
            name = getattr(call.target, "__name__", "pool")
            nk = _nd(name)
            if "lp_pool" in name:
                k, s, p, d, ceil = _arg(a, kw, 2, "kernel_size"), _arg(a, kw, 3, "stride"), 0, 1, \
                    _arg(a, kw, 4, "ceil_mode", False)
            elif "max" in name:
                k, s, p = _arg(a, kw, 1, "kernel_size"), _arg(a, kw, 2, "stride"), _arg(a, kw, 3, "padding", 0)
                d, ceil = _arg(a, kw, 4, "dilation", 1), _arg(a, kw, 5, "ceil_mode", False)
            else:
                k, s, p = _arg(a, kw, 1, "kernel_size"), _arg(a, kw, 2, "stride"), _arg(a, kw, 3, "padding", 0)
                d, ceil = 1, _arg(a, kw, 4, "ceil_mode", False)
        k = _tup(k, nk)
        s = k if s is None or (isinstance(s, (list, tuple)) and len(s) == 0) else _tup(s, nk)
        return dict(nk=nk, kernel=k, stride=s, padding=_tup(p, nk), dilation=_tup(d, nk), ceil_mode=bool(ceil),
                    pool="max" if "Max" in name or "max" in name else ("lp" if "LP" in name or "lp" in name
                                                                       else "avg"))
    if cat == "adaptive":
        name = type(call.target).__name__ if call.op == "module" else getattr(call.target, "__name__", "")
        nk = _nd(name)
        out = first_tensor(call.out)
        return dict(nk=nk, output_size=tuple(out.shape[-nk:]) if out is not None else None,
                    pool="max" if "max" in name.lower() else "avg")
    if cat == "linear":
        if call.op == "module":
            m = call.target
            return dict(in_channels=m.in_features, out_channels=m.out_features, bias=m.bias is not None)
        w = _arg(a, kw, 1, "weight")
        return dict(in_channels=int(w.shape[1]), out_channels=int(w.shape[0]),
                    bias=_arg(a, kw, 2, "bias") is not None)
    if cat == "norm" and call.op == "module":
        m = call.target
        c = getattr(m, "num_features", None) or getattr(m, "num_channels", None)
        if c is None and isinstance(m, nn.LayerNorm):
            c = math.prod(m.normalized_shape)
        return dict(in_channels=c, out_channels=c) if c else {}
    return {}


# ---------------------------------------------------------------------------------------------
# receptive-field rules
# ---------------------------------------------------------------------------------------------
def _negdims(dims, ndim: int) -> tuple:
    if isinstance(dims, int):
        dims = (dims,)
    return tuple(d - ndim if d >= 0 else d for d in dims)


def _keeps_grid(g: Geo, out: Optional[torch.Tensor]) -> bool:
    """Does `out` still hold g's positions on the same dims (shape unchanged there)?"""
    if out is None or g.axes is None:
        return out is not None and g.axes is None
    if out.dim() < max(-a for a in g.axes):
        return False
    if g.tokens:
        return True
    return all(out.shape[a] == n for a, n in zip(g.axes, g.shape))


def _global(call: Call, geos, note=None) -> Step:
    return Step(G.global_geo(call.extent, all(g.exact for g in geos)), "global", list(geos), note)


def _window_step(call: Call, cat: str, hp: dict, g: Geo) -> Step:
    nk = hp["nk"]
    dims = tuple(range(-nk, 0))
    out = first_tensor(call.out)
    if not g.grid or any(g.axis_of(t) is None for t in dims) or out is None:
        return Step(G.flat_geo(g, exact=False), "unknown", [g], f"{cat} over a non-spatial layout")
    out_sizes = tuple(out.shape[-nk:])
    if cat == "transposed":
        return Step(G.transposed(g, dims, hp["kernel"], hp["stride"], hp["padding"], hp["dilation"], out_sizes),
                    "transposed", [g])
    return Step(G.window(g, dims, hp["kernel"], hp["stride"], hp["padding"], hp["dilation"], out_sizes),
                "window", [g])


def _adaptive_step(call: Call, hp: dict, g: Geo) -> Step:
    nk = hp["nk"]
    x, out = first_tensor(call.args), first_tensor(call.out)
    n, m = tuple(x.shape[-nk:]), tuple(out.shape[-nk:])
    if all(o == 1 for o in m):
        return Step(G.global_geo(call.extent, g.exact), "global", [g])
    dims = tuple(range(-nk, 0))
    if not g.grid or any(g.axis_of(t) is None for t in dims):
        return Step(G.flat_geo(g, exact=False), "unknown", [g])
    k, s, exact = [], [], True
    for nn_, mm in zip(n, m):
        if nn_ % mm == 0:  # equal windows: a plain pool with kernel = stride = n/m
            k.append(nn_ // mm)
            s.append(nn_ // mm)
        else:  # windows [floor(i*n/m), ceil((i+1)*n/m)) vary in size: take the largest
            k.append(max(math.ceil((i + 1) * nn_ / mm) - (i * nn_) // mm for i in range(mm)))
            s.append(nn_ / mm)
            exact = False
    hp.update(kernel=tuple(k), stride=tuple(s), padding=(0,) * nk, dilation=(1,) * nk)
    geo = G.window(g, dims, k, s, (0,) * nk, (1,) * nk, m, exact=exact)
    return Step(geo, "window", [g], None if exact else "adaptive pool with unequal windows")


def _pad_step(call: Call, g: Geo) -> Step:
    pad = call.target.padding if call.op == "module" else _arg(call.args, call.kwargs, 1, "pad")
    out = first_tensor(call.out)
    pad = tuple(pad) if isinstance(pad, (list, tuple)) else (pad,) * (2 * g.n)
    dims, before = [], []
    for j in range(len(pad) // 2):  # F.pad order: last dim first, (before, after) pairs
        dims.append(-1 - j)
        before.append(-pad[2 * j])
    if not g.grid or any(g.axis_of(t) is None for t in dims):
        return Step(g if _keeps_grid(g, out) else G.flat_geo(g, exact=False), "pointwise", [g])
    return Step(G.shift(g, dims, before, [1] * len(dims), [out.shape[t] for t in dims]), "pad", [g])


def _resample_step(call: Call, cat: str, g: Geo) -> Step:
    x, out = first_tensor(call.args), first_tensor(call.out)
    nk = x.dim() - 2
    dims = tuple(range(-nk, 0))
    if not g.grid or any(g.axis_of(t) is None for t in dims):
        return Step(G.flat_geo(g, exact=False), "unknown", [g])
    n, m = tuple(x.shape[-nk:]), tuple(out.shape[-nk:])
    if cat == "unshuffle":  # space-to-depth: a window of r x r, stride r
        r = [a // b for a, b in zip(n, m)]
        return Step(G.window(g, dims, r, r, [0] * nk, [1] * nk, m), "window", [g])
    if cat == "shuffle":
        return Step(G.resample(g, dims, n, m, taps=1), "resample", [g])
    if call.op == "module":
        mode, align = call.target.mode, bool(call.target.align_corners)
    else:
        mode = _arg(call.args, call.kwargs, 3, "mode", "nearest")
        align = bool(_arg(call.args, call.kwargs, 4, "align_corners", False))
        if call.target is getattr(F, "upsample_bilinear", None):
            mode, align = "bilinear", True
    if mode == "area":  # area interpolation is adaptive average pooling
        return _adaptive_step(call, {"nk": nk}, g)
    taps = {"nearest": 1, "nearest-exact": 1, "bicubic": 4}.get(mode, 2)
    return Step(G.resample(g, dims, n, m, taps, align), "resample", [g])


def _reshape_step(call: Call, g: Geo) -> Step:
    x, out = first_tensor(call.args if call.op != "module" else call.args[:1]), first_tensor(call.out)
    if g.axes is None:
        return Step(g, "reshape", [g])
    ins, outs = tuple(x.shape), tuple(out.shape)
    if ins == outs:
        return Step(g, "reshape", [g])
    pos = [len(ins) + a for a in g.axes]
    if g.grid and pos == sorted(pos) and pos == list(range(pos[0], pos[-1] + 1)):
        tail = ins[pos[-1] + 1:]
        if len(tail) == 0 or outs[len(outs) - len(tail):] == tail:
            m = len(outs) - len(tail)  # dims of the output before the unchanged tail
            sizes = tuple(ins[p] for p in pos)
            if m >= len(pos) and outs[m - len(pos):m] == sizes:  # grid kept, leading dims reshaped
                return Step(g.replace(axes=tuple(range(m - len(pos) - len(outs), m - len(outs)))), "reshape", [g])
            if m >= 1 and outs[m - 1] == math.prod(sizes):  # grid flattened into one token axis
                return Step(g.replace(axes=(m - 1 - len(outs),)), "reshape", [g])
    if g.tokens:
        t = len(ins) + g.axes[0]
        tail = ins[t + 1:]
        if len(tail) == 0 or outs[len(outs) - len(tail):] == tail:
            m = len(outs) - len(tail)
            if m >= 1 and outs[m - 1] == ins[t]:
                return Step(g.replace(axes=(m - 1 - len(outs),)), "reshape", [g])
            if m >= g.n and outs[m - g.n:m] == g.shape:  # tokens folded back into the grid
                return Step(g.replace(axes=tuple(range(m - g.n - len(outs), m - len(outs)))), "reshape", [g])
    return Step(G.flat_geo(g), "reshape", [g])


def _permute_step(call: Call, g: Geo) -> Step:
    x = first_tensor(call.args)
    nd = x.dim()
    a, kw, name = call.args, call.kwargs, call.target if call.op == "method" else call.target.__name__
    perm = list(range(nd))
    if name == "permute":
        dims = a[1:] if call.op == "method" and not isinstance(a[1] if len(a) > 1 else None, (list, tuple)) \
            else _arg(a, kw, 1, "dims")
        perm = [d % nd for d in dims]
    elif name == "t":
        perm = perm[::-1]
    elif name == "movedim":
        src, dst = _arg(a, kw, 1, "source"), _arg(a, kw, 2, "destination")
        src, dst = ([src], [dst]) if isinstance(src, int) else (list(src), list(dst))
        src, dst = [s % nd for s in src], [d % nd for d in dst]
        rest = [d for d in range(nd) if d not in src]
        perm = [None] * nd
        for s_, d_ in zip(src, dst):
            perm[d_] = s_
        it = iter(rest)
        perm = [p if p is not None else next(it) for p in perm]
    else:  # transpose / swapaxes / swapdims
        d0, d1 = _arg(a, kw, 1, "dim0") % nd, _arg(a, kw, 2, "dim1") % nd
        perm[d0], perm[d1] = perm[d1], perm[d0]
    if g.axes is None:
        return Step(g, "reshape", [g])
    new_axes = tuple(perm.index(nd + ax) - nd for ax in g.axes)
    return Step(g.replace(axes=new_axes), "reshape", [g])


def _getitem_step(call: Call, g: Geo) -> Step:
    x, idx, out = call.args[0], call.args[1], first_tensor(call.out)
    if not isinstance(x, torch.Tensor):  # picking one output of a module that returns a tuple
        return Step(g, "pointwise", [g])
    items = idx if isinstance(idx, tuple) else (idx,)
    if g.axes is None or any(not isinstance(e, (int, slice, type(None), type(Ellipsis))) for e in items):
        ok = _keeps_grid(g, out)
        return Step(g if ok else G.flat_geo(g, exact=False), "pointwise" if ok else "unknown", [g])
    nd = x.dim()
    used = sum(1 for e in items if e is not None and e is not Ellipsis)
    if Ellipsis in items:
        i = items.index(Ellipsis)
        items = items[:i] + (slice(None),) * (nd - used) + items[i + 1:]
    else:
        items = items + (slice(None),) * (nd - used)
    where, slices, removed, o = {}, {}, set(), 0
    d = 0
    for e in items:
        if e is None:
            o += 1
        elif isinstance(e, int):
            removed.add(d)
            d += 1
        else:
            where[d], slices[d] = o, e
            d, o = d + 1, o + 1
    pos = [nd + a for a in g.axes]
    if any(p in removed for p in pos):
        return Step(G.flat_geo(g, exact=False), "unknown", [g], "indexing a single position")
    new_axes = tuple(where[p] - o for p in pos)
    if g.tokens:
        return Step(g.replace(axes=new_axes), "pointwise", [g])
    before, step, sizes = [], [], []
    for p in pos:
        b, _, st = slices[p].indices(x.shape[p])
        before.append(b)
        step.append(st)
        sizes.append(out.shape[where[p] - o])
    geo = G.shift(g, list(g.axes), before, step, sizes).replace(axes=new_axes)
    changed = any(b != 0 or s_ != 1 for b, s_ in zip(before, step))
    return Step(geo, "slice" if changed else "pointwise", [g])


def rf_step(call: Call, cat: str, hp: dict) -> Step:
    """The geometry of this call's output from the geometries of its inputs."""
    geos = flat_geos(call.geos) + flat_geos(call.kgeos)
    if not geos:
        return Step(None, "none")
    out = first_tensor(call.out)
    if any(g.glob for g in geos):
        return _global(call, geos)
    first = geos[0]
    if cat in ("conv", "transposed", "pool"):
        return _window_step(call, cat, hp, first)
    if cat == "adaptive":
        return _adaptive_step(call, hp, first)
    if cat == "pad":
        return _pad_step(call, first)
    if cat in ("resample", "shuffle", "unshuffle"):
        return _resample_step(call, cat, first)
    if cat == "reshape":
        return _reshape_step(call, first)
    if cat == "permute":
        return _permute_step(call, first)
    if cat == "getitem":
        return _getitem_step(call, first)
    if cat == "attention":
        return _global(call, geos, "attention mixes all positions")
    if cat == "linear":  # acts on the last dim: pointwise in space unless that dim holds positions
        x_geo = call.geos[0] if call.geos and isinstance(call.geos[0], Geo) else first
        if x_geo.axes is None or -1 in x_geo.axes:
            return _global(call, geos)
        return Step(x_geo, "pointwise", [x_geo])
    if cat in ("matmul", "matmul3"):
        i = 1 if cat == "matmul3" else 0
        ga = call.geos[i] if len(call.geos) > i else None
        gb = call.geos[i + 1] if len(call.geos) > i + 1 else None
        b = call.args[i + 1] if len(call.args) > i + 1 else None
        ga, gb = (ga if isinstance(ga, Geo) else None), (gb if isinstance(gb, Geo) else None)
        if ga is not None and gb is not None:
            return _global(call, geos, "product of two position-dependent tensors (attention)")
        if ga is not None and ga.axes is not None and -1 not in ga.axes:
            return Step(ga, "pointwise", [ga])
        if gb is not None and gb.axes is not None and isinstance(b, torch.Tensor) and b.dim() >= 2 \
                and -2 not in gb.axes:
            return Step(gb, "pointwise", [gb])
        return _global(call, geos)
    if cat == "softmax":
        dim = call.target.dim if call.op == "module" else _arg(call.args, call.kwargs, 1, "dim")
        x = first_tensor(call.args)
        if dim is None:
            return Step(first, "pointwise", [first])
        if first.axes is None or _negdims(dim, x.dim())[0] in first.axes:
            return _global(call, geos)
        return Step(first, "pointwise", [first])
    if cat == "reduce":
        x = first_tensor(call.args)
        dim = _arg(call.args, call.kwargs, 1, "dim")
        if isinstance(dim, torch.Tensor):  # torch.max(a, b): elementwise
            return Step(G.union(geos, call.extent), "merge", geos)
        if dim is None or first.axes is None:
            return _global(call, geos)
        dims = _negdims(dim, x.dim())
        if any(d in first.axes for d in dims):
            return _global(call, geos)
        keep = bool(_arg(call.args, call.kwargs, 2, "keepdim", False))
        axes = first.axes if keep else tuple(a + sum(1 for d in dims if d > a) for a in first.axes)
        return Step(first.replace(axes=axes), "pointwise", [first])
    if cat == "cat":
        tensors = call.args[0] if call.args else call.kwargs.get("tensors")
        dim = _arg(call.args, call.kwargs, 1, "dim", 0)
        x = first_tensor(tensors)
        merged = G.union(geos, call.extent)
        if merged.axes is not None and _negdims(dim, x.dim())[0] in merged.axes:
            if merged.tokens:  # e.g. a class token prepended to the patch tokens
                return Step(merged, "merge", geos)
            return Step(merged.replace(shape=tuple(out.shape[a] for a in merged.axes), exact=False), "merge",
                        geos, "concatenation along a spatial axis")
        return Step(merged, "merge" if len(geos) > 1 else "pointwise", geos)
    # pointwise: elementwise ops, activations, norms, dropout, anything that keeps the grid
    merged = G.union(geos, call.extent)
    if _keeps_grid(merged, out):
        note = f"{getattr(call.target, '__name__', call.target)} (outside torch) assumed pointwise in space" \
            if cat == "foreign" else None
        return Step(merged, "merge" if len(geos) > 1 else "pointwise", geos, note)
    if out is None:
        return Step(None, "none", geos)
    return Step(G.flat_geo(merged, exact=False), "unknown", geos, "layout change not modelled")
