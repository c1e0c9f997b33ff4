"""Tasks: the one seam for what differs between classification, detection, segmentation, ...

The contract every task follows is `tasks.base` (its docstring is the reference); the engine and
the tools call only it. A task is registered by name (`@register_task`); a model names its task in
`default_cfg["task"]` ("classify" when it says nothing), and `--task` overrides that.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..registry import TASKS
from .base import ExportSpec, MetricSpec, Task, column_formats, format_value

_loaded = False


def _load_all() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_") and info.name != "base":
                importlib.import_module(f"{__name__}.{info.name}")


def task_class(name: str) -> type:
    _load_all()
    return TASKS.get(name)


def list_tasks(pattern: str = "*") -> list[str]:
    _load_all()
    return TASKS.list(pattern)


def create_task(name: str, classes, model_cfg: dict | None = None, **options) -> Task:
    """The task `name` for data with `classes` and a model with `model_cfg` (its default_cfg)."""
    return task_class(name)(classes, model_cfg, **options)


def model_cfg(model: str, **model_args) -> dict:
    """A model's default_cfg without building its weights (on the meta device where it can be)."""
    import torch

    from ..models import create_model

    try:
        with torch.device("meta"):
            m = create_model(model, **model_args)
    except Exception:  # noqa: BLE001 - some builders read values on creation; build it for real then
        m = create_model(model, **model_args)
    return dict(getattr(m, "default_cfg", {}) or {})


def task_of(model: str, task: str | None = None, **model_args) -> str:
    """`task` if given, else the one the model's default_cfg names, else classification."""
    return task or model_cfg(model, **model_args).get("task") or "classify"


__all__ = ["ExportSpec", "MetricSpec", "Task", "column_formats", "create_task", "format_value", "list_tasks",
           "model_cfg", "task_class", "task_of"]
