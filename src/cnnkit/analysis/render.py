"""A `ModelSummary` as a rich table, a markdown table or JSON.

Numbers carry thousands separators; memory is in KiB / MiB / GiB (1024-based); an `~` before a
receptive field marks an approximate one (see the notes under the table).
"""
from __future__ import annotations

import dataclasses
import io
import json
from typing import List

from ..registry import suggest
from .formulas import num

FORMATS = ("table", "markdown", "json")
_COLUMNS = ("Layer", "Type", "Output shape", "Config", "Params", "MACs", "RF", "Jump", "Memory")
_RIGHT = {"Params", "MACs", "RF", "Jump", "Memory"}


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,} B" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024


def human_count(n: int) -> str:
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)


def _x(v) -> str:
    """3 -> '3', (1, 7) -> '1×7'."""
    if isinstance(v, (tuple, list)):
        return "×".join(num(e) for e in v)
    return num(v)


def shape_str(shape) -> str:
    return "×".join(str(s) for s in shape) if shape is not None else ""


def config_str(r) -> str:
    parts = []
    if r.in_channels is not None and r.out_channels is not None:
        parts.append(f"{r.in_channels}→{r.out_channels}" if r.kind in ("conv", "transposed", "linear")
                     else f"{r.in_channels}")
    if r.kernel is not None:
        parts.append(f"k{_x(r.kernel)} s{_x(r.stride)}")
        if r.padding not in (0, None):
            parts.append(f"p{_x(r.padding)}")
        if r.dilation not in (1, None):
            parts.append(f"d{_x(r.dilation)}")
        if r.groups not in (1, None):
            parts.append(f"g{r.groups}")
    return " ".join(parts)


def rf_str(r) -> str:
    if r.rf is None:
        return ""
    if r.rf_global:
        return "global"
    return ("" if r.rf_exact else "~") + _x(r.rf)


def _cells(r) -> List[str]:
    return [r.name, r.type, shape_str(r.output_shape), config_str(r), num(r.params) if r.params else "",
            num(r.macs) if r.macs else "", rf_str(r), _x(r.jump) if r.jump is not None else "",
            human_bytes(r.act_bytes) if r.act_bytes else ""]


def totals_lines(s) -> List[str]:
    rf, jump, start = s.output_rf
    if s.output_rf_global:
        out_rf = "global (every output sees the whole input)"
    elif rf is not None:
        out_rf = f"{_x(rf)} px (jump {_x(jump)}, start {_x(start)})"
    else:
        out_rf = "n/a"
    lines = [
        f"Input: {shape_str((s.batch_size,) + tuple(s.input_size))} ({s.dtype}) → output: {shape_str(s.output_shape)}",
        f"Params: {s.total_params:,} (trainable {s.trainable_params:,}; {human_bytes(s.param_bytes)})",
        f"MACs: {s.total_macs:,} ({human_count(s.total_macs)})   FLOPs: {s.total_flops:,} "
        f"({human_count(s.total_flops)}) = 2·MACs; conv, linear, matmul and attention only",
        f"Activations: {human_bytes(s.activation_bytes)} (layer outputs; in-place results and views counted once)",
        f"Receptive field: {s.rf_mode}; at the output: {out_rf}",
    ]
    lines += [f"Note: {n}" for n in s.notes]
    return lines


def to_table(s, explain: bool = False):
    """A `rich.table.Table`; with `explain`, a last column holds each layer's formulas."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=f"{s.model_name} — {len(s.rows)} layers", caption=Text("\n".join(totals_lines(s))),
              caption_justify="left", header_style="bold")
    for c in _COLUMNS:
        t.add_column(c, justify="right" if c in _RIGHT else "left", no_wrap=c != "Layer" or not explain)
    if explain:
        t.add_column("Formulas", overflow="fold", min_width=40)
    for r in s.rows:
        t.add_row(*(Text(c) for c in _cells(r)), *([Text(r.explain)] if explain else []))
    t.add_section()
    t.add_row("Total", "", shape_str(s.output_shape), "", num(s.total_params), num(s.total_macs), "", "",
              human_bytes(s.activation_bytes), *([""] if explain else []), style="bold")
    return t


def _explain_lines(s) -> List[str]:
    return [f"{r.name}: {r.explain}" for r in s.rows if r.explain]


def _markdown(s, explain: bool) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    lines = [f"### {s.model_name}", "", "| " + " | ".join(_COLUMNS) + " |",
             "|" + "|".join("---:" if c in _RIGHT else "---" for c in _COLUMNS) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in _cells(r)) + " |" for r in s.rows]
    lines += ["| **Total** |  | " + shape_str(s.output_shape) + f" |  | **{s.total_params:,}** | "
              f"**{s.total_macs:,}** |  |  | {human_bytes(s.activation_bytes)} |", ""]
    lines += [f"- {line}" for line in totals_lines(s)]
    if explain:
        lines += ["", "#### Formulas", ""] + [f"- `{r.name}`: {r.explain}" for r in s.rows if r.explain]
    return "\n".join(lines) + "\n"


def to_dict(s, explain: bool = False) -> dict:
    rows = []
    for r in s.rows:
        d = dataclasses.asdict(r)
        if not explain:
            d.pop("explain")
        rows.append(d)
    return {
        "model": s.model_name,
        "input_size": list(s.input_size),
        "batch_size": s.batch_size,
        "dtype": s.dtype,
        "output_shape": list(s.output_shape) if s.output_shape is not None else None,
        "params": s.total_params,
        "trainable_params": s.trainable_params,
        "macs": s.total_macs,
        "flops": s.total_flops,
        "activation_bytes": s.activation_bytes,
        "param_bytes": s.param_bytes,
        "receptive_field": {"mode": "exact" if s.traced else "sequential approximation",
                            "output": {"size": s.output_rf[0], "jump": s.output_rf[1], "start": s.output_rf[2],
                                       "global": s.output_rf_global}},
        "notes": list(s.notes),
        "rows": rows,
    }


def render(s, fmt: str = "table", explain: bool = False, width: int = 200) -> str:
    """Text of the summary: 'table' (rich, plain text), 'markdown' or 'json'."""
    if fmt == "json":
        return json.dumps(to_dict(s, explain), indent=2)
    if fmt == "markdown":
        return _markdown(s, explain)
    if fmt != "table":
        raise suggest(fmt, FORMATS, "summary format")
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False, legacy_windows=False)
    console.print(to_table(s, explain=False))
    if explain:
        console.print("\nFormulas (the guide's, with each layer's own numbers):", soft_wrap=True)
        for line in _explain_lines(s):
            console.print(f"  {line}", soft_wrap=True, highlight=False, markup=False)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"

