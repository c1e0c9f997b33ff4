"""`Plan`: every decision of nnU-Net's rules for one data set, with its reason, as a YAML file.

The file is for people as much as for `cnnkit train --plan`: each value has its reason as a comment
above it, and the reasons are kept again in the `why:` block at the end, so that `Plan.load` gives
back exactly what `Plan.save` wrote (comments are lost by any YAML reader; `why:` is not). Spatial
lists are per axis, (z, y, x) for a 3-D plan and (y, x) for a 2-D one.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import yaml

from ..registry import CnnkitError, suggest
from ..utils import atomic_write_text

PLAN_VERSION = 1
SCHEMES = ("ct", "zscore", "none")


def plain(v):
    """numpy scalars and tuples -> Python numbers and lists, recursively (YAML and == both want these)."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [plain(x) for x in v]
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


@dataclass
class Plan:
    """What nnU-Net decides for a data set. `why` maps each decision to its reason (one sentence with the
    numbers); `fingerprint` is a summary of the measurements the rules read."""

    dataset: str  # what load_volumes takes: a source name or a folder
    data_dir: str | None
    num_cases: int | None  # the cases planned on (None: all)
    seed: int  # the generated data's seed
    dims: int  # 2 or 3: the U-Net's
    classes: list[str]
    channels: list[str]
    target_spacing: list[float]  # mm per axis
    median_shape: list[int]  # voxels per axis, after resampling to target_spacing
    patch_size: list[int]  # voxels per axis, each a multiple of the product of its strides
    batch_size: int
    strides: list[list[int]]  # per stage, per axis; strides[0] is all 1
    kernel_sizes: list[list[int]]  # per stage, per axis (3, or 1 along a too-coarse axis)
    base_features: int
    max_features: int
    crop_to_nonzero: bool
    resampling: dict  # image_order, label_order, order_across, anisotropy_threshold
    normalization: list[dict]  # one per channel: {channel, scheme: ct (clip, mean, std) | zscore (use_nonzero_mask)}
    augmentation: dict
    foreground_oversample: float  # share of patches centred on a foreground voxel
    deep_supervision: bool
    loss: str
    budget_mb: float
    memory_mb: float  # estimated activation memory of one training step at patch_size and batch_size
    why: dict = field(default_factory=dict)
    fingerprint: dict = field(default_factory=dict)
    version: int = PLAN_VERSION

    def __post_init__(self):
        for f in fields(self):
            setattr(self, f.name, plain(getattr(self, f.name)))

    # ---------------------------------------------------------------- derived values

    @property
    def axes(self) -> tuple[str, ...]:
        return ("z", "y", "x") if self.dims == 3 else ("y", "x")

    @property
    def num_pool(self) -> list[int]:
        """Poolings (stride-2 steps) per axis."""
        return [sum(1 for s in self.strides if s[a] == 2) for a in range(self.dims)]

    @property
    def divisible_by(self) -> list[int]:
        """What each axis of an input must be a multiple of: the product of its strides."""
        return [math.prod(s[a] for s in self.strides) for a in range(self.dims)]

    @property
    def features(self) -> list[int]:
        """The U-Net's width per stage."""
        return [min(self.base_features * 2 ** i, self.max_features) for i in range(len(self.strides))]

    def validate(self, where: str = "plan") -> Plan:
        """One line for the first value the U-Net or the preprocessing could not use."""
        def bad(msg: str):
            raise CnnkitError(f"{where}: {msg}")

        if self.dims not in (2, 3):
            bad(f"dims must be 2 or 3, got {self.dims!r}")
        d = self.dims
        for key in ("target_spacing", "median_shape", "patch_size"):
            v = getattr(self, key)
            if not isinstance(v, list) or len(v) != d or not all(isinstance(x, (int, float)) and x > 0 for x in v):
                bad(f"{key} must be {d} positive numbers ({', '.join(self.axes)}), got {v!r}")
        if not self.strides or len(self.kernel_sizes) != len(self.strides):
            bad(f"strides and kernel_sizes need one entry per stage, got {len(self.strides)} and "
                f"{len(self.kernel_sizes)}")
        for key in ("strides", "kernel_sizes"):
            for s in getattr(self, key):
                if not isinstance(s, list) or len(s) != d or not all(isinstance(x, int) and x >= 1 for x in s):
                    bad(f"every entry of {key} must be {d} whole numbers >= 1, got {s!r}")
        if any(x != 1 for x in self.strides[0]):
            bad(f"the first stage keeps the full size: strides[0] must be all 1, got {self.strides[0]}")
        for a, (p, m) in enumerate(zip(self.patch_size, self.divisible_by)):
            if p % m:
                bad(f"patch_size {self.axes[a]} = {p} is not a multiple of {m} (the product of its strides)")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            bad(f"batch_size must be a whole number >= 1, got {self.batch_size!r}")
        if len(self.classes) < 2:
            bad(f"classes must name the background and at least one class, got {self.classes!r}")
        if len(self.normalization) != len(self.channels):
            bad(f"normalization needs one entry per channel ({len(self.channels)}), got {len(self.normalization)}")
        for n in self.normalization:
            if not isinstance(n, dict) or n.get("scheme") not in SCHEMES:
                bad(f"each normalization entry needs a scheme of {', '.join(SCHEMES)}, got {n!r}")
            if n["scheme"] == "ct" and not all(k in n for k in ("clip", "mean", "std")):
                bad(f"a ct normalization needs clip, mean and std, got {n!r}")
        if not 0.0 <= float(self.foreground_oversample) <= 1.0:
            bad(f"foreground_oversample must be in [0, 1], got {self.foreground_oversample!r}")
        return self

    # ---------------------------------------------------------------- YAML

    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self) -> str:
        """The plan as commented YAML (see the module docstring)."""
        d = self.to_dict()
        fp = self.fingerprint
        lines = [(f"# cnnkit plan {self.version}: nnU-Net's rules applied to {self.dataset} "
                 f"({fp.get('num_cases', '?')} cases, {self.dims}-D)."),
                 "# Each value has its reason above it (and again in `why:` at the end). Edit freely, then",
                 "#   cnnkit train --plan THIS_FILE",
                 f"# Spatial lists are per axis: {', '.join(self.axes)}.", ""]
        groups = [("version", "dataset", "data_dir", "num_cases", "seed"),
                  ("dims", "classes", "channels"),
                  ("crop_to_nonzero", "target_spacing", "resampling", "median_shape"),
                  ("patch_size", "batch_size", "memory_mb", "budget_mb"),
                  ("strides", "kernel_sizes", "base_features", "max_features"),
                  ("normalization",),
                  ("augmentation", "foreground_oversample"),
                  ("deep_supervision", "loss"),
                  ("fingerprint",), ("why",)]
        for group in groups:
            for key in group:
                lines += _comment(self.why.get(key), "")
                if key == "augmentation" and isinstance(d[key], dict):
                    lines.append("augmentation:")
                    for sub, val in d[key].items():
                        lines += _comment(self.why.get(f"augmentation.{sub}"), "  ")
                        lines += ["  " + ln for ln in _dump({sub: val}).splitlines()]
                else:
                    lines += _dump({key: d[key]}).splitlines()
            lines.append("")
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.parent != Path("") and not path.parent.is_dir():
            raise CnnkitError(f"{path}: the folder {path.parent} does not exist")
        return atomic_write_text(path, self.to_yaml())

    @classmethod
    def from_dict(cls, data, where: str = "plan") -> Plan:
        if not isinstance(data, dict):
            raise CnnkitError(f"{where}: expected a YAML mapping of plan keys (dataset, dims, patch_size, ...), got "
                              f"{type(data).__name__}")
        names = [f.name for f in fields(cls)]
        for key in data:
            if key not in names:
                raise CnnkitError(f"{where}: {suggest(str(key), names, 'plan key')}")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise CnnkitError(f"{where}: missing plan key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        if data.get("version", PLAN_VERSION) != PLAN_VERSION:
            raise CnnkitError(f"{where}: plan version {data['version']!r}; this cnnkit reads version {PLAN_VERSION}")
        return cls(**data).validate(where)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a plan file back; one line for a missing file, bad YAML, or missing / unknown keys."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CnnkitError(f"{path}: no such plan file (write one with `cnnkit plan DATA --out {path}`)") from None
        except (IsADirectoryError, UnicodeDecodeError) as e:
            raise CnnkitError(f"{path}: not a plan file ({type(e).__name__})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise CnnkitError(f"{path}: not valid YAML{at} ({problem})") from None
        return cls.from_dict(data, str(path))


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of plain values on one line ([28, 64, 64]), as people write them."""


def _list(dumper, data):
    flat = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _list)


def _dump(d: dict) -> str:
    return yaml.dump(d, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110, allow_unicode=True)


def _comment(text: str | None, indent: str) -> list[str]:
    if not text:
        return []
    return textwrap.wrap(text, width=118 - len(indent), initial_indent=indent + "# ",
                         subsequent_indent=indent + "#   ")
