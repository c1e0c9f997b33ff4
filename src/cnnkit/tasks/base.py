"""The task contract: everything that differs between classification, detection, segmentation, ...

The engine (`engine/loop.py`, `engine/step.py`, `engine/evaluate.py`), `cnnkit eval`, `predict`,
`report`, `export` and `bench` call only the methods below; none of them asks which task it has.
A task is made from the data's class names, the model's `default_cfg` and the run's options:

    task = create_task(name, classes=[...], model_cfg=model.default_cfg, label_smoothing=0.1, ...)

What a task owns, and the method for it:

- **targets**: `target_kind`, what a data set must give for it ("label": one class index per image;
  "labels": a uint8 multi-hot row, `data/multilabel.py`; "objects": `data.targets.ObjectTargets`;
  "mask": a class map; "volume": preprocessed volumes). `load_data` (a classmethod: the engine calls it before the task
  exists, since the classes come from the data) builds the splits or says why the data set cannot.
  `prepare(train_targets)` is then called once by the engine with the training split's targets,
  before the first step, for what a task learns from them (the multilabel task's label weights);
  what it keeps belongs in `state_dict()` and, for `cnnkit eval`, in its options (`meta()`).
- **the model's arguments**: `model_kwargs()` (e.g. detectors with a background class get K + 1).
- **augmentation that moves targets with the pixels**: `batch_augment(spec)` returns a module
  called as `aug(x, y, generator) -> (x, y)` on whole batches on the training device.
- **the training step**: `train_step(model, x, y) -> (loss, stats)`, run under autocast by
  `engine.step.TrainStep`. `stats` maps names to device tensors that are *sums over the batch's
  samples* (the engine adds them up and divides by the samples seen, with one host sync per log
  interval); their specs are `train_metrics`. Models that compute their loss inside `forward`
  (torchvision's R-CNNs, our detectors) get `model(x, targets)` here.
- **a streaming evaluator**: `evaluator(device) -> Evaluator` with `update(outputs, targets)` per
  batch and `compute(dd) -> dict`, where `dd` is the run's `engine.distributed.Distributed` (sums
  and gathers across ranks; a group of one in a single process). It never holds a whole split's
  outputs. `forward_eval(model, x, tta)` makes the outputs `update` takes. The metric specs
  (`metrics`: name, display format, higher-is-better) name the columns of metrics.csv
  (`val_<name>`); `monitor` is the default one to keep best/ by.
- **decoding and drawing**: `decode(outputs) -> list[dict]` (one per image), `describe(pred)` (the
  lines `cnnkit predict` prints), `draw(image_u8, pred) -> uint8 (3, H, W)` and `save_predictions`.
- **report sections**: `report_sections()` -> ((id, title, build(run) -> html), ...), after the
  generic ones (config, model, training curves).
- **export**: `export_spec(model) -> ExportSpec`: the module to trace, its output names and how to
  compare its outputs with eager PyTorch.
- **state**: `state_dict()` / `load_state_dict()` for anything a task carries between steps
  (saved in last/, so resume stays exact); `meta()` for checkpoint meta.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..registry import CnnkitError


@dataclass(frozen=True)
class MetricSpec:
    """A metric's name (metrics.csv column `val_<name>` / `train_<name>`), how people read it, and
    which way is better. `fmt`: "pct" (0.9512 -> 95.12%), "loss" (4 places), "ap" (3 places)."""

    name: str
    fmt: str = "loss"
    higher_is_better: bool = True
    bar: bool = True  # shown in the epoch line and the progress bar

    def format(self, v) -> str:
        return format_value(self.fmt, v)


FORMATS: dict[str, Callable[[float], str]] = {
    "pct": lambda v: f"{100 * v:.2f}%",
    "loss": lambda v: f"{v:.4f}",
    "ap": lambda v: f"{v:.3f}",
    "lr": lambda v: f"{v:.3g}",
    "seconds": lambda v: f"{v:.1f} s",
    "rate": lambda v: f"{v:,.0f}",
    "int": lambda v: f"{int(v)}",
}


def format_value(fmt: str, v) -> str:
    if v is None or v == "":
        return "—"
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    return FORMATS.get(fmt, FORMATS["loss"])(v)


# the columns every run has, whatever the task
ENGINE_COLUMNS = {"epoch": "int", "lr": "lr", "epoch_time": "seconds", "images_per_s": "rate"}


def column_formats(task_or_meta) -> dict[str, str]:
    """metrics.csv column -> display format, from a task or from a checkpoint's meta["metric_specs"]."""
    if isinstance(task_or_meta, dict):
        specs = [MetricSpec(**s) for s in task_or_meta.get("metric_specs", [])]
        train = [MetricSpec(**s) for s in task_or_meta.get("train_specs", [])]
    else:
        specs, train = list(task_or_meta.metrics), list(task_or_meta.train_metrics)
    out = dict(ENGINE_COLUMNS, train_loss="loss")
    out.update({f"train_{s.name}": s.fmt for s in train})
    out.update({f"val_{s.name}": s.fmt for s in specs})
    return out


@dataclass
class ExportSpec:
    """What `cnnkit export` traces and checks: `module(images01) -> outputs` with normalisation inside,
    `output_names` for the file, and `compare(ours, theirs) -> max abs difference` over the outputs
    (for detectors: of the decoded boxes and scores). `shape(batch, example_input)`: the one output's
    expected shape, when it is not classification's (batch, num_classes)."""

    module: torch.nn.Module
    output_names: list[str]
    compare: Callable | None = None
    notes: list[str] = field(default_factory=list)
    shape: Callable | None = None


class Evaluator:
    """Streaming evaluation: `update` per batch, `compute` once at the end (see the module docstring)."""

    def update(self, outputs, targets) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def compute(self, dd=None) -> dict:  # pragma: no cover - interface
        raise NotImplementedError


class Task:
    """The base of every task; subclasses set the class attributes and override what differs."""

    name: str = ""
    target_kind: str = "label"
    metrics: tuple[MetricSpec, ...] = ()
    train_metrics: tuple[MetricSpec, ...] = ()
    monitor: str = "val_loss"

    def __init__(self, classes, model_cfg: dict | None = None, **options):
        self.classes = [str(c) for c in classes]
        self.num_classes = len(self.classes)
        self.model_cfg = dict(model_cfg or {})
        self.options = options

    # -- data
    @classmethod
    def load_data(cls, name: str, task_options: dict | None = None, log=print, **kwargs):
        """The run's data: `data.datasets.load_data(name, targets=cls.target_kind, **kwargs)` (uint8 image
        tensors and this task's kind of targets). A task whose data are not images of one size (volumes
        planned by `cnnkit plan`) loads its own way; `task_options` are the run's `task_args`."""
        from ..data.datasets import load_data

        return load_data(name, targets=cls.target_kind, log=log, **kwargs)

    def prepare(self, train_targets) -> None:
        """Called once by the engine with the training split's targets (on the host) before the first step."""

    # -- model
    def model_kwargs(self, image_size: int | None = None) -> dict:
        """The builder arguments this task's data needs (`image_size`: the side of the run's images)."""
        return dict(num_classes=self.num_classes)

    # -- metrics
    def spec(self, column: str) -> MetricSpec:
        """The spec of a metrics.csv column (`val_map`), or of the loss."""
        name = column.split("_", 1)[1] if column.startswith(("val_", "train_")) else column
        for s in (*self.metrics, *self.train_metrics):
            if s.name == name:
                return s
        if name == "loss":
            return MetricSpec("loss", "loss", higher_is_better=False)
        known = ["val_loss"] + [f"val_{s.name}" for s in self.metrics]
        from ..registry import suggest

        raise suggest(column, known, f"metric for the {self.name} task (monitor)")

    def better(self, column: str, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.spec(column).higher_is_better else value < best

    def check_monitor(self, column: str) -> None:
        self.spec(column)

    # -- what the engine calls
    def batch_augment(self, spec):  # pragma: no cover - interface
        raise NotImplementedError

    def synthetic_targets(self, n: int, size, generator: torch.Generator):
        """Random targets for `n` images of `size` (H, W): what `cnnkit bench` trains on with --data synthetic."""
        return torch.randint(0, self.num_classes, (n,), generator=generator)

    def train_step(self, model, x, y):  # pragma: no cover - interface
        raise NotImplementedError

    def forward_eval(self, model, x, tta: bool = False):
        return model(x)

    def evaluator(self, device) -> Evaluator:  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, outputs, **options) -> list[dict]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self, pred: dict) -> list[str]:
        return [str(pred)]

    def eval_summary(self, res: dict) -> dict:
        """What `cnnkit eval` prints: {"lines": [str], "tables": [(title, headers, rows)]}."""
        return dict(lines=["  ".join(f"{s.name} {s.format(res[s.name])}" for s in self.metrics if s.name in res)])

    def draw(self, image: torch.Tensor, pred: dict) -> torch.Tensor:
        raise CnnkitError(f"the {self.name} task draws no predictions")

    def save_drawing(self, image: torch.Tensor, pred: dict, folder, stem: str):
        """Write `draw(image, pred)` as FOLDER/STEM.png and return its path; None for tasks that draw nothing."""
        return None

    def save_predictions(self, results: list[dict], folder) -> None:
        """Write the predictions of `cnnkit predict` in the task's exchange format (COCO results JSON, ...)."""

    def report_sections(self) -> tuple:
        return ()

    def log_pictures(self, logger, run, epoch: int, res: dict, log=print) -> None:
        """Pictures for a logger that takes them (TensorBoard), after each epoch."""

    def export_spec(self, model, mean, std) -> ExportSpec:  # pragma: no cover - interface
        raise CnnkitError(f"the {self.name} task cannot be exported yet")

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def meta(self) -> dict:
        """What meta.json keeps of the task: its name and options, and the metric specs for the tools."""
        from dataclasses import asdict

        return dict(task=self.name, task_options=dict(self.options),
                    metric_specs=[asdict(s) for s in self.metrics],
                    train_specs=[asdict(s) for s in self.train_metrics])
