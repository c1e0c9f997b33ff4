"""Batches of uint8 images, ready to move to the training device.

In-memory data sets are indexed directly (no per-sample Python, no workers): a permutation
per epoch, drawn from a generator seeded by (seed, epoch), so an epoch's order does not depend
on anything that happened before it — which is what makes resume exact. Image folders too big
for memory stream through a DataLoader with workers and pinned memory.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader


def epoch_generator(seed: int, epoch: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + epoch)
    return g


class TensorLoader:
    """Yield (images uint8 (B,C,H,W), targets) slices of in-memory tensors."""

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

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.targets)
        if self.shuffle:
            idx = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch)).to(self.device)
        else:
            idx = torch.arange(n, device=self.device)
        if self.world_size > 1:  # each rank takes every world_size-th sample of the same permutation
            usable = n - n % self.world_size
            idx = idx[:usable][self.rank::self.world_size]
        return idx

    def __len__(self) -> int:
        n = len(self.targets) // self.world_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        idx = self._indices()
        for i in range(len(self)):
            j = idx[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.images[j], self.targets[j]


class StreamLoader:
    """A DataLoader over a Dataset of (uint8 CHW, label) items, with the TensorLoader interface."""

    def __init__(self, dataset, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 device: torch.device | str = "cpu", seed: int = 0, workers: int = 2,
                 rank: int = 0, world_size: int = 1):
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.device, self.seed, self.epoch, self.workers = torch.device(device), seed, 0, workers
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.dataset) // self.world_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch)) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            order = order[: n - n % self.world_size][self.rank::self.world_size]
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=order.tolist(), drop_last=self.drop_last,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        for x, y in loader:
            yield (x.to(self.device, non_blocking=True), torch.as_tensor(y).to(self.device, non_blocking=True))


def make_loader(split, batch_size: int, shuffle: bool, drop_last: bool, device, seed: int, workers: int = 2,
                rank: int = 0, world_size: int = 1):
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
        self.channels_last = channels_last

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last only now: batch augmentation is cheaper on the plain layout
        x = (x - self.mean) * self.inv_std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.to_unit(x))
