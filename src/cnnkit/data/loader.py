"""Batches of uint8 images, ready to move to the training device.

In-memory data sets are indexed directly (no per-sample Python, no workers): a permutation
per epoch, drawn from a generator seeded by (seed, epoch), so an epoch's order does not depend
on anything that happened before it — which is what makes resume exact. Image folders too big
for memory stream through a DataLoader with workers and pinned memory.

Under DDP (torchrun) `batch_size` stays the global batch and `rank`/`world_size` say which share
of each pass this process takes (`shard`); run with one process, the loaders are unchanged.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from ..registry import CnnkitError


def epoch_generator(seed: int, epoch: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + epoch)
    return g


def shard(order: torch.Tensor, batch_size: int, shuffle: bool, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of `order`, the sample order of one pass over a split.

    Training (shuffle): each global batch of `batch_size` is cut into `world_size` contiguous
    parts and rank r keeps part r, so step i of all ranks together is step i of one process.
    Evaluation: the split is cut into `world_size` contiguous blocks (sizes differ by at most
    one), so that the ranks' outputs gathered in rank order are in the split's order.
    """
    if world_size == 1:
        return order
    if shuffle:
        return torch.cat([b.tensor_split(world_size)[rank] for b in order.split(batch_size)])
    return order.tensor_split(world_size)[rank]


class TensorLoader:
    """Yield (images uint8 (B,C,H,W), targets) slices of in-memory tensors.

    `batch_size` is the global batch. Under DDP (world_size > 1) an evaluation pass yields this
    rank's block (see `shard`) in batches of batch_size // world_size. Training yields every
    rank the *whole* global batch: every rank holds the data anyway, so the loop can augment the
    whole batch with the epoch's generator and keep its rows with `local` -- augmentation draws,
    CutMix/MixUp partners included, are then exactly those of one process.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, batch_size: int, shuffle: bool = False,
                 drop_last: bool = False, device: torch.device | str = "cpu", seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.device = torch.device(device)
        # Small data sets live on the device for the whole run: one copy instead of one per batch.
        self.images = images.to(self.device)
        self.targets = targets.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.epoch = seed, 0
        self.rank, self.world_size = rank, world_size
        self.whole = shuffle and world_size > 1  # training under DDP: whole global batches, cut by `local`

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self, seed: int) -> torch.Generator:
        """The epoch's augmentation generator: the same on every rank, which sees the whole batch."""
        return epoch_generator(seed, self.epoch, self.device)

    def local(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of a whole global batch (training under DDP); the batch itself otherwise."""
        if not self.whole:
            return x, y
        part = len(x) // self.world_size
        rows = slice(self.rank * part, (self.rank + 1) * part)
        return x[rows], y[rows]

    def _indices(self) -> torch.Tensor:
        n = len(self.targets)
        if self.shuffle:
            idx = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch)).to(self.device)
        else:
            idx = torch.arange(n, device=self.device)
        return idx if self.whole else shard(idx, self.batch_size, self.shuffle, self.rank, self.world_size)

    def _batch(self) -> int:
        return self.batch_size if self.whole else max(1, self.batch_size // self.world_size)

    def __len__(self) -> int:
        n = len(self.targets) if self.whole or self.world_size == 1 else len(self._indices())
        return n // self._batch() if self.drop_last else -(-n // self._batch())

    def __iter__(self):
        idx, b = self._indices(), self._batch()
        for i in range(len(self)):
            j = idx[i * b:(i + 1) * b]
            yield self.images[j], self.targets[j]


class StreamLoader:
    """A DataLoader over a Dataset of (uint8 CHW, label) items, with the TensorLoader interface.

    Under DDP each rank decodes only its share (see `shard`): decoding is the expensive part of
    a streamed data set. Each rank then augments its own rows with its own generator, so the
    draws are independent across ranks but not those of one process (CutMix/MixUp partners
    come from the rank's rows, as in other DDP trainers).
    """

    def __init__(self, dataset, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 device: torch.device | str = "cpu", seed: int = 0, workers: int = 2,
                 rank: int = 0, world_size: int = 1):
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.device, self.seed, self.epoch, self.workers = torch.device(device), seed, 0, workers
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self, seed: int) -> torch.Generator:
        """The epoch's augmentation generator, one per rank (rank 0's is a single process's)."""
        return epoch_generator(seed + 7919 * self.rank, self.epoch, self.device)

    def local(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y  # the batch holds this rank's rows only

    def _order(self) -> torch.Tensor:
        n = len(self.dataset)
        order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch)) if self.shuffle else torch.arange(n)
        return shard(order, self.batch_size, self.shuffle, self.rank, self.world_size)

    def __len__(self) -> int:
        if self.shuffle or self.world_size == 1:  # training: one step per global batch
            n, b = len(self.dataset), self.batch_size
        else:
            n, b = len(self._order()), max(1, self.batch_size // self.world_size)
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        b = self.batch_size if self.world_size == 1 else max(1, self.batch_size // self.world_size)
        loader = DataLoader(self.dataset, batch_size=b, sampler=self._order().tolist(), drop_last=self.drop_last,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        for x, y in loader:
            yield (x.to(self.device, non_blocking=True), torch.as_tensor(y).to(self.device, non_blocking=True))


def make_loader(split, batch_size: int, shuffle: bool, drop_last: bool, device, seed: int, workers: int = 2,
                rank: int = 0, world_size: int = 1):
    """A loader over `split`; `batch_size` is the global batch, `rank`/`world_size` place this process (DDP)."""
    if world_size > 1 and not shuffle and len(split) < world_size:
        raise CnnkitError(f"{len(split)} images cannot be evaluated by {world_size} processes: "
                          f"use a larger validation split or fewer processes")
    if hasattr(split, "make_loader"):  # a split that draws its own batches (volume patches, whole cases)
        return split.make_loader(batch_size, shuffle, drop_last, device, seed, workers, rank, world_size)
    if split.images is not None:
        return TensorLoader(split.images, split.targets, batch_size, shuffle, drop_last, device, seed, rank, world_size)
    return StreamLoader(split.dataset, batch_size, shuffle, drop_last, device, seed, workers, rank, world_size)


def norm_stats(mode: str, mean, std, in_chans: int) -> tuple[tuple, tuple]:
    """Per-channel (mean, std) for `mode`: the data set's own, the guide's 0.5/0.5, or none ([0, 1])."""
    if mode == "dataset":
        # a channel that never varies (std 0) is centred but not scaled: dividing by 0 gives NaN
        return tuple(float(m) for m in mean), tuple(float(s) if s > 1e-6 else 1.0 for s in std)
    if mode == "half":
        return (0.5,) * in_chans, (0.5,) * in_chans
    return (0.0,) * in_chans, (1.0,) * in_chans


class Preprocess:
    """uint8 (B,C,H,W) on the device -> float, scaled to [0,1]; `normalize` then standardises."""

    def __init__(self, mean, std, device, channels_last: bool = False):
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.identity = all(float(m) == 0.0 for m in mean) and all(float(v) == 1.0 for v in std)
        self.channels_last = channels_last

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():  # already scaled by its source (volumes normalised by their plan)
            return x
        return x.float().div_(255.0)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last only now: batch augmentation is cheaper on the plain layout
        if not self.identity:  # (volumes: already normalised, and 5-D)
            x = (x - self.mean) * self.inv_std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.to_unit(x))
