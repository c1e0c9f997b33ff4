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
import os
import time
from pathlib import Path
from typing import Callable

import torch
import yaml

from ..registry import CnnkitError
from . import page
from .images import data_uri, figure_png, heat_colors, to_hwc, upscale
from .page import esc

DEFAULT_MAX_IMAGES = 16
THUMB = 96  # pixels: height of each gallery picture
MAX_SUMMARY_ROWS = 40  # more layers than this are grouped by block
MAX_LABELLED_CLASSES = 30  # more classes than this: the confusion matrix as plain coloured cells


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if not isinstance(e, CnnkitError) else text


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
    """(config, environment) from config.yaml; the environment is in its trailing comments."""
    text = path.read_text()
    try:
        cfg = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise CnnkitError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    env, seen = {}, False
    for line in text.splitlines():
        if line.strip() == "# environment":
            seen = True
        elif seen and line.startswith("# ") and ": " in line:
            k, v = line[2:].split(": ", 1)
            env[k.strip()] = v.strip()
    return (cfg if isinstance(cfg, dict) else {}), env


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
        self.classes = [str(c) for c in (self.meta.get("classes") or range(self.meta.get("num_classes", 0)))]
        self.monitor = self.config.get("monitor", "val_acc")
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
            res["probs"] = res["logits"].float().softmax(1).cpu()
            res["preds"] = res["probs"].argmax(1)
            res["targets"] = res["targets"].cpu()
            return res

        return self._once("evaluation", make)

    def split(self):
        from .samples import validation_split

        return self._once("split", lambda: validation_split(self.meta, self.evaluation()["targets"]))


# -- formatting --------------------------------------------------------------------------------------
def _pct(v) -> str:
    return f"{100 * float(v):.2f}%"


def _metric(key: str, v) -> str:
    """A metrics.csv value as people read it: accuracies in %, losses to 4 places, times in s."""
    if v is None or v == "":
        return "—"
    v = float(v)
    if "acc" in key:
        return _pct(v)
    if key == "lr":
        return f"{v:.3g}"
    if key.endswith("_time"):
        return f"{v:.1f} s"
    if key.endswith("per_s"):
        return f"{v:,.0f}"
    return f"{v:.4f}"


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
    if all(k in run.history[0] for k in ("train_loss", "val_loss", "train_acc", "val_acc")):
        uri = data_uri(figure_png(plot_curves, run.history))
        parts.append(page.figure(uri, "training curves", "loss and accuracy per epoch, training and validation"))
    keys = list(run.history[-1].keys())
    best = run.meta.get("epoch") if run.ckpt.name == "best" else None
    rows = [[str(int(r["epoch"]))] + [_metric(k, r.get(k)) for k in keys[1:]] for r in run.history]
    marks = ["best" if best is not None and int(r["epoch"]) == int(best) else "" for r in run.history]
    parts.append(page.table(keys, rows, numeric=range(len(keys)), row_class=marks))
    if best is not None:
        parts.append(f"<p class='muted'>highlighted: epoch {int(best)}, the best {esc(run.monitor)}, "
                     "kept as best/ and evaluated below</p>")
    return "".join(parts)


def _confusion_section(run: _Run) -> str:
    from .plots import plot_confusion

    ev = run.evaluation()
    line = (f"<p>Fresh evaluation of <code>{esc(Path(ev['checkpoint']).name)}/</code> on the {esc(ev['split'])} "
            f"split of {esc(ev['data'])}: {ev['images']:,} images, accuracy <b>{_pct(ev['acc'])}</b>"
            + (f", top-5 {_pct(ev['acc5'])}" if "acc5" in ev else "")
            + f", loss {ev['loss']:.4f}" + (" (with test-time flip)" if ev.get("tta") else "") + ".</p>")
    cm, k = ev["confusion"].cpu(), len(run.classes)
    caption = "rows: true class, columns: predicted; each row sums to 1"
    if k <= MAX_LABELLED_CLASSES:
        uri = data_uri(figure_png(plot_confusion, cm, run.classes))
        return line + page.figure(uri, "confusion matrix", caption, width=min(640, 300 + 40 * k))
    # many classes: one coloured cell per entry (a labelled figure would be thousands of pixels wide)
    rows = (cm.float() / cm.sum(1, keepdim=True).clamp(min=1)).numpy()  # (K, K) row-normalised
    uri = data_uri(upscale(heat_colors(rows, "Blues"), max(k, 512 // k * k)))
    return line + page.figure(uri, "confusion matrix", f"{caption}; classes in the order of the per-class table, "
                              "darker = more", width=512)


def _per_class_section(run: _Run) -> str:
    from torchmetrics.classification import MulticlassF1Score, MulticlassPrecision, MulticlassRecall

    ev = run.evaluation()
    k = len(run.classes)
    preds, targets = ev["preds"], ev["targets"]
    p, r, f = (m(num_classes=k, average=None)(preds, targets)
               for m in (MulticlassPrecision, MulticlassRecall, MulticlassF1Score))
    support = torch.bincount(targets, minlength=k)
    rows = [[c, f"{p[i]:.3f}", f"{r[i]:.3f}", f"{f[i]:.3f}", f"{int(support[i]):,}"] for i, c in enumerate(run.classes)]
    rows.append(["macro average", f"{p.mean():.3f}", f"{r.mean():.3f}", f"{f.mean():.3f}", f"{int(support.sum()):,}"])
    table = page.table(["class", "precision", "recall", "F1", "support"], rows, numeric=(1, 2, 3, 4),
                       row_class=[""] * k + ["total"])
    return table + ("<p class='muted'>precision: of the images predicted as the class, how many are; recall: of "
                    "the images of the class, how many are found; F1: their harmonic mean (torchmetrics, "
                    "average=None)</p>")


def _thumb(img_u8: torch.Tensor) -> str:
    return data_uri(upscale(to_hwc(img_u8), THUMB))


def _mistakes_section(run: _Run) -> str:
    from .samples import images_at, worst_mistakes

    ev = run.evaluation()
    wrong = int((ev["preds"] != ev["targets"]).sum())
    if wrong == 0:
        return page.note(f"no mistakes on the {ev['images']:,} validation images")
    idx = worst_mistakes(ev["probs"], ev["targets"], run.max_images)
    if not idx:
        return page.note("max_images is 0: no pictures")
    imgs = images_at(run.split(), idx)
    cells = []
    for j, i in enumerate(idx):
        t, p = int(ev["targets"][i]), int(ev["preds"][i])
        cap = (f"true <b>{esc(run.classes[t])}</b><br>predicted <span class='no'>{esc(run.classes[p])}</span> "
               f"{100 * float(ev['probs'][i, p]):.0f}%")
        cells.append(f"<figure>{page.img(_thumb(imgs[j]), f'image {i}', pixelated=True)}"
                     f"<figcaption>{cap}</figcaption></figure>")
    return (f"<p class='muted'>{len(idx)} of the {wrong:,} wrong predictions ({_pct(wrong / ev['images'])} of the "
            f"images), the most confident first</p><div class='gallery'>{''.join(cells)}</div>")


def _gradcam_section(run: _Run) -> str:
    from .samples import cam_samples, images_at, per_class

    ev = run.evaluation()
    idx = per_class(ev["targets"], run.max_images)
    if not idx:
        return page.note("max_images is 0: no pictures")
    model = run.model()
    samples = cam_samples(model, images_at(run.split(), idx), run.meta["mean"], run.meta["std"], size=THUMB)
    stage = (getattr(model, "feature_info", None) or [{}])[-1].get("module", "?")
    cells = []
    for i, s in zip(idx, samples):
        t = int(ev["targets"][i])
        mark = "ok" if s.pred == t else "no"
        cap = (f"true <b>{esc(run.classes[t])}</b> · predicted <span class='{mark}'>{esc(run.classes[s.pred])}</span>"
               f" {100 * s.conf:.0f}%")
        pair = (page.img(data_uri(s.image), f"image {i}", pixelated=True)
                + page.img(data_uri(s.overlay), f"Grad-CAM of image {i}"))
        cells.append(f"<figure><div class='pair'>{pair}</div><figcaption>{cap}</figcaption></figure>")
    return (f"<p class='muted'>Grad-CAM of the predicted class at <code>{esc(stage)}</code>, the last feature "
            "stage: red is where the evidence for that class lies. Validation images, classes in turn.</p>"
            f"<div class='gallery pairs'>{''.join(cells)}</div>")


SECTIONS: tuple[tuple[str, str, Callable[[_Run], str]], ...] = (
    ("config", "Configuration and environment", _config_section),
    ("model", "Model", _model_section),
    ("training", "Training", _training_section),
    ("confusion", "Confusion matrix", _confusion_section),
    ("per-class", "Per-class precision, recall, F1", _per_class_section),
    ("mistakes", "Most confident mistakes", _mistakes_section),
    ("gradcam", "Grad-CAM gallery", _gradcam_section),
)


def _header(run: _Run) -> str:
    meta, cfg = run.meta, run.config
    data = meta.get("data") or {}
    model = meta.get("model", cfg.get("model", "?"))
    args = meta.get("model_args") or {}
    stamp = run.path / "metrics.csv" if (run.path / "metrics.csv").is_file() else run.ckpt / "meta.json"
    when = datetime.datetime.fromtimestamp(stamp.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    metric = (meta.get("metrics") or {}).get(run.monitor)
    which = "best" if run.ckpt.name == "best" else run.ckpt.name
    if metric is None:
        best = "—"
    else:
        best = _pct(metric) if "acc" in run.monitor else f"{metric:.4f}"
    epochs = f"{len(run.history)} of {cfg.get('epochs', '?')}"
    items = [(f"{which} {run.monitor}", best), (f"{which} epoch", str(meta.get("epoch", "—"))), ("epochs run", epochs),
             ("classes", str(len(run.classes))), ("input", "×".join(map(str, meta.get("input_size", []))))]
    ev = run._cache.get("evaluation")
    if isinstance(ev, dict):
        items.insert(2, ("evaluated accuracy", _pct(ev["acc"])))
    model_txt = model + (f" {_value(args)}" if args else "")
    data_txt = f"{data.get('name', cfg.get('data', '?'))} (val: {data.get('val', cfg.get('val', 'test'))})"
    return (f"<h1>{esc(run.path.name)}<span class='sub'>{esc(model_txt)} on {esc(data_txt)}</span></h1>"
            f"<div class='muted'>trained {esc(when)} · checkpoint <code>{esc(run.ckpt.name)}/</code> · "
            f"folder <code>{esc(run.path.resolve())}</code></div>{page.kpis(items)}")


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
        for sid, title, build in SECTIONS:
            try:
                body = build(r)
            except Exception as e:  # noqa: BLE001 - one broken part must not cost the whole page
                body = page.note(f"not available: {_one_line(e)}", warn=True)
                log(f"report: section '{title}' left out: {_one_line(e)}")
            sections.append((sid, title, body))
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    footer = f"written by cnnkit {esc(r.env.get('cnnkit', ''))} on {stamp} · <code>cnnkit report {esc(path)}</code>"
    html = page.document(f"{path.name} · cnnkit report", _header(r), sections, footer)
    out = path / "report.html"
    tmp = path / ".report.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    log(f"report: {out} ({len(html) / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")
    return out
