"""Tasks: what differs between classification, detection, segmentation, ... (targets, loss, metrics, decoding)."""
from ..registry import TASKS
from .classify import ClassificationTask


def create_task(name: str, **kwargs):
    return TASKS.get(name)(**kwargs)


__all__ = ["ClassificationTask", "create_task"]
