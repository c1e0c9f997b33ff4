"""Evaluation over a whole split, shared by training (every epoch), `cnnkit eval` and the report.

The task's streaming evaluator sees one batch at a time (`update`) and reduces once (`compute`):
no split's outputs are ever concatenated here. Under DDP each rank evaluates its block of the
split and the evaluator sums or gathers across the ranks, so every rank gets the numbers of
the whole split, those of a single process.
"""
from __future__ import annotations

import torch

from .precision import autocast


@torch.no_grad()
def evaluate(model, loader, task, prep, device, amp_dtype=None, tta: bool = False, dd=None) -> dict:
    """The task's metrics over `loader` (uint8 batches; `prep` normalises them)."""
    was_training = model.training
    model.eval()
    ev = task.evaluator(device)
    try:
        for x, y in loader:
            x = prep(x)
            with autocast(device, amp_dtype):
                out = task.forward_eval(model, x, tta)
            ev.update(out, y)
    finally:
        model.train(was_training)
    return ev.compute(dd)
