"""Evaluation over a whole split, shared by training (every epoch), `cnnkit eval` and the report."""
from __future__ import annotations

import torch

from .precision import autocast


@torch.no_grad()
def predict_logits(model, loader, prep, device, amp_dtype=None, tta: bool = False):
    """All logits and targets of `loader`, concatenated: ((N, K) float, (N,) long)."""
    was_training = model.training
    model.eval()
    logits, targets = [], []
    for x, y in loader:
        x = prep(x)
        with autocast(device, amp_dtype):
            out = model(x).float()
            if tta:  # test-time augmentation: average with the mirror image
                out = (out + model(x.flip(-1)).float()) / 2
        logits.append(out)
        targets.append(y)
    model.train(was_training)
    return torch.cat(logits), torch.cat(targets)


def evaluate(model, loader, task, prep, device, amp_dtype=None, tta: bool = False, gather=None) -> dict:
    """Task metrics over the whole split. Under DDP each rank predicts its block of the split and
    `gather` (Distributed.gather_rows) joins the blocks in rank order: every rank then computes the
    metrics of the whole split, the numbers a single process gets."""
    logits, targets = predict_logits(model, loader, prep, device, amp_dtype, tta)
    if gather is not None:
        logits, targets = gather(logits), gather(targets)
    out = task.metrics(logits, targets)
    out["logits"], out["targets"] = logits, targets
    return out
