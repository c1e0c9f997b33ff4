"""`write_report(run)`: RUN/report.html, one self-contained page about a training run.

What it shows, top to bottom: the run (model, data, best metric, date), its resolved config and
environment, the model summary (parameters, MACs, receptive field), the training curves and
metrics, then one fresh evaluation of the checkpoint on the validation split: confusion matrix,
per-class precision / recall / F1 (torchmetrics), the most confident mistakes and a Grad-CAM
gallery. Pictures are base64 PNG `data:` URIs and the CSS is inline; there is no script and
nothing is fetched, so the page works offline and can be mailed or archived alone.

Each section is built on its own: one that cannot be made (a run stopped before its first
checkpoint has no evaluation; a data set whose files moved cannot be evaluated) shows why in its
place and the rest of the page is still written.
"""
from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Callable

import torch
import yaml

from ..registry import CnnkitError
from ..tasks import column_formats, format_value
from ..utils import atomic_write_text, class_names, first_line
from . import page
from .images import data_uri, figure_png
from .page import esc

DEFAULT_MAX_IMAGES = 16
MAX_SUMMARY_ROWS = 40  # more layers than this are grouped by block


def _run_folder(run) -> Path:
    """The run folder; a checkpoint folder inside one (best/, last/) is taken as its run."""
    p = Path(run)
    if not p.is_dir():
        raise CnnkitError(f"no run folder at {p}; give the folder `cnnkit train` created")
    if not (p / "config.yaml").is_file() and (p.parent / "config.yaml").is_file() and (p / "meta.json").is_file():
        p = p.parent
    if not (p / "config.yaml").is_file():
        raise CnnkitError(f"{p} is not a run folder (no config.yaml); give the folder `cnnkit train` created")
    return p


def _read_config(path: Path) -> tuple[dict, dict]:
    """(config, environment) of a run: config.yaml and environment.yaml beside it."""
    def read(p: Path) -> dict:
        if not p.is_file():
            return {}
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise CnnkitError(f"{p} is not valid YAML: {first_line(e)}") from None
        return d if isinstance(d, dict) else {}

    return read(path), read(path.with_name("environment.yaml"))


class _Run:
    """What the sections read: files of the run, and (built once, on first use) the model on the CPU,
    one evaluation of the checkpoint and the validation images."""

    def __init__(self, path: Path, device: str, max_images: int):
        from ..engine import checkpoint as ckpt
        from ..engine.precision import resolve_device
        from ..engine.run import read_metrics

        self.path, self.max_images = path, max(0, int(max_images))
        self.device = str(resolve_device(device))  # "auto" -> what it means here; a bad name fails now
        self.ckpt = ckpt.resolve_checkpoint(path)  # CnnkitError when the run has none
        self.meta = ckpt.load_meta(self.ckpt)
        self.config, self.env = _read_config(path / "config.yaml")
        self.env = self.env or {k: v for k, v in (self.meta.get("versions") or {}).items()}
        metrics = path / "metrics.csv"
        self.history = read_metrics(metrics) if metrics.is_file() else []
        self.classes = class_names(self.meta)
        self.formats = column_formats(self.meta)
        self.monitor = self.config.get("monitor") or "val_acc"
        self._cache: dict[str, object] = {}

    def _once(self, key: str, make: Callable):
        """Build a shared value once; a failure is remembered, so each section reports it without a retry."""
        if key not in self._cache:
            try:
                self._cache[key] = make()
            except Exception as e:  # noqa: BLE001 - shown in the page by each section that needed it
                self._cache[key] = e
        value = self._cache[key]
        if isinstance(value, Exception):
            raise value
        return value

    def model(self):
        from ..engine.inference import load_checkpoint_model

        return self._once("model", lambda: load_checkpoint_model(self.ckpt, "cpu")[0])

    def evaluation(self) -> dict:
        """evaluate_checkpoint's dict (loss, acc, confusion, logits, targets, ...) plus probs and preds."""

        def make():
            from ..engine.inference import evaluate_checkpoint

            res = evaluate_checkpoint(self.ckpt, device=self.device)
            for key in ("targets", "preds", "conf"):  # the per-image numbers the galleries pick from
                if isinstance(res.get(key), torch.Tensor):
                    res[key] = res[key].cpu()
            return res

        return self._once("evaluation", make)

    def split(self):
        from .samples import validation_split

        return self._once("split", lambda: validation_split(self.meta, self.evaluation().get("targets")))

    def task(self):
        from ..engine.inference import task_from_meta

        return self._once("task", lambda: task_from_meta(self.meta, getattr(self.model(), "default_cfg", None)))


# -- formatting --------------------------------------------------------------------------------------
def _value(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, (dict, list)):
        return yaml.safe_dump(v, default_flow_style=True).strip() if v else ("{}" if isinstance(v, dict) else "[]")
    return str(v)


def _shape(s) -> str:
    return "×".join(str(d) for d in s[1:]) if s else ""  # without the batch dimension


def _rf(r) -> str:
    if r.rf is None:
        return ""
    size = "×".join(map(str, r.rf)) if isinstance(r.rf, tuple) else str(r.rf)
    return f"{size} (whole input)" if r.rf_global else size


# -- sections -----------------------------------------------------------------------------------------
def _config_section(run: _Run) -> str:
    items = [(k, _value(v)) for k, v in run.config.items()]
    half = (len(items) + 1) // 2
    env = {**run.env, "device (config)": run.config.get("device", "auto"), "report evaluated on": run.device}
    return (f'<div class="cols three"><div><h3>config.yaml</h3>{page.kv_table(items[:half])}</div>'
            f"<div><h3>&nbsp;</h3>{page.kv_table(items[half:])}</div>"
            f"<div><h3>environment</h3>{page.kv_table((k, _value(v)) for k, v in env.items())}</div></div>")


def _group_rows(rows):
    """Summary rows, grouped by block when there are too many: (name, rows) in execution order.

    Tried in turn: each layer; its parent module (conv + norm + act of a block together); the first
    two, then the first, parts of the dotted name. The first with at most MAX_SUMMARY_ROWS groups wins."""
    keys = (lambda n: n, lambda n: n.rsplit(".", 1)[0], lambda n: ".".join(n.split(".")[:2]),
            lambda n: n.split(".")[0])
    for key in keys:
        groups: list[tuple[str, list]] = []
        for r in rows:
            k = key(r.name)
            if groups and groups[-1][0] == k:
                groups[-1][1].append(r)
            else:
                groups.append((k, [r]))
        if len(groups) <= MAX_SUMMARY_ROWS:
            break
    return groups


def _model_section(run: _Run) -> str:
    from ..analysis import human_bytes, human_count
    from ..analysis import summary as analyse

    model = run.model()
    size = tuple(run.meta["input_size"])
    s = analyse(model, size)
    stage = (getattr(model, "feature_info", None) or [{}])[-1].get("module")
    stage_rows = [r for r in s.rows if stage and (r.name == stage or r.name.startswith(stage + "."))]
    rf = _rf(stage_rows[-1]) if stage_rows else "—"
    head = page.kpis([
        ("parameters", human_count(s.total_params)),
        ("MACs / image", human_count(s.total_macs)),
        ("FLOPs / image", human_count(s.total_flops)),
        ("input", "×".join(map(str, size))),
        (f"receptive field ({stage})" if stage else "receptive field", f"{rf} px" if stage_rows else rf),
        ("activations", human_bytes(s.activation_bytes)),
    ])
    groups = _group_rows(s.rows)
    per_layer = len(groups) == len(s.rows)
    rows, classes = [], []
    for name, rs in groups:
        types = list(dict.fromkeys(r.type for r in rs))
        kinds = ", ".join(types[:3]) + (", …" if len(types) > 3 else "")
        rows.append([name, kinds if per_layer else f"{len(rs)} layers: {kinds}", _shape(rs[-1].output_shape),
                     f"{sum(r.params for r in rs):,}", human_count(sum(r.macs for r in rs)), _rf(rs[-1])])
        classes.append("")
    rows.append(["total", "", _shape((1,) + tuple(s.output_shape[1:])) if s.output_shape else "",
                 f"{s.total_params:,}", human_count(s.total_macs), ""])
    classes.append("total")
    table = page.table(["layer" if per_layer else "block", "type", "output", "params", "MACs", "receptive field"],
                       rows, numeric=(3, 4), row_class=classes)
    what = (f"{run.meta.get('model')} with {len(run.classes)} classes on a {'×'.join(map(str, size))} input; "
            f"receptive field {s.rf_mode}" + ("" if per_layer else f"; {len(s.rows)} layers grouped by block"))
    notes = "".join(page.note(n) for n in s.notes)
    return f"{head}<p class='muted'>{esc(what)}</p>{table}{notes}"


def _training_section(run: _Run) -> str:
    from .plots import plot_curves

    if not run.history:
        return page.note("no epoch finished: metrics.csv is missing or empty")
    parts = []
    if all(k in run.history[0] for k in ("train_loss", "val_loss")):
        uri = data_uri(figure_png(plot_curves, run.history, formats=run.formats))
        parts.append(page.figure(uri, "training curves", "loss and each validation metric per epoch"))
    keys = list(run.history[-1].keys())
    best = run.meta.get("epoch") if run.ckpt.name == "best" else None
    rows = [[str(int(r["epoch"]))] + [format_value(run.formats.get(k, "loss"), r.get(k)) for k in keys[1:]]
            for r in run.history]
    marks = ["best" if best is not None and int(r["epoch"]) == int(best) else "" for r in run.history]
    parts.append(page.table(keys, rows, numeric=range(len(keys)), row_class=marks))
    if best is not None:
        parts.append(f"<p class='muted'>highlighted: epoch {int(best)}, the best {esc(run.monitor)}, "
                     "kept as best/ and evaluated below</p>")
    return "".join(parts)


SECTIONS: tuple[tuple[str, str, Callable[[_Run], str]], ...] = (
    ("config", "Configuration and environment", _config_section),
    ("model", "Model", _model_section),
    ("training", "Training", _training_section),
)  # then the task's own sections (`Task.report_sections`)


def _header(run: _Run) -> str:
    meta, cfg = run.meta, run.config
    data = meta.get("data") or {}
    model = meta.get("model", cfg.get("model", "?"))
    args = meta.get("model_args") or {}
    stamp = run.path / "metrics.csv" if (run.path / "metrics.csv").is_file() else run.ckpt / "meta.json"
    when = datetime.datetime.fromtimestamp(stamp.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    metric = (meta.get("metrics") or {}).get(run.monitor)
    which = "best" if run.ckpt.name == "best" else run.ckpt.name
    best = format_value(run.formats.get(run.monitor, "loss"), metric)
    epochs = f"{len(run.history)} of {cfg.get('epochs', '?')}"
    items = [(f"{which} {run.monitor}", best), (f"{which} epoch", str(meta.get("epoch", "—"))), ("epochs run", epochs),
             ("classes", str(len(run.classes))), ("input", "×".join(map(str, meta.get("input_size", []))))]
    ev = run._cache.get("evaluation")
    name = run.monitor[4:] if run.monitor.startswith("val_") else run.monitor
    if isinstance(ev, dict) and isinstance(ev.get(name), (int, float)):
        items.insert(2, (f"evaluated {name}", format_value(run.formats.get(run.monitor, "loss"), ev[name])))
    model_txt = model + (f" {_value(args)}" if args else "")
    data_txt = f"{data.get('name', cfg.get('data', '?'))} (val: {data.get('val', cfg.get('val', 'test'))})"
    return (f"<h1>{esc(run.path.name)}<span class='sub'>{esc(model_txt)} on {esc(data_txt)}</span></h1>"
            f"<div class='muted'>trained {esc(when)} · checkpoint <code>{esc(run.ckpt.name)}/</code> · "
            f"folder <code>{esc(run.path.resolve())}</code></div>{page.kpis(items)}")


def _failed(e: Exception) -> Callable:
    """A section that shows why the task's sections could not be made."""
    def build(_run):
        raise e

    return build


def write_report(run, device: str = "cpu", max_images: int = DEFAULT_MAX_IMAGES, log=print) -> Path:
    """Write RUN/report.html and return its path.

    run: a run folder (or its best/ or last/ folder). device: where the one evaluation runs (the
    model summary and Grad-CAM run on the CPU). max_images: most pictures per gallery.
    """
    t0 = time.perf_counter()
    path = _run_folder(run)
    r = _Run(path, device, max_images)
    sections = []
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        torch.manual_seed(0)  # random inputs of the summary pass: the same page twice
        try:
            task_sections = tuple(r.task().report_sections())
        except Exception as e:  # noqa: BLE001 - the generic sections are still worth a page
            task_sections = (("task", "Evaluation", _failed(e)),)
        for sid, title, build in SECTIONS + task_sections:
            try:
                body = build(r)
            except Exception as e:  # noqa: BLE001 - one broken part must not cost the whole page
                body = page.note(f"not available: {first_line(e, with_type=True)}", warn=True)
                log(f"report: section '{title}' left out: {first_line(e, with_type=True)}")
            sections.append((sid, title, body))
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    footer = f"written by cnnkit {esc(r.env.get('cnnkit', ''))} on {stamp} · <code>cnnkit report {esc(path)}</code>"
    html = page.document(f"{path.name} · cnnkit report", _header(r), sections, footer)
    out = path / "report.html"
    atomic_write_text(out, html)
    log(f"report: {out} ({len(html) / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")
    return out
