"""The run directory: the unit of work that train makes and eval/predict/report/export/--resume take."""
from __future__ import annotations

import csv
import io
import os
import platform
from pathlib import Path

import yaml

from .. import __version__  # noqa: F401
from ..utils import atomic_write_text


def new_run_dir(project: str, name: str) -> Path:
    """`project/name`, or `project/name-2`, `-3`, ... when taken: runs are never overwritten."""
    root = Path(project)
    root.mkdir(parents=True, exist_ok=True)
    path, i = root / name, 2
    while path.exists():
        path, i = root / f"{name}-{i}", i + 1
    path.mkdir()
    return path


def environment() -> dict:
    import torch
    import torchvision

    return dict(cnnkit=__version__, torch=str(torch.__version__), torchvision=str(torchvision.__version__),
                python=platform.python_version(), platform=platform.platform(),
                cuda=torch.version.cuda if torch.cuda.is_available() else None, cpus=os.cpu_count())


def write_config(run: Path, cfg: dict, env: dict) -> None:
    """config.yaml (the resolved configuration, which --resume reads back) and environment.yaml (versions,
    platform) beside it."""
    atomic_write_text(run / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    atomic_write_text(run / "environment.yaml", yaml.safe_dump(env, sort_keys=False))


class MetricsLog:
    """metrics.csv, one row per epoch; on resume, rows after the resumed epoch are dropped."""

    def __init__(self, path: Path, keep_epochs: int | None = None):
        self.path = path
        self.rows: list[dict] = []
        if keep_epochs is not None and path.exists():
            with open(path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= keep_epochs]
            self._rewrite()

    def append(self, row: dict) -> None:
        self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._rewrite()

    def _rewrite(self) -> None:
        if not self.rows:
            return
        keys = list(self.rows[-1].keys())
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


def read_metrics(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: (float(v) if k != "epoch" else int(v)) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
