"""The guide's formulas, filled in with one layer's own numbers (`summary(...).render(explain=True)`).

    output size   ⌊(W − K + 2P)/S⌋ + 1, with dilation ⌊(W − d(K−1) − 1 + 2P)/S⌋ + 1
    parameters    (K·K·C_in/groups + 1)·C_out   (+ 0 without bias)
    MACs          K·K·C_in/groups·C_out·H_out·W_out
    receptive     RF = RF_in + (k_eff − 1)·jump_in, jump = jump_in·S, k_eff = d(K−1) + 1

e.g. "out = ⌊(224 − 7 + 2·3)/2⌋ + 1 = 112; params = (7·7·3 + 0)·64 = 9,408;
MACs = 7·7·3·64·112·112 = 118,013,952; RF = 1 + (7−1)·1 = 7; jump = 1·2 = 2".
"""
from __future__ import annotations

import math
from typing import List, Sequence

from .geometry import Geo
from .ops import first_tensor

_AXES = {1: ("L",), 2: ("H", "W"), 3: ("T", "H", "W")}


def num(v) -> str:
    """7 -> '7', 0.5 -> '0.5', 1.0 -> '1', 9408 -> '9,408'."""
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        if v.is_integer():
            v = int(v)
        else:
            return f"{v:.4g}"
    return f"{v:,}"


def _per_axis(parts: Sequence[str], names: Sequence[str]) -> str:
    """One text when every axis reads the same, else 'H: …, W: …'."""
    if len(set(parts)) == 1:
        return parts[0]
    return ", ".join(f"{n}: {p}" for n, p in zip(names, parts))


def _dot(xs) -> str:
    return "·".join(num(x) for x in xs)


def out_size(n: int, k: int, s: int, p: int, d: int, ceil: bool = False) -> tuple:
    """(text, value) of the guide's output-size formula for one axis."""
    body = f"{n} − {k} + 2·{p}" if d == 1 else f"{n} − {d}·({k}−1) − 1 + 2·{p}"
    span = n - d * (k - 1) - 1 + 2 * p
    if ceil:
        val = -(-span // s) + 1
        if (val - 1) * s >= n + p:  # PyTorch: the last window must start inside the input or left padding
            val -= 1
        return f"⌈({body})/{s}⌉ + 1", val
    return f"⌊({body})/{s}⌋ + 1", span // s + 1


def _conv_text(row, hp, call, batch) -> List[str]:
    x, out = first_tensor(call.args), first_tensor(call.out)
    nk = hp["nk"]
    names = _AXES.get(nk, tuple(f"d{i}" for i in range(nk)))
    k, s, p, d = hp["kernel"], hp["stride"], hp["padding"], hp["dilation"]
    cin, cout, g, bias = hp["in_channels"], hp["out_channels"], hp["groups"], hp["bias"]
    n_in, n_out = x.shape[-nk:], out.shape[-nk:]
    parts = []
    if hp.get("output_padding") is not None:  # transposed: (W − 1)·S − 2P + d(K−1) + output_padding + 1
        texts = []
        for i in range(nk):
            op = hp["output_padding"][i]
            val = (n_in[i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op + 1
            texts.append(f"({n_in[i]} − 1)·{s[i]} − 2·{p[i]} + {d[i]}·({k[i]}−1) + {op} + 1 = {val}")
        parts.append("out = " + _per_axis(texts, names))
        w = math.prod(k) * cin * (cout // g)
        parts.append(f"params = {_dot(k)}·{cin}·{cout}{'/' + str(g) if g > 1 else ''} + {cout if bias else 0}"
                     f" = {num(w + (cout if bias else 0))}")
        macs = w * math.prod(n_in) * x.shape[0]
        parts.append(f"MACs = {_dot(k)}·{cin}·{cout}{'/' + str(g) if g > 1 else ''}·{_dot(n_in)}"
                     f"{'·' + str(batch) if batch > 1 else ''} = {num(macs)}")
        return parts
    texts = []
    for i in range(nk):
        t, v = out_size(n_in[i], k[i], s[i], p[i], d[i])
        texts.append(f"{t} = {v}")
    parts.append("out = " + _per_axis(texts, names))
    per_out = math.prod(k) * cin // g
    parts.append(f"params = ({_dot(k)}·{cin}{'/' + str(g) if g > 1 else ''} + {1 if bias else 0})·{cout}"
                 f" = {num((per_out + (1 if bias else 0)) * cout)}")
    macs = per_out * cout * math.prod(n_out) * out.shape[0]
    parts.append(f"MACs = {_dot(k)}·{cin}{'/' + str(g) if g > 1 else ''}·{cout}·{_dot(n_out)}"
                 f"{'·' + str(batch) if batch > 1 else ''} = {num(macs)}")
    return parts


def _pool_text(hp, call) -> List[str]:
    x = first_tensor(call.args)
    nk = hp["nk"]
    names = _AXES.get(nk, tuple(f"d{i}" for i in range(nk)))
    texts = []
    for i in range(nk):
        t, v = out_size(x.shape[-nk + i], hp["kernel"][i], hp["stride"][i], hp["padding"][i], hp["dilation"][i],
                        hp.get("ceil_mode", False))
        texts.append(f"{t} = {v}")
    return ["out = " + _per_axis(texts, names)]


def _rf_window(step, hp, transposed: bool = False) -> str:
    g_in, g_out = step.inputs[0], step.geo
    nk = hp["nk"]
    names = _AXES.get(g_in.n, tuple(f"axis {i}" for i in range(g_in.n)))
    rf_t, jump_t, start_t = [], [], []
    for j, t in enumerate(range(-nk, 0)):
        i = g_in.axis_of(t)
        k, s, p, d = hp["kernel"][j], hp["stride"][j], hp["padding"][j], hp["dilation"][j]
        k_eff = d * (k - 1) + 1
        keff_note = f" (k_eff = {d}·({k}−1) + 1 = {k_eff})" if d > 1 else ""
        if transposed:
            rf_t.append(f"RF = {num(g_in.rf[i])} + (⌈{k_eff}/{num(s)}⌉−1)·{num(g_in.jump[i])} = "
                        f"{num(g_out.rf[i])}{keff_note}")
            jump_t.append(f"jump = {num(g_in.jump[i])}/{num(s)} = {num(g_out.jump[i])}")
        else:
            rf_t.append(f"RF = {num(g_in.rf[i])} + ({k_eff}−1)·{num(g_in.jump[i])} = {num(g_out.rf[i])}{keff_note}")
            jump_t.append(f"jump = {num(g_in.jump[i])}·{num(s)} = {num(g_out.jump[i])}")
        if g_out.start[i] != g_in.start[i]:
            sign = "+" if g_out.start[i] > g_in.start[i] else "−"
            start_t.append(f"start = {num(g_in.start[i])} {sign} {num(abs(g_out.start[i] - g_in.start[i]))}"
                           f" = {num(g_out.start[i])}")
        else:
            start_t.append("")
    sel = [names[g_in.axis_of(t)] for t in range(-nk, 0)]
    out = [_per_axis(rf_t, sel), _per_axis(jump_t, sel)]
    if any(start_t):
        out.append(_per_axis([s or "start unchanged" for s in start_t], sel))
    return "; ".join(out)


def _rf_merge(step) -> str:
    geos: List[Geo] = step.inputs
    g = step.geo
    if g is None or g.glob:
        return "RF = global (an input depends on the whole image)"
    parts = []
    for i in range(g.n):
        vals = [num(x.rf[i]) for x in geos]
        plain = max(x.rf[i] for x in geos)
        if g.rf[i] == plain:
            parts.append(f"RF = max({', '.join(vals)}) = {num(g.rf[i])}")
        else:
            parts.append(f"RF = union of regions ({', '.join(vals)}, offset centres) = {num(g.rf[i])}")
    return _per_axis(parts, _AXES.get(g.n, tuple(f"axis {i}" for i in range(g.n))))


def explain(row, cat: str, hp: dict, step, call, batch: int) -> str:
    """The formulas for one row, '; '-separated (empty for layers with nothing to compute)."""
    parts: List[str] = []
    try:
        if cat in ("conv", "transposed"):
            parts += _conv_text(row, hp, call, batch)
        elif cat == "pool":
            parts += _pool_text(hp, call)
        elif cat == "linear":
            out = first_tensor(call.out)
            cin, cout, bias = hp["in_channels"], hp["out_channels"], hp["bias"]
            n = out.numel() // cout
            parts.append(f"params = ({num(cin)} + {1 if bias else 0})·{num(cout)} = {num((cin + bias) * cout)}")
            parts.append(f"MACs = {num(cin)}·{num(cout)}{'·' + num(n) if n > 1 else ''} = {num(cin * cout * n)}")
        elif call.op == "module":
            own = sum(p.numel() for p in call.target.parameters())
            c = hp.get("in_channels")
            if own and c and own == 2 * c:
                parts.append(f"params = 2·{num(c)} = {num(own)} (γ, β)")
            elif own:
                parts.append(f"params = {num(own)}")
        g = step.geo
        if g is not None:
            if step.rule == "global":
                ext = "×".join(str(e) for e in g.rf)
                parts.append(f"RF = global (whole {ext} input)")
            elif step.rule == "window" and cat in ("conv", "pool", "adaptive", "unshuffle"):
                if cat == "adaptive":
                    parts.append(f"adaptive pool as kernel = stride = {num(squash1(hp['kernel']))}")
                parts.append(_rf_window(step, hp if cat != "unshuffle" else _unshuffle_hp(step), False))
            elif step.rule == "transposed":
                parts.append(_rf_window(step, hp, True))
            elif step.rule == "merge":
                parts.append(_rf_merge(step))
            elif step.rule in ("pad", "slice", "resample"):
                g_in = step.inputs[0]
                parts.append(f"RF = {num(squash1(g.rf))}, jump = {num(squash1(g.jump))}, start = "
                             f"{num(squash1(g_in.start))} → {num(squash1(g.start))}"
                             f"{' (approx.)' if step.rule == 'resample' else ''}")
    except Exception:  # the explanation is a courtesy: never let it break the summary
        pass
    return "; ".join(p for p in parts if p)


def squash1(v):
    v = tuple(v)
    return v[0] if len(set(v)) == 1 else "×".join(num(x) for x in v)


def _unshuffle_hp(step) -> dict:
    g_in, g_out = step.inputs[0], step.geo
    r = [int(round(o / i)) for o, i in zip(g_out.jump, g_in.jump)]
    return dict(nk=len(r), kernel=r, stride=r, padding=[0] * len(r), dilation=[1] * len(r))
