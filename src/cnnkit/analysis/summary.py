"""`summary(model)`: one row per layer with output shape, parameters, MACs, receptive field and
activation memory, and the guide's formulas filled in with each layer's own numbers.

How it works: the model is traced once with `torch.fx` (leaf modules stay calls, so per-layer
attribution is by module name), then the graph is run node by node on one random batch under
`torch.no_grad` and a `MacCounter` dispatch mode. Each node gets its output shape, the MACs of
the ATen ops it ran, and a receptive-field `Geo` from its inputs' (`ops.rf_step`). Because the
graph keeps every branch and merge, the receptive field is exact for residual, inception and
dense networks. Models `torch.fx` cannot trace (data-dependent control flow) fall back to forward
hooks on the leaf modules, in execution order: totals stay exact, the receptive field becomes a
sequential approximation, and the summary says so.

The model runs in eval mode during the pass (BatchNorm statistics are not touched) and its
train/eval flags are restored afterwards.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.fx
from torch import nn

from ..registry import CnnkitError
from . import formulas
from .flops import MacCounter
from .geometry import Geo, input_geo
from .ops import Call, category, describe, first_tensor, rf_step

Shape = Tuple[int, ...]


def squash(v):
    """One number when every spatial axis agrees (the usual square case), else a tuple per axis."""
    if v is None:
        return None
    v = tuple(v)
    return v[0] if len(set(v)) == 1 else v


@dataclass
class LayerRow:
    """One executed layer (a leaf module call or a function on tensors).

    rf / jump / start are in input pixels (`geometry.py`), one number when all spatial axes
    agree, else a tuple per axis; `rf_global` marks outputs that depend on the whole input
    (rf is then the input size, jump and start are None). `params` counts the parameters this
    call owns, the first time they are used.
    """

    name: str
    type: str
    kind: str  # conv, transposed, pool, adaptive, linear, norm, pointwise, reshape, cat, ...
    input_shape: Optional[Shape]
    output_shape: Optional[Shape]
    params: int
    macs: int
    flops: int
    rf: Any = None
    jump: Any = None
    start: Any = None
    rf_global: bool = False
    rf_exact: bool = True
    act_bytes: int = 0
    kernel: Any = None
    stride: Any = None
    padding: Any = None
    dilation: Any = None
    groups: Optional[int] = None
    in_channels: Optional[int] = None
    out_channels: Optional[int] = None
    bias: Optional[bool] = None
    explain: str = ""


@dataclass
class ModelSummary:
    """Totals and rows of one analysis pass. `render(fmt)` gives table, markdown or json text."""

    model_name: str
    rows: List[LayerRow]
    total_params: int
    trainable_params: int
    total_macs: int
    total_flops: int
    input_size: Shape  # without the batch dim
    batch_size: int
    output_shape: Optional[Shape]
    activation_bytes: int  # layer outputs, in-place results and views not counted twice
    param_bytes: int
    dtype: str
    traced: bool  # True: exact graph (torch.fx); False: sequential hook approximation
    output_rf: Tuple[Any, Any, Any] = (None, None, None)  # (size, jump, start) of the model output
    output_rf_global: bool = False
    notes: List[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rf_mode(self) -> str:
        return "exact (torch.fx graph)" if self.traced else "sequential approximation (forward hooks)"

    def to_table(self, explain: bool = False):
        from .render import to_table

        return to_table(self, explain)

    def render(self, fmt: str = "table", explain: bool = False, width: int = 200) -> str:
        from .render import render

        return render(self, fmt, explain, width)

    def to_dict(self, explain: bool = False) -> dict:
        from .render import to_dict

        return to_dict(self, explain)

    def __str__(self) -> str:
        return self.render("table")


# ---------------------------------------------------------------------------------------------
def _resolve_input_size(model: nn.Module, input_size) -> Shape:
    if input_size is None:
        cfg = getattr(model, "default_cfg", None) or {}
        input_size = cfg.get("input_size", (3, 224, 224))
    if isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    try:
        size = tuple(int(v) for v in input_size)
    except (TypeError, ValueError):
        raise CnnkitError(f"input size {input_size!r} is not a list of integers; give (channels, height, width)")
    if len(size) < 2 or any(v <= 0 for v in size):
        raise CnnkitError(f"input size {size} is not valid; give positive (channels, height, width), e.g. 3 224 224")
    return size


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def _tensors(x) -> List[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    return []


def _root(t: torch.Tensor) -> torch.Tensor:
    return t._base if t._base is not None else t


def _new_bytes(out, inputs) -> int:
    """Bytes of the output tensors that are new memory (not in-place results or views of inputs)."""
    roots = {id(_root(t)) for t in _tensors(inputs)}
    seen, total = set(), 0
    for t in _tensors(out):
        r = _root(t)
        if id(r) in roots or id(r) in seen:
            continue
        seen.add(id(r))
        total += t.numel() * t.element_size()
    return total


def _type_name(call: Call) -> str:
    if call.op == "module":
        return type(call.target).__name__
    if call.op == "method":
        return str(call.target)
    return getattr(call.target, "__name__", None) or str(call.target)


class _Namer:
    """Unique row names: module paths as in `named_modules`, `@1`, `@2` for repeated calls."""

    def __init__(self):
        self.used: Dict[str, int] = {}

    def __call__(self, base: str) -> str:
        n = self.used.get(base, 0)
        self.used[base] = n + 1
        return base if n == 0 else f"{base}@{n}"


class _RowMaker:
    """Turns executed calls into rows; shared by the graph walk and the hook fallback."""

    def __init__(self, counter: MacCounter, batch: int):
        self.counter = counter
        self.batch = batch
        self.seen_params: set = set()
        self.rows: List[LayerRow] = []
        self.notes: List[str] = []
        self.seen_notes: set = set()
        self.activation_bytes = 0

    def own_params(self, params: Sequence[torch.Tensor]) -> int:
        n = 0
        for p in params:
            if id(p) not in self.seen_params:
                self.seen_params.add(id(p))
                n += p.numel()
        return n

    def add(self, name: str, call: Call, key: Any, params: int) -> Optional[Geo]:
        cat = category(call)
        hp = describe(call, cat)
        step = rf_step(call, cat, hp)
        if step.note and step.note not in self.seen_notes:  # once per kind of approximation
            self.seen_notes.add(step.note)
            self.notes.append(f"{name}: {step.note}")
        if first_tensor(call.out) is None:  # sizes, flags: no row
            return step.geo
        if cat == "getitem" and not isinstance(call.args[0], torch.Tensor):
            return step.geo  # picking an element of a module's tuple output
        macs = self.counter.counts.pop(key, 0)
        x, out = first_tensor(call.args), first_tensor(call.out)
        g = step.geo
        row = LayerRow(
            name=name, type=_type_name(call), kind=cat,
            input_shape=tuple(x.shape) if x is not None else None, output_shape=tuple(out.shape),
            params=params, macs=macs, flops=2 * macs,
            act_bytes=sum(t.numel() * t.element_size() for t in _tensors(call.out)),
        )
        if g is not None:
            row.rf_global, row.rf_exact = g.glob, g.exact
            row.rf = squash(g.rf)
            row.jump, row.start = squash(g.jump), squash(g.start)
        for k in ("kernel", "stride", "padding", "dilation"):
            if k in hp:
                setattr(row, k, squash(hp[k]))
        for k in ("groups", "in_channels", "out_channels", "bias"):
            if k in hp:
                setattr(row, k, hp[k])
        row.explain = formulas.explain(row, cat, hp, step, call, self.batch)
        self.activation_bytes += _new_bytes(call.out, call.args)
        self.rows.append(row)
        return g


# ---------------------------------------------------------------------------------------------
def _trace(model: nn.Module) -> Tuple[Optional[torch.fx.GraphModule], str]:
    try:
        return torch.fx.symbolic_trace(model), ""
    except Exception as e:  # any tracing failure: fall back to hooks, and say why
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, f"{type(e).__name__}: {msg[:160]}"


def _scope(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    key, val = list(stack.items())[-1]
    path = val[0] if isinstance(val, tuple) else key
    return str(path).split("@")[0]


def _walk_graph(gm: torch.fx.GraphModule, model: nn.Module, x: torch.Tensor, maker: _RowMaker,
                extent) -> Tuple[Any, Optional[Geo]]:
    modules = dict(gm.named_modules())
    param_names = {k for k, _ in model.named_parameters()}
    nodes = list(gm.graph.nodes)
    last_use = {}
    for i, node in enumerate(nodes):
        for inp in node.all_input_nodes:
            last_use[inp] = i
    env: Dict[torch.fx.Node, Any] = {}
    geo: Dict[torch.fx.Node, Optional[Geo]] = {}
    namer, placeholders = _Namer(), 0
    out, out_geo = None, None
    for i, node in enumerate(nodes):
        if node.op == "placeholder":
            if placeholders == 0:
                env[node], geo[node] = x, input_geo(extent)
            elif node.args:  # an optional forward argument: its default
                env[node], geo[node] = node.args[0], None
            else:
                raise CnnkitError(f"the model's forward needs more than one input ({node.target!r}); "
                                  "summary feeds a single image batch")
            placeholders += 1
            continue
        if node.op == "get_attr":  # read from the model itself: its tensors may be substituted (meta pass)
            obj = model
            for part in node.target.split("."):
                obj = getattr(obj, part)
            env[node], geo[node] = obj, None
            continue
        args = torch.fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
        if node.op == "output":
            out = args[0]
            srcs = [n for n in node.all_input_nodes if geo.get(n) is not None]
            out_geo = geo[srcs[0]] if srcs else None
            break
        maker.counter.key = node
        if node.op == "call_module":
            target = modules[node.target]
            val = target(*args, **kwargs)
            call = Call("module", target, args, kwargs, (), {}, val, extent)
            params = maker.own_params(list(target.parameters()))
            name = namer(node.target)
        else:
            target = node.target
            if node.op == "call_function":
                val = target(*args, **kwargs)
                call = Call("function", target, args, kwargs, (), {}, val, extent)
            else:
                self_obj, *rest = args
                val = getattr(self_obj, target)(*rest, **kwargs)
                call = Call("method", target, args, kwargs, (), {}, val, extent)
            # parameters used directly in the forward (class tokens, position embeddings)
            params = maker.own_params([env[a] for a in node.all_input_nodes
                                       if a.op == "get_attr" and a.target in param_names])
            scope = _scope(node)
            base = _type_name(call)
            name = namer(f"{scope}.{base}" if scope else base)
        call.geos = torch.fx.node.map_arg(node.args, lambda n: geo.get(n))
        call.kgeos = torch.fx.node.map_arg(node.kwargs, lambda n: geo.get(n))
        env[node] = val
        geo[node] = maker.add(name, call, node, params)
        for inp in node.all_input_nodes:  # free activations nobody needs any more
            if last_use.get(inp) == i:
                env.pop(inp, None)
    return out, out_geo


def _is_leaf(m: nn.Module) -> bool:
    if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        return False
    return not any(True for _ in m.children()) or type(m).__module__.startswith("torch.nn")


def _walk_hooks(model: nn.Module, x: torch.Tensor, maker: _RowMaker, extent) -> Tuple[Any, Optional[Geo]]:
    """Forward hooks on leaf modules; each input's geometry is looked up by tensor identity when a
    hooked layer produced it, else the last layer's output is assumed (sequential approximation)."""
    leaves, stack = [], [("", model)]
    while stack:
        name, m = stack.pop()
        if m is not model and _is_leaf(m):
            leaves.append((name, m))
            continue
        for child_name, child in reversed(list(m.named_children())):
            stack.append((f"{name}.{child_name}" if name else child_name, child))
    produced: Dict[int, Tuple[torch.Tensor, Geo]] = {id(x): (x, input_geo(extent))}
    state = {"last": input_geo(extent)}
    namer = _Namer()

    def lookup(t):
        if isinstance(t, torch.Tensor):
            hit = produced.get(id(t))
            return hit[1] if hit is not None and hit[0] is t else state["last"]
        return None

    def pre(mod, args, kwargs):
        maker.counter.key = mod

    def post(name):
        def hook(mod, args, kwargs, out):
            geos = tuple(lookup(a) for a in args)
            call = Call("module", mod, args, kwargs, geos, {}, out, extent)
            g = maker.add(namer(name), call, mod, maker.own_params(list(mod.parameters())))
            maker.counter.key = None
            if g is not None:
                state["last"] = g
                for t in _tensors(out):
                    produced[id(t)] = (t, g)
        return hook

    handles = []
    try:
        for name, m in leaves:
            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(m.register_forward_hook(post(name), with_kwargs=True))
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, state["last"]


# ---------------------------------------------------------------------------------------------
class _Pass(nn.Module):
    """Runs a walk as the forward of a module that holds the model, so that `functional_call` can
    substitute meta tensors for the model's parameters and buffers during the walk."""

    def __init__(self, model: nn.Module, walk):
        super().__init__()
        self.model = model
        self.walk = walk

    def forward(self, x):
        return self.walk(x)


def summary(model: nn.Module, input_size=None, batch_size: int = 1, device="cpu",
            dtype: Optional[torch.dtype] = None) -> ModelSummary:
    """Analyse `model` on one random batch of `input_size` (channels, *spatial), without batch dim.

    input_size: None takes the model's `default_cfg["input_size"]`, else (3, 224, 224).
    device: where the pass runs; the model is moved there and back. "meta" runs on shapes only
    (nothing is computed, the model is untouched): instant for any size, for models whose
    forward does not depend on values. dtype: defaults to the model's parameter dtype.
    """
    t0 = time.perf_counter()
    size = _resolve_input_size(model, input_size)
    if int(batch_size) < 1:
        raise CnnkitError(f"batch size must be at least 1, got {batch_size}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise CnnkitError(f"unknown device {device!r}; use cpu, cuda, cuda:0, mps or meta") from None
    dtype = dtype or _model_dtype(model)
    first = next(iter(model.parameters()), None)
    home = first.device if first is not None else None
    meta = device.type == "meta"
    flags = {m: m.training for m in model.modules()}
    model.eval()  # trace in eval mode: `if self.training` branches are fixed at trace time
    if not meta and home is not None and home != device:
        model.to(device)
    x = torch.rand((int(batch_size),) + size, device=device, dtype=dtype)  # (B, C, *spatial)
    extent = size[1:]
    gm, reason = _trace(model)
    counter = MacCounter()
    maker = _RowMaker(counter, int(batch_size))
    if gm is not None:
        walk = lambda inp: _walk_graph(gm, model, inp, maker, extent)  # noqa: E731
    else:
        walk = lambda inp: _walk_hooks(model, inp, maker, extent)  # noqa: E731
    try:
        with torch.no_grad(), counter:
            if meta:
                fake = {f"model.{k}": torch.empty_like(v, device="meta")
                        for k, v in list(model.named_parameters()) + list(model.named_buffers())}
                out, out_geo = torch.func.functional_call(_Pass(model, walk), fake, (x,))
            else:
                out, out_geo = walk(x)
    except CnnkitError:
        raise
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = "; the forward depends on values: use device='cpu'" if meta else \
            "; check the input size (channels, height, width)"
        raise CnnkitError(f"model forward failed on an input of shape {tuple(x.shape)}: {msg[:200]}{hint}") from None
    finally:
        for m, flag in flags.items():
            m.training = flag
        if not meta and home is not None and home != device:
            model.to(home)
    rest = sum(counter.counts.values())
    if rest:  # MACs of ops outside any row (functional calls between hooked layers)
        maker.rows.append(LayerRow(name="(functional ops)", type="functional", kind="other", input_shape=None,
                                   output_shape=None, params=0, macs=rest, flops=2 * rest))
    notes = list(maker.notes)
    if gm is None:
        notes.insert(0, f"torch.fx could not trace the model ({reason}); the receptive field follows layers in "
                        "execution order and ignores branches (sequential approximation)")
    if any(not r.rf_exact for r in maker.rows):
        notes.append("rows marked ~ have an approximate receptive field (see the notes above)")
    params = list({id(p): p for p in model.parameters()}.values())
    total_params = sum(p.numel() for p in params)
    used = sum(r.params for r in maker.rows)
    if used < total_params:
        notes.append(f"{total_params - used:,} parameters are not used by this forward pass" if gm is not None
                     else f"{total_params - used:,} parameters belong to no hooked layer (unused, or used in "
                          "functional code)")
    total_macs = sum(r.macs for r in maker.rows)
    o = first_tensor(out)
    og = out_geo
    return ModelSummary(
        model_name=type(model).__name__,
        rows=maker.rows,
        total_params=total_params,
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_macs=total_macs,
        total_flops=2 * total_macs,
        input_size=size,
        batch_size=int(batch_size),
        output_shape=tuple(o.shape) if o is not None else None,
        activation_bytes=maker.activation_bytes,
        param_bytes=sum(p.numel() * p.element_size() for p in params),
        dtype=str(dtype).replace("torch.", ""),
        traced=gm is not None,
        output_rf=(squash(og.rf), squash(og.jump), squash(og.start)) if og is not None else (None, None, None),
        output_rf_global=bool(og is not None and og.glob),
        notes=notes,
        seconds=time.perf_counter() - t0,
    )


def receptive_field(model: nn.Module, input_size=None, device="cpu") -> Dict[str, Tuple[Any, Any, Any]]:
    """(size, jump, start) per layer, in execution order; the model output's is `summary().output_rf`.

    Sizes and jumps are in input pixels; start is the centre of the layer's first output position
    in input pixel coordinates (pixel i at i). Global layers give (input size, None, None).
    """
    s = summary(model, input_size, device=device)
    return {r.name: (r.rf, r.jump, r.start) for r in s.rows if r.rf is not None}
