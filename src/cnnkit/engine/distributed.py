"""Data-parallel training under torchrun; the same code runs as a single process.

`torchrun --nproc_per_node N -m cnnkit train ...` starts N copies of the command with RANK,
LOCAL_RANK and WORLD_SIZE set. `session` joins them into one process group (NCCL on CUDA, gloo
on the CPU), gives each process its device (cuda:LOCAL_RANK) and leaves the group at the end,
also after an error. Without torchrun the "group" has one member and every helper below is a
no-op, so the training loop has a single path. What the loop does with it (engine/loop.py):

- `batch_size` is the global batch: each rank computes batch_size / world_size rows per step and
  DDP averages the gradients, so one step equals a single process's step on the whole batch.
- Rank 0 alone creates the run folder (its name is broadcast), logs, and writes config,
  metrics.csv, checkpoints (from the unwrapped model: no "module." prefixes) and plots.
- Train loss/accuracy are sums over ranks; validation runs on a block of the split per rank and
  the logits are gathered in rank order, so every rank computes the same metrics as one process
  would, and takes the same early-stop and NaN decisions.
- `sync_bn: true` computes BatchNorm statistics over the global batch. PyTorch's SyncBatchNorm
  refuses the CPU (and DDP refuses CPU modules holding one); there `CpuSyncBatchNorm` below does
  the same with two differentiable all-reduces per layer, so the CPU is a faithful test bed.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..registry import CnnkitError
from .precision import resolve_device


def is_main() -> bool:
    """True in the process that logs and writes (rank 0), and in a plain single process.

    Also right after the group is gone (the CLI prints its summary after training): torchrun's
    RANK is still in the environment.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class Distributed:
    """This process's place in the group, and the few collective operations the loop needs."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # this object created the process group, so it also destroys it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def check_batch(self, batch_size: int) -> int:
        """The per-rank batch; the global `batch_size` must split evenly over the processes."""
        if batch_size % self.world_size:
            lo = batch_size - batch_size % self.world_size
            raise CnnkitError(f"batch_size {batch_size} is the global batch and must split evenly over "
                              f"{self.world_size} processes: use {lo or self.world_size} or {lo + self.world_size}")
        return batch_size // self.world_size

    @contextlib.contextmanager
    def main_first(self, enabled: bool = True):
        """Run the block on rank 0 before the other ranks (e.g. a download, then everyone reads the files)."""
        if self.enabled and enabled and not self.is_main:
            dist.barrier()
        yield
        if self.enabled and enabled and self.is_main:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's `obj` (any picklable value, e.g. the run folder's path) on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, *values) -> list[float]:
        """Each value (device tensor or number) summed over the ranks and read to the host: one sync."""
        if not self.enabled:
            return [v.item() if isinstance(v, torch.Tensor) else v for v in values]
        # float64: counts stay exact far beyond any epoch's number of images
        t = torch.stack([torch.as_tensor(v, device=self.device).double() for v in values])
        dist.all_reduce(t)
        return t.tolist()

    def reduce_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """`t` summed over the ranks (a copy; `t` itself is left as it was)."""
        if not self.enabled:
            return t
        t = t.clone()
        dist.all_reduce(t)
        return t

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's `t` (N_r, ...) concatenated along dim 0 in rank order; the N_r may differ."""
        if not self.enabled:
            return t
        n = torch.tensor([len(t)], device=t.device)
        counts = [torch.zeros_like(n) for _ in range(self.world_size)]
        dist.all_gather(counts, n)
        counts = [int(c) for c in counts]
        # all_gather wants equal shapes: pad to the longest block, cut the padding off again
        padded = torch.cat([t, t.new_zeros((max(counts) - len(t),) + tuple(t.shape[1:]))]).contiguous()
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:c] for p, c in zip(parts, counts)])

    def sync_buffers(self, module: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

        Without sync_bn each rank's statistics come from its own rows; evaluating with rank 0's
        makes every rank score the model that rank 0 saves.
        """
        if self.enabled:
            for b in module.buffers():
                dist.broadcast(b, src=0)

    def sync_batchnorm(self, model: nn.Module) -> nn.Module:
        """BatchNorm layers -> SyncBatchNorm (CpuSyncBatchNorm on the CPU); a no-op in one process.

        The checkpoint keys do not change, so a run trained with it loads into the plain model.
        """
        if not self.enabled:
            return model
        if self.device.type != "cpu":
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        for m in model.modules():
            if type(m) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
                m.__class__ = CpuSyncBatchNorm  # same state, only forward differs
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel around `model` (gradients averaged in backward); `model` itself in one process.

        Keep the unwrapped model for state_dict, EMA and evaluation: the wrapper is only for the training forward.
        """
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


_groups = 0  # process groups this process has created (every rank counts the same)


def setup(device: str = "auto") -> Distributed:
    """Join torchrun's process group (or a group the caller already made); a group of one otherwise."""
    if dist.is_available() and dist.is_initialized():  # e.g. a script that called init_process_group itself
        rank, world, owns = dist.get_rank(), dist.get_world_size(), False
    else:
        rank, world, owns = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), True
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if world <= 1:
        return Distributed(device=dev)
    if not dist.is_available():
        raise CnnkitError("this PyTorch build has no torch.distributed; run a single process (without torchrun)")
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise CnnkitError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs are visible; "
                              f"use --nproc_per_node {torch.cuda.device_count()} or fewer")
        dev = torch.device("cuda", local)  # one GPU per process; CUDA_VISIBLE_DEVICES chooses which
        torch.cuda.set_device(dev)
        backend = "nccl"
    elif dev.type == "cpu":
        backend = "gloo"
    else:
        raise CnnkitError(f"distributed training runs on CUDA (NCCL) or the CPU (gloo), not {dev.type}; "
                          f"use --device cuda or --device cpu")
    if owns:
        global _groups
        from torch.distributed.rendezvous import rendezvous

        store, _, _ = next(rendezvous("env://"))  # torchrun's MASTER_ADDR/PORT, RANK, WORLD_SIZE
        # Own keys per group: a second run in the same processes (a script calling train twice)
        # must not read the first group's addresses, which init_process_group's fixed prefix would.
        dist.init_process_group(backend, store=dist.PrefixStore(f"cnnkit/{_groups}", store), rank=rank,
                                world_size=world)
        _groups += 1
    return Distributed(rank, local, world, dev, owns)


@contextlib.contextmanager
def session(device: str = "auto"):
    """`with session(cfg.device) as dd:` ... the group is destroyed on the way out, error or not."""
    dd = setup(device)
    try:
        yield dd
    finally:
        dd.close()


# ----------------------------------------------------------------------------- SyncBatchNorm on the CPU

class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable. Every rank uses the sum, so the gradient of the total loss
    with respect to one rank's addend is the sum of all ranks' gradients of the sum."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(_BatchNorm):
    """BatchNorm synchronised over the ranks on the CPU (gloo), where PyTorch's SyncBatchNorm
    refuses to run (and DDP refuses CPU modules that hold one).

    Training-mode statistics are those of the global batch, in two passes: all-reduce of the
    per-channel sums and the count -> mean; all-reduce of the centred sums of squares -> biased
    variance (two passes rather than E[x^2] - E[x]^2, which cancels badly). Autograd runs through
    both all-reduces, so gradients equal those of BatchNorm on the whole batch. Running statistics
    get the unbiased variance, as BatchNorm's do. Evaluation and a single process are plain BatchNorm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and x.device.type == "cpu" and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        shape = (1, -1) + (1,) * (x.dim() - 2)                     # broadcast per channel over (B, C, ...)
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.tensor([xf.numel() / xf.shape[1]], dtype=torch.float32)
        s = _AllReduceSum.apply(torch.cat([xf.sum(dims), count]))  # (C + 1,): sums, then the global count
        n = s[-1].detach()
        mean = s[:-1] / n
        xc = xf - mean.view(shape)
        var = _AllReduceSum.apply((xc * xc).sum(dims)) / n         # (C,) biased, as used to normalise
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                self.running_var.mul_(1 - f).add_(var.detach() * (n / (n - 1)), alpha=f)
        return y.to(x.dtype)
