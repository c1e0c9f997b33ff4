"""Patches for training and whole cases for validation, from preprocessed volumes (`data/volumes.py`).

nnU-Net trains on random patches, not whole volumes: a volume is larger than what fits in memory
at full width, and its sizes vary. Each epoch is a fixed number of batches; each patch comes from
a random case, at a random place, except that the last third of every batch (`oversample`) is
centred on a random foreground voxel of a random foreground class, so that rare small structures
are seen at all. A volume smaller than the patch is padded: the image with 0 (the mean after
normalisation), the label with IGNORE (255), so padding counts for nothing in the loss.

Validation takes each case whole (`CaseSplit`, one per step): the task runs a sliding window over
it and scores the prediction on the case's original grid.

Both splits make their own loaders (`make_loader(...)`, which `data.loader.make_loader` calls),
with the interface of the loop's loaders: `set_epoch`, `generator`, `local`, `len` and iteration.
The draws of an epoch come from (seed, epoch, rank) only, so resume is exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .loader import epoch_generator

IGNORE = 255
FG_SAMPLES = 10_000  # foreground voxel positions kept per class and case for the oversampling


def foreground_positions(label: np.ndarray, num_classes: int, seed: int = 0) -> dict[int, np.ndarray]:
    """class -> (n, ndim) positions of up to FG_SAMPLES voxels of that class (classes 1..K-1 present)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in range(1, num_classes):
        pos = np.argwhere(label == k)
        if len(pos) > FG_SAMPLES:
            pos = pos[rng.choice(len(pos), FG_SAMPLES, replace=False)]
        if len(pos):
            out[k] = pos
    return out


def crop(image: np.ndarray, label: np.ndarray, lower: np.ndarray, patch: tuple[int, ...]):
    """image (C, *S) and label (*S) cut at `lower` (may lie outside: padded) to `patch`."""
    c = image.shape[0]
    out_img = np.zeros((c, *patch), dtype=np.float32)
    out_lab = np.full(patch, IGNORE, dtype=np.uint8)
    src, dst = [], []
    for lo, p, n in zip(lower, patch, label.shape):
        a, b = max(lo, 0), min(lo + p, n)
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out_img[(slice(None), *dst)] = image[(slice(None), *src)]
    out_lab[tuple(dst)] = label[tuple(src)]
    return out_img, out_lab


@dataclass
class PreparedCase:
    """A case ready for training: the preprocessed image (C, Z, Y, X) float32 and label (Z, Y, X) uint8,
    and, for validation, what scoring on the original grid needs (`before`, `after`: the Case objects
    of `data.volumes.preprocess`, whose `restore` maps a prediction back)."""

    name: str
    image: np.ndarray
    label: np.ndarray
    fg: dict
    before: object = None
    after: object = None


class PatchSplit:
    """The training split: `per_epoch` random patches of `patch` (per-axis voxels) per epoch."""

    images = targets = dataset = None

    def __init__(self, cases: list[PreparedCase], patch: tuple[int, ...], per_epoch: int, oversample: float = 1 / 3):
        self.cases, self.patch = cases, tuple(int(p) for p in patch)
        self.per_epoch, self.oversample = per_epoch, oversample

    def __len__(self) -> int:
        return self.per_epoch

    def make_loader(self, batch_size, shuffle, drop_last, device, seed, workers=0, rank=0, world_size=1):
        return PatchLoader(self, batch_size, device, seed, rank, world_size)


class PatchLoader:
    """Batches (image float32 (B, C, *patch), label uint8 (B, *patch)) on the device; each rank draws
    its own B / world_size patches (the global batch is `batch_size`)."""

    def __init__(self, split: PatchSplit, batch_size: int, device, seed: int, rank: int = 0, world_size: int = 1):
        self.split, self.device, self.seed = split, torch.device(device), seed
        self.rank, self.world_size = rank, world_size
        self.batch_size, self.epoch = batch_size, 0
        self.local_batch = max(1, batch_size // world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self, seed: int) -> torch.Generator:
        return epoch_generator(seed + 7919 * self.rank, self.epoch, self.device)

    def local(self, x, y):
        return x, y  # each rank drew its own rows

    def __len__(self) -> int:
        return max(1, self.split.per_epoch // self.batch_size)

    def _one(self, rng: np.random.Generator, force_fg: bool):
        s = self.split
        case = s.cases[int(rng.integers(len(s.cases)))]
        shape = np.array(case.label.shape[-len(s.patch):])
        lead = case.label.shape[:-len(s.patch)]  # a 2-D patch from a volume: pick a slice first
        patch = np.array(s.patch)
        lo_bound = np.minimum(0, shape - patch)  # a patch larger than the volume holds all of it, padded
        hi_bound = np.maximum(0, shape - patch)
        if force_fg and case.fg:
            k = list(case.fg)[int(rng.integers(len(case.fg)))]
            pos = case.fg[k][int(rng.integers(len(case.fg[k])))]
            centre, where = pos[len(lead):], tuple(int(v) for v in pos[:len(lead)])
            jitter = rng.integers(-(patch // 4), patch // 4 + 1)  # the voxel not always dead centre
            lower = np.clip(centre - patch // 2 + jitter, lo_bound, hi_bound)
        else:
            where = tuple(int(rng.integers(n)) for n in lead)
            lower = np.array([int(rng.integers(a, b + 1)) for a, b in zip(lo_bound, hi_bound)])
        img = case.image[(slice(None), *where)] if lead else case.image
        lab = case.label[where] if lead else case.label
        return crop(img, lab, lower, s.patch)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        b = self.local_batch
        n_fg = int(round(b * self.split.oversample))
        for _ in range(len(self)):
            items = [self._one(rng, force_fg=j >= b - n_fg) for j in range(b)]
            x = torch.from_numpy(np.stack([i[0] for i in items]))
            y = torch.from_numpy(np.stack([i[1] for i in items]))
            yield x.to(self.device), y.to(self.device)


class CaseSplit:
    """The validation split: every case whole, one per step."""

    images = targets = dataset = None

    def __init__(self, cases: list[PreparedCase]):
        self.cases = cases

    def __len__(self) -> int:
        return len(self.cases)

    def make_loader(self, batch_size, shuffle, drop_last, device, seed, workers=0, rank=0, world_size=1):
        return CaseLoader(self, device, rank, world_size)


class CaseLoader:
    """(image float32 (1, C, Z, Y, X) on the device, the PreparedCase) per case; under DDP each rank takes
    a contiguous block of the cases."""

    def __init__(self, split: CaseSplit, device, rank: int = 0, world_size: int = 1):
        self.split, self.device = split, torch.device(device)
        n = len(split.cases)
        self.indices = np.array_split(np.arange(n), world_size)[rank].tolist() if world_size > 1 else list(range(n))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        for i in self.indices:
            case = self.split.cases[i]
            yield torch.from_numpy(case.image)[None].to(self.device), case


__all__ = ["PatchSplit", "CaseSplit", "PreparedCase", "crop", "foreground_positions", "IGNORE"]
