"""One training step, shared by the loop (`engine.loop.fit`) and `cnnkit bench`.

    forward    the task's training step under autocast: loss and per-batch stats (sums over samples)
    backward   zero the gradients, backward through the (scaled) loss
    update     clip the gradient norm, optimizer step through the grad scaler, EMA, running sums

The running sums (loss x samples, each stat, samples) stay on the device; `averages` reads them
once, summed over the ranks under DDP. bench times the three phases apart, so they are methods.
"""
from __future__ import annotations

import torch

from .precision import autocast


class TrainStep:
    def __init__(self, model, fwd, task, optimizer, scaler, device, amp_dtype=None, grad_clip: float = 0.0,
                 ema=None):
        self.model, self.fwd, self.task = model, fwd, task  # fwd: the model as trained (DDP / compiled)
        self.optimizer, self.scaler, self.device, self.amp_dtype = optimizer, scaler, device, amp_dtype
        self.grad_clip, self.ema = grad_clip, ema
        self.reset()

    def reset(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device)
        self.stat_sums: dict[str, torch.Tensor] = {}
        self.seen = 0

    def forward(self, x, y):
        with autocast(self.device, self.amp_dtype):
            return self.task.train_step(self.fwd, x, y)

    def backward(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()

    def update(self, loss: torch.Tensor, stats: dict, n: int) -> None:
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        self.loss_sum += loss.detach().float() * n
        for k, v in stats.items():
            v = v.detach().float()
            self.stat_sums[k] = self.stat_sums[k] + v if k in self.stat_sums else v
        self.seen += n

    def __call__(self, x, y) -> torch.Tensor:
        loss, stats = self.forward(x, y)
        self.backward(loss)
        self.update(loss, stats, len(x))
        return loss

    def averages(self, dd=None) -> tuple[float, dict, int]:
        """(mean loss, {stat: mean}, samples) since `reset`, over all ranks: the one host sync."""
        keys = list(self.stat_sums)
        values = [self.loss_sum, *(self.stat_sums[k] for k in keys), self.seen]
        totals = dd.sum(*values) if dd is not None else [float(v) for v in values]
        seen = max(int(totals[-1]), 1)
        return totals[0] / seen, {k: v / seen for k, v in zip(keys, totals[1:-1])}, int(totals[-1])
