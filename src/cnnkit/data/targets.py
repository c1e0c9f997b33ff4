"""Per-object targets of a batch of images: boxes, labels and, where known, masks and keypoints.

Images carry a variable number of objects, so the objects of N images are stored flat, in
compressed-row form: the objects of image i are rows `starts[i]:starts[i + 1]` of `boxes`,
`labels`, `masks` and `keypoints`. An `ObjectTargets` behaves like a tensor of N targets for the
loaders: `len()`, `.to(device)` and indexing by an index tensor or a slice (which selects images,
in that order) are all it needs, so the in-memory `TensorLoader` batches detection data with no
per-image Python and no collate function.

    boxes      (M, 4) float32   x0, y0, x1, y1 in pixels of the (resized) image, x1 > x0, y1 > y0
    labels     (M,)   int64     class index 0..K-1 (no background class: detectors that need one
                                add it themselves)
    starts     (N + 1,) int64   starts[0] = 0, starts[N] = M
    masks      (M, H, W) bool   the object's visible pixels, or None
    keypoints  (M, P, 3) float32  x, y, visibility (2 seen, 1 hidden, 0 none), or None

`per_image()` turns a batch into the list of dicts that torchvision's detection models take
(`boxes`, `labels`, `masks`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class ObjectTargets:
    boxes: torch.Tensor
    labels: torch.Tensor
    starts: torch.Tensor
    masks: torch.Tensor | None = None
    keypoints: torch.Tensor | None = None

    def __post_init__(self):
        if self.starts.ndim != 1 or len(self.starts) < 1:
            raise ValueError("starts must be a 1-D tensor of N + 1 offsets")
        m = int(self.starts[-1])
        for name in ("boxes", "labels", "masks", "keypoints"):
            t = getattr(self, name)
            if t is not None and len(t) != m:
                raise ValueError(f"{name} has {len(t)} rows but starts says {m} objects")

    # -- construction
    @classmethod
    def empty(cls, n: int, masks_hw: tuple[int, int] | None = None) -> "ObjectTargets":
        masks = torch.zeros((0, *masks_hw), dtype=torch.bool) if masks_hw else None
        return cls(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(n + 1, dtype=torch.long), masks)

    @classmethod
    def from_list(cls, items: list[dict]) -> "ObjectTargets":
        """From one dict per image with `boxes` (K, 4), `labels` (K,) and optional `masks` / `keypoints`."""
        counts = torch.tensor([len(d["labels"]) for d in items], dtype=torch.long)
        starts = torch.zeros(len(items) + 1, dtype=torch.long)
        starts[1:] = counts.cumsum(0)

        def cat(key, dtype):
            parts = [torch.as_tensor(d[key], dtype=dtype) for d in items if d.get(key) is not None]
            if not parts:
                return None
            if len(parts) != len(items):
                raise ValueError(f"some images have {key} and others do not")
            return torch.cat(parts)

        boxes = cat("boxes", torch.float32)
        return cls(boxes.reshape(-1, 4) if boxes is not None else torch.zeros(0, 4),
                   cat("labels", torch.long) if items else torch.zeros(0, dtype=torch.long),
                   starts, cat("masks", torch.bool), cat("keypoints", torch.float32))

    @classmethod
    def cat(cls, parts: list["ObjectTargets"]) -> "ObjectTargets":
        """The images of `parts`, one after another."""
        offsets = torch.tensor([0] + [int(p.starts[-1]) for p in parts]).cumsum(0)
        starts = torch.cat([parts[0].starts[:1]] + [p.starts[1:] + o for p, o in zip(parts, offsets[:-1])])

        def join(key):
            ts = [getattr(p, key) for p in parts]
            return None if any(t is None for t in ts) else torch.cat(ts)

        return cls(join("boxes"), join("labels"), starts, join("masks"), join("keypoints"))

    # -- what the loaders need
    def __len__(self) -> int:
        return len(self.starts) - 1

    @property
    def device(self) -> torch.device:
        return self.boxes.device

    def to(self, device, non_blocking: bool = False) -> "ObjectTargets":
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return ObjectTargets(move(self.boxes), move(self.labels), move(self.starts), move(self.masks),
                             move(self.keypoints))

    def counts(self) -> torch.Tensor:
        """(N,) objects per image."""
        return self.starts[1:] - self.starts[:-1]

    def image_index(self) -> torch.Tensor:
        """(M,) the image each object belongs to."""
        return torch.repeat_interleave(torch.arange(len(self), device=self.starts.device), self.counts())

    def __getitem__(self, idx) -> "ObjectTargets":
        """The targets of images `idx` (an int, a slice, or a 1-D index tensor), in that order."""
        if isinstance(idx, int):
            idx = torch.tensor([idx])
        elif isinstance(idx, slice):
            idx = torch.arange(len(self))[idx]
        idx = torch.as_tensor(idx, device=self.starts.device).long()
        first, counts = self.starts[idx], self.counts()[idx]
        starts = torch.zeros(len(idx) + 1, dtype=torch.long, device=self.starts.device)
        starts[1:] = counts.cumsum(0)
        # row r of the result is object (r - starts[j]) of image idx[j]
        rows = torch.arange(int(starts[-1]), device=self.starts.device)
        owner = torch.repeat_interleave(torch.arange(len(idx), device=rows.device), counts)
        src = first[owner] + rows - starts[:-1][owner]
        pick = lambda t: None if t is None else t[src]  # noqa: E731
        return ObjectTargets(self.boxes[src], self.labels[src], starts, pick(self.masks), pick(self.keypoints))

    def with_(self, **changes) -> "ObjectTargets":
        """A copy with some fields replaced (augmentation moves boxes, masks and keypoints)."""
        return replace(self, **changes)

    def keep(self, rows: torch.Tensor) -> "ObjectTargets":
        """Only the objects where the (M,) bool `rows` is True (e.g. boxes left inside after a crop)."""
        owner = self.image_index()[rows]
        starts = torch.zeros_like(self.starts)
        starts[1:] = torch.bincount(owner, minlength=len(self)).cumsum(0)
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return ObjectTargets(self.boxes[rows], self.labels[rows], starts, pick(self.masks), pick(self.keypoints))

    def per_image(self) -> list[dict]:
        """One dict per image: boxes (K, 4), labels (K,), and masks (K, H, W) uint8 / keypoints where known."""
        out = []
        s = self.starts.tolist()
        for i in range(len(self)):
            a, b = s[i], s[i + 1]
            d = dict(boxes=self.boxes[a:b], labels=self.labels[a:b])
            if self.masks is not None:
                d["masks"] = self.masks[a:b].to(torch.uint8)
            if self.keypoints is not None:
                d["keypoints"] = self.keypoints[a:b]
            out.append(d)
        return out
