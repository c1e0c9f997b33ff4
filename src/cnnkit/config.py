"""Training configuration: typed defaults -> recipe -> YAML file -> command line.

Every key is a field of `TrainConfig` with a comment; an unknown key anywhere is an error that
suggests the closest key. The resolved config is saved as `config.yaml` in each run.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .registry import CnnkitError, suggest


@dataclass
class TrainConfig:
    # -- data
    data: str = "shapes"              # dataset name (`cnnkit datasets`)
    data_dir: str | None = None       # where to look first (then $CNNKIT_DATA, /usr/share/datasets/<name>)
    download: bool = False            # allow torchvision to download a missing data set
    val: str = "test"                 # "test" = the official test split, or a held-out fraction of train, e.g. "0.1"
    image_size: int | None = None     # resize once at load (None: the data set's own size)
    channels: int | None = None       # convert images to 1 (grey) or 3 (RGB) channels (None: as stored)
    num_train: int | None = None      # subsample / size of the training set (shapes: how many to generate)
    num_val: int | None = None
    workers: int = 2                  # DataLoader workers for image folders too big for memory
    # -- model
    model: str = "fastnet"            # `cnnkit models`
    model_args: dict = field(default_factory=dict)  # extra builder arguments, e.g. {drop_rate: 0.2}
    weights: str | None = None        # pretrained weights file (torchvision .pth or cnnkit .safetensors)
    task: str | None = None           # classify | multilabel | detect | segment (None: the model's own, from its default_cfg)
    task_args: dict = field(default_factory=dict)  # the task's own options, e.g. {loss: ce_dice} for segmentation
    # -- optimisation
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "nesterov"       # sgd | momentum | nesterov | adam | adamw | rmsprop
    lr: float = 0.2                   # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4        # L2, not applied to norms and biases
    schedule: str = "onecycle"        # none | step | cosine | onecycle | poly
    warmup_epochs: float = 0.0        # linear warm-up (onecycle has its own)
    step_size: int = 3                # step schedule: decay every N epochs ...
    gamma: float = 0.1                # ... by this factor
    label_smoothing: float = 0.1
    grad_clip: float = 0.0            # max gradient norm (0 = off)
    ema: float = 0.0                  # EMA decay of the weights, e.g. 0.999 (0 = off); evaluation uses the EMA
    early_stop: int = 0               # patience in epochs on `monitor` (0 = off)
    monitor: str | None = None        # the metrics.csv column best/ is kept by (None: the task's, e.g. val_acc, val_map)
    augment: str = "crop=2,hflip=0.5"  # none | light | standard | strong | "crop=4,hflip=0.5,..." (2 px shifts:
                                      # on 28-32 px images, 4 px cost 0.4 % accuracy in 7-epoch runs)
    normalize: str = "dataset"        # dataset (its mean/std) | half (0.5/0.5, the guide's) | none ([0,1])
    tta: bool = True                  # test-time augmentation: average with the mirrored image at evaluation
    # -- speed and precision
    device: str = "auto"              # auto | cpu | cuda | cuda:1 | mps
    amp: str = "auto"                 # auto (bf16 on capable CPUs, fp16/bf16 on CUDA) | off | bf16 | fp16
    channels_last: bool = True
    compile: bool = False             # torch.compile the model
    sync_bn: bool = False             # torchrun/DDP: BatchNorm statistics over the global batch (no effect in one process)
    # -- the run
    seed: int = 0
    project: str = "runs"             # parent folder of runs
    name: str | None = None           # run folder name (default: <model>-<data>, numbered)
    quiet: bool = False               # log lines instead of a progress bar
    logger: str = "csv"               # csv (metrics.csv only) | tensorboard (also RUN/tensorboard/)
    report: bool = True               # write RUN/report.html when training ends (any time: `cnnkit report RUN`)
    recipe: str | None = None         # a named recipe whose values sit under yours (`default`, `seed`)

    def validate(self) -> "TrainConfig":
        def bad(msg):
            raise CnnkitError(msg)

        if self.epochs < 1:
            bad(f"epochs must be at least 1 (got {self.epochs})")
        if self.batch_size < 1:
            bad(f"batch_size must be at least 1 (got {self.batch_size})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad(f"lr must be a positive number (got {self.lr})")
        for k in ("weight_decay", "label_smoothing", "grad_clip", "warmup_epochs", "momentum"):
            if getattr(self, k) < 0:
                bad(f"{k} must not be negative (got {getattr(self, k)})")
        if not 0 <= self.label_smoothing < 1:
            bad(f"label_smoothing must be in [0, 1) (got {self.label_smoothing})")
        if not 0 <= self.ema < 1:
            bad(f"ema is a decay in [0, 1), e.g. 0.999 (got {self.ema})")
        for k, choices in CHOICES.items():
            if getattr(self, k) not in choices:
                raise suggest(str(getattr(self, k)), choices, k)
        if self.channels not in (None, 1, 3):
            bad(f"channels must be 1 or 3 (got {self.channels})")
        if self.val != "test":
            try:
                frac = float(self.val)
            except ValueError:
                bad(f"val must be 'test' or a fraction like 0.1 (got {self.val!r})")
            if not 0 < frac < 1:
                bad(f"val fraction must be between 0 and 1 (got {self.val})")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "optimizer": ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"),
    "schedule": ("none", "step", "cosine", "onecycle", "poly"),
    "normalize": ("dataset", "half", "none"),
    "amp": ("auto", "off", "bf16", "fp16"),
    "logger": ("csv", "tensorboard"),
}

# Named recipes: values that sit between the typed defaults and the user's file/options.
RECIPES: dict[str, dict[str, Any]] = {
    # cnnkit's fast small-image recipe (the defaults above).
    "default": {},
    # The guide's §9 project, exactly: CIFAR-10, Resize 32, ToTensor + Normalize(0.5, 0.5), batch 64,
    # its CNN, CrossEntropy, Adam lr 1e-3, 10 epochs; no augmentation, decay, schedule or tricks.
    # How the arithmetic runs (bf16 autocast where the CPU/GPU has it, channels_last) is the
    # engine's choice, not the recipe's: add `--amp off` for the guide's fp32 to the bit.
    "seed": dict(data="cifar10", image_size=32, normalize="half", batch_size=64, model="seed_cnn",
                 optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="none", epochs=10, augment="none",
                 label_smoothing=0.0, ema=0.0, tta=False),
}

FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))


def check_keys(d: dict, where: str) -> None:
    for k in d:
        if k not in FIELD_NAMES:
            err = suggest(k, FIELD_NAMES, "config key")
            raise CnnkitError(f"{where}: {err}")


def _coerce(key: str, value: Any) -> Any:
    """Convert a value from YAML or `--set key=value` to the field's type."""
    ftype = {f.name: f.type for f in fields(TrainConfig)}[key]
    if value is None:
        return None
    try:
        if "dict" in ftype:
            if isinstance(value, str):
                value = yaml.safe_load(value) or {}
            if not isinstance(value, dict):
                raise ValueError
            return value
        if "bool" in ftype:
            if isinstance(value, str):
                low = value.lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return low in ("true", "1", "yes")
            return bool(value)
        if ftype.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if ftype.startswith("float"):
            return float(value)
        return str(value)
    except (ValueError, TypeError):
        raise CnnkitError(f"config key {key!r} expects {ftype}, got {value!r}") from None


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise CnnkitError(f"config file not found: {p}")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise CnnkitError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(d, dict):
        raise CnnkitError(f"config file {p} must hold a mapping of keys to values")
    check_keys(d, str(p))
    return d


def parse_sets(items: list[str] | None) -> dict:
    """`["lr=0.1", "model_args={drop_rate: 0.2}"]` -> dict (values parsed as YAML scalars)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise CnnkitError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v) if v.strip() else None
    check_keys(out, "--set")
    return out


def resolve(overrides: dict | None = None, config_file: str | None = None) -> TrainConfig:
    """defaults -> recipe -> YAML file -> overrides (command-line options and --set)."""
    overrides = dict(overrides or {})
    check_keys(overrides, "options")
    from_file = load_yaml(config_file) if config_file else {}
    recipe = overrides.get("recipe") or from_file.get("recipe")
    merged: dict[str, Any] = {}
    if recipe:
        if recipe not in RECIPES:
            raise suggest(recipe, RECIPES, "recipe")
        merged.update(RECIPES[recipe])
    merged.update(from_file)
    merged.update(overrides)
    merged = {**task_defaults(merged), **merged}
    cfg = TrainConfig(**{k: _coerce(k, v) for k, v in merged.items()})
    return cfg.validate()


def task_defaults(chosen: dict) -> dict:
    """What sits under the user's choices for the run's task and model: the task's `defaults`, then
    the model's own `default_cfg["recipe"]` (a detector's learning rate, say), and the resolved task
    name and monitor, so config.yaml states them."""
    from .tasks import model_cfg, task_class

    model = chosen.get("model") or TrainConfig.model
    args = chosen.get("model_args") or {}
    mcfg = model_cfg(model, **(args if isinstance(args, dict) else {}))
    name = chosen.get("task") or mcfg.get("task") or "classify"
    cls = task_class(name)
    out = dict(getattr(cls, "defaults", {}))
    out.update(mcfg.get("recipe") or {})
    out.update(task=name, monitor=chosen.get("monitor") or out.get("monitor") or cls.monitor)
    return out
