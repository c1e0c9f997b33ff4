"""Optimizers and learning-rate schedules.

Weight decay (L2) is applied to convolution and linear weights only: decaying norm scales
and biases only fights the normalisation and does not regularise. Schedules are plain
functions of the step, so resuming needs nothing but the step count.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..registry import suggest


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        # 1-D parameters are biases and norm scales/shifts; 0-D ones are learnable scalars.
        (decay if p.ndim > 1 else no_decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    # foreach kernels batch the per-parameter updates into a few launches (the default on CUDA);
    # they help on the CPU too, where a Python loop over parameters is otherwise the cost.
    kw = dict(foreach=True)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, **kw)
    if name == "momentum":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, **kw)
    if name == "nesterov":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, **kw)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, **kw)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **kw)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=momentum, **kw)
    raise suggest(name, ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"), "optimizer")


def lr_factor(schedule: str, step: int, total_steps: int, steps_per_epoch: int, warmup_steps: int = 0,
              step_size: int = 3, gamma: float = 0.1) -> float:
    """Multiplier of the peak learning rate at `step` (0-based) of `total_steps`."""
    if schedule == "onecycle":
        # linear up for the first 25 %, then linear down to 0: simple and fast to converge.
        peak = max(1, int(0.25 * total_steps))
        if step < peak:
            return (step + 1) / peak
        return max(0.0, (total_steps - step) / max(1, total_steps - peak))
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "none":
        return 1.0
    if schedule == "step":
        return gamma ** (step // (step_size * steps_per_epoch))
    if schedule == "cosine":
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    if schedule == "poly":  # nnU-Net's: (1 - t)^0.9
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 1 - min(1.0, t)) ** 0.9
    raise suggest(schedule, ("none", "step", "cosine", "onecycle", "poly"), "schedule")


class EMA:
    """Exponential moving average of a model's weights (and a copy of its buffers).

    ema = decay * ema + (1 - decay) * weights, after every optimizer step; evaluated in place
    of the raw weights, it smooths out the noise of the last steps.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model)
        self.module.eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = [p.detach() for p in model.state_dict().values()]
        dst = list(self.module.state_dict().values())
        floats = [(d, s) for d, s in zip(dst, src) if d.dtype.is_floating_point]
        if floats:
            torch._foreach_lerp_([d for d, _ in floats], [s for _, s in floats], 1.0 - self.decay)
        for d, s in zip(dst, src):  # integer buffers (BN's num_batches_tracked) are copied
            if not d.dtype.is_floating_point:
                d.copy_(s)

