"""The run directory: the unit of work that train makes and eval/predict/report/export/--resume take."""
from __future__ import annotations

import csv
import os
import platform
from pathlib import Path

import yaml

from .. import __version__  # noqa: F401


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

    return dict(cnnkit=__version__, torch=torch.__version__, torchvision=torchvision.__version__,
                python=platform.python_version(), platform=platform.platform(),
                cuda=torch.version.cuda if torch.cuda.is_available() else None, cpus=os.cpu_count())


def write_config(run: Path, cfg: dict, env: dict) -> None:
    tmp = run / ".config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False) + "\n# environment\n" +
                   "".join(f"# {k}: {v}\n" for k, v in env.items()))
    os.replace(tmp, run / "config.yaml")


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
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.path)


def read_metrics(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: (float(v) if k != "epoch" else int(v)) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
