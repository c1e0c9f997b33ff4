"""Named image-classification data sets and `load_data`, the one door through which training,
evaluation and the CLI get data.

Each data set is a registered `DatasetSpec` (description, native channels and size, a loader).
A loader only finds and reads the files (`sources.py`); `load_data` then does the same steps for
every data set, on uint8 tensors:

    read train (+ official test)  ->  subsample num_train  ->  seeded, stratified hold-out (val=0.1)
    ->  cap num_val  ->  channels (grey <-> RGB)  ->  resize once  ->  per-channel mean/std of train

Images stay uint8 `(N, C, H, W)`: 60,000 Fashion-MNIST images are 47 MB, and the engine normalizes
whole batches on the device. Splits too large for memory (an image folder of photos, or CIFAR
upsized to 224) come back as a streaming `torch.utils.data.Dataset` instead.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..registry import DATASETS, CnnkitError, register_dataset
from . import sources

__all__ = ["ImageSplit", "DataBundle", "DatasetSpec", "load_data", "list_datasets", "dataset_info",
           "convert_channels", "resize_images", "channel_stats", "holdout_split"]

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

SHAPES_TRAIN, SHAPES_VAL = 10_000, 2_000
# The shapes "test" split starts at this sample index, so no training set size reaches it.
SHAPES_TEST_OFFSET = 1_000_000
DEFAULT_MAX_IN_MEMORY = 2 << 30  # bytes; override with max_in_memory= or $CNNKIT_MAX_IN_MEMORY


@dataclass
class ImageSplit:
    """One split. In memory: `images` uint8 (N, C, H, W) and `targets` int64 (N,). Streamed:
    `dataset` yields (uint8 (C, H, W), int) and `images` is None (`targets` is still filled)."""

    images: torch.Tensor | None
    targets: torch.Tensor | None
    dataset: torch.utils.data.Dataset | None = None
    skipped: int = 0  # unreadable files left out (image folders)

    def __len__(self) -> int:
        if self.images is not None:
            return len(self.images)
        return len(self.dataset) if self.dataset is not None else 0


@dataclass
class DataBundle:
    """Everything training needs about a data set. `mean`/`std` are per channel on the [0, 1]
    scale, measured on this train split after channel conversion and resizing."""

    name: str
    train: ImageSplit
    val: ImageSplit
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int
    image_size: int
    val_name: str  # "test" (official test split) or "holdout" (a fraction of train)
    source: str = ""  # where the files were read from ("generated" for shapes)
    # what one input is, when not a (C, S, S) image: ("volume", (C, Z, Y, X)) for planned volumes
    input_kind: str = "image"
    input_shape: tuple | None = None
    unit: str = "images"  # what the splits count ("cases" for volumes)


_KIND_WORDS = {"label": "one class label per image", "labels": "a set of labels per image",
               "objects": "boxes and classes per object", "mask": "a class per pixel"}


@dataclass
class _Pool:
    """All images of one source split, before any selection: a uint8 tensor, or file paths."""

    labels: np.ndarray  # int64 (N,)
    images: torch.Tensor | None = None  # uint8 (N, C, H, W)
    files: list[str] | None = None


@dataclass
class _Raw:
    classes: list[str]
    train: _Pool
    test: _Pool | None  # None when the data set has no official test split
    chans: int  # native channels
    size: int  # native square side
    source: str


@dataclass
class _Request:
    data_dir: str | None
    download: bool
    need_test: bool
    in_chans: int | None
    image_size: int | None
    num_train: int | None
    num_val: int | None
    seed: int


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry: what `cnnkit datasets` prints and the loader `load_data` calls."""

    name: str
    description: str
    in_chans: int | None  # native channels (None: decided by the files)
    image_size: int | None  # native square side (None: decided by the files)
    num_classes: int | Callable[[], int] | None
    train_size: int | None
    test_size: int | None
    load: Callable[[_Request], _Raw] | None = field(repr=False)
    how_to_get: str = ""
    # targets other than one class per image: kind ("objects", ...) -> loader giving (train, val, classes, source)
    dense: dict = field(default_factory=dict, repr=False)

    @property
    def kinds(self) -> tuple[str, ...]:
        return (("label",) if self.load is not None else ()) + tuple(self.dense)

    def __call__(self, req: _Request) -> _Raw:
        return self.load(req)

    def info(self) -> dict:
        n = self.num_classes() if callable(self.num_classes) else self.num_classes
        return {"name": self.name, "description": self.description, "in_chans": self.in_chans,
                "image_size": self.image_size, "num_classes": n, "train": self.train_size,
                "test": self.test_size, "how_to_get": self.how_to_get, "targets": list(self.kinds)}


def _register(spec: DatasetSpec) -> None:
    register_dataset(spec, name=spec.name)


# ----------------------------------------------------------------------------------------------
# Loaders: find and read the files, nothing else


def _find(name: str, req: _Request, is_here: Callable[[Path], bool]) -> Path:
    """Locate `name`; download it first only when the user asked for it and it is not found."""
    try:
        return sources.locate(name, req.data_dir, is_here)
    except CnnkitError:
        if not req.download:
            raise
    sources.download(name, req.data_dir)
    return sources.locate(name, req.data_dir, is_here)


def _pool(images: np.ndarray, labels: np.ndarray) -> _Pool:
    return _Pool(labels=np.asarray(labels, dtype=np.int64), images=torch.from_numpy(np.ascontiguousarray(images)))


def _idx_loader(name: str, classes: tuple[str, ...]) -> Callable[[_Request], _Raw]:
    def load(req: _Request) -> _Raw:
        folder = _find(name, req, sources.has_idx)
        train = _pool(*sources.load_idx(folder, "train", len(classes)))
        test = _pool(*sources.load_idx(folder, "t10k", len(classes))) if req.need_test else None
        return _Raw(list(classes), train, test, 1, train.images.shape[-1], str(folder))

    return load


def _cifar_loader(name: str) -> Callable[[_Request], _Raw]:
    is_here, read, n = {"cifar10": (sources.has_cifar10, sources.load_cifar10, 10),
                        "cifar100": (sources.has_cifar100, sources.load_cifar100, 100)}[name]

    def load(req: _Request) -> _Raw:
        folder = _find(name, req, is_here)
        images, labels, names = read(folder, "train")
        classes = names or (list(CIFAR10_CLASSES) if n == 10 else [str(i) for i in range(n)])
        if len(classes) != n or (len(labels) and labels.max() >= n):
            raise CnnkitError(f"{folder}: expected {n} classes, found {len(classes)} names / label {labels.max()}")
        test = _pool(*read(folder, "test")[:2]) if req.need_test else None
        return _Raw(classes, _pool(images, labels), test, 3, 32, str(folder))

    return load


def _load_shapes(req: _Request) -> _Raw:
    from .shapes import SHAPE_CLASSES, make_classification  # the procedural world, generated here

    c, s = req.in_chans or 3, req.image_size or 32
    n_train = req.num_train or SHAPES_TRAIN
    if req.need_test and n_train > SHAPES_TEST_OFFSET:
        raise CnnkitError(f"shapes: num_train must be at most {SHAPES_TEST_OFFSET} with val='test'")
    train = _pool(*map(np.asarray, make_classification(n_train, seed=req.seed, size=s, channels=c)))
    test = None
    if req.need_test:
        imgs, labels = make_classification(req.num_val or SHAPES_VAL, seed=req.seed, size=s, channels=c,
                                           offset=SHAPES_TEST_OFFSET)
        test = _pool(np.asarray(imgs), np.asarray(labels))
    return _Raw(list(SHAPE_CLASSES), train, test, c, s, "generated")


def _load_imagefolder(req: _Request) -> _Raw:
    if req.data_dir is None:
        raise CnnkitError("imagefolder needs --data-dir (data_dir=) pointing at a folder of class folders "
                          "(<root>/<class>/<image>, or <root>/train/<class>/... and <root>/val/<class>/...)")
    if req.download:
        raise CnnkitError("imagefolder reads your own images and cannot be downloaded; drop --download")
    train_dir, val_dir = sources.image_folder_splits(req.data_dir)
    classes, files, labels = sources.scan_image_folder(train_dir)
    test = None
    if req.need_test:
        if val_dir is None:
            raise CnnkitError(f"{req.data_dir} has no val/ or test/ folder; hold out part of the training "
                              "images instead with --val 0.1 (val=0.1)")
        _, vfiles, vlabels = sources.scan_image_folder(val_dir, classes)
        if not vfiles:
            raise CnnkitError(f"{val_dir} has no images; add some or use --val 0.1 (val=0.1)")
        test = _Pool(labels=vlabels, files=vfiles)
    _, chans, size = sources.first_readable(files)
    return _Raw(classes, _Pool(labels=labels, files=files), test, chans, size, str(Path(req.data_dir).expanduser()))


def _shape_count() -> int:
    from .shapes import SHAPE_CLASSES

    return len(SHAPE_CLASSES)


_register(DatasetSpec("shapes", "procedural shapes on textured backgrounds, generated on the fly (no files)",
                      3, 32, _shape_count,
                      SHAPES_TRAIN, SHAPES_VAL, _load_shapes, "built in",
                      dense={"objects": "shapes", "mask": "shapes_mask", "labels": "shapes_labels"}))
_register(DatasetSpec("fashion-mnist", "Zalando clothing photos, 28x28 grey (Xiao et al. 2017)", 1, 28, 10,
                      60_000, 10_000, _idx_loader("fashion-mnist", FASHION_MNIST_CLASSES),
                      sources.HOW_TO_GET["fashion-mnist"]))
_register(DatasetSpec("mnist", "handwritten digits, 28x28 grey (LeCun et al. 1998)", 1, 28, 10,
                      60_000, 10_000, _idx_loader("mnist", MNIST_CLASSES), sources.HOW_TO_GET["mnist"]))
_register(DatasetSpec("cifar10", "tiny photos of 10 classes, 32x32 RGB (Krizhevsky 2009)", 3, 32, 10,
                      50_000, 10_000, _cifar_loader("cifar10"), sources.HOW_TO_GET["cifar10"]))
_register(DatasetSpec("cifar100", "tiny photos of 100 classes (fine labels), 32x32 RGB (Krizhevsky 2009)",
                      3, 32, 100, 50_000, 10_000, _cifar_loader("cifar100"), sources.HOW_TO_GET["cifar100"]))
_register(DatasetSpec("imagefolder", "your images: <data-dir>/<class>/*.jpg|png|... (or train/ and val/)",
                      None, None, None, None, None, _load_imagefolder, "--data-dir pointing at the root folder"))


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered data set names matching a shell-style pattern, sorted."""
    return DATASETS.list(pattern)


def dataset_info(name: str) -> dict:
    """Description, native channels/size, class and image counts of a registered data set."""
    return DATASETS.get(name).info()


# ----------------------------------------------------------------------------------------------
# Tensor operations on uint8 image batches

_CHUNK = 4096  # images per step when a whole-set operation needs a float copy


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (N, channels, H, W): grey -> RGB repeats the plane; RGB -> grey is
    ITU-R 601 luma in PIL's fixed point (0.299 R + 0.587 G + 0.114 B), equal to `Image.convert('L')`."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.repeat(1, 3, 1, 1)
    if c == 3 and channels == 1:
        w = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(1, 3, 1, 1)
        out = torch.empty((x.shape[0], 1, *x.shape[2:]), dtype=torch.uint8)
        for i in range(0, len(x), _CHUNK):
            y = (x[i:i + _CHUNK].to(torch.int32) * w).sum(1, keepdim=True)
            out[i:i + _CHUNK] = ((y + 0x8000) >> 16).to(torch.uint8)
        return out
    raise CnnkitError(f"cannot convert {c}-channel images to {channels} channels (1 or 3 are supported)")


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size), antialiased bilinear, in chunks."""
    if x.shape[-2:] == (size, size):
        return x
    from torchvision.transforms.v2 import functional as F

    out = torch.empty((*x.shape[:2], size, size), dtype=torch.uint8)
    for i in range(0, len(x), _CHUNK):
        out[i:i + _CHUNK] = F.resize(x[i:i + _CHUNK], [size, size], antialias=True)
    return out


def _channels_then_size(x: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    # Convert where there are fewer channels to process: RGB->grey before resizing, grey->RGB after.
    if channels < x.shape[1]:
        return resize_images(convert_channels(x, channels), size)
    return convert_channels(resize_images(x, size), channels)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, C, H, W) on the [0, 1] scale, exact, from a 256-bin
    histogram per channel (one pass, no float copy of the data set)."""
    v = torch.arange(256, dtype=torch.float64)
    mean, std = [], []
    for c in range(x.shape[1]):
        h = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        n = h.sum().clamp_min(1)
        m = (h * v).sum() / n
        var = (h * v * v).sum() / n - m * m
        mean.append(float(m / 255))
        std.append(float(var.clamp_min(0).sqrt() / 255))
    return tuple(mean), tuple(std)


class ResizedTensorDataset(torch.utils.data.Dataset):
    """uint8 images held at native size, converted and resized one item at a time: for when the
    resized set would not fit in memory (e.g. CIFAR at 224x224). Items: (uint8 (C, S, S), int)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, channels: int, size: int):
        self.images, self.labels, self.channels, self.size = images, labels, channels, size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = _channels_then_size(self.images[i:i + 1], self.channels, self.size)
        return x[0], int(self.labels[i])


# ----------------------------------------------------------------------------------------------
# Selection: subsets and hold-out splits, seeded and deterministic


def _subsample(idx: np.ndarray, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most `k` of `idx`, chosen at random, kept in their original order."""
    if k is None or k >= len(idx):
        return idx
    return idx[np.sort(rng.choice(len(idx), size=k, replace=False))]


def holdout_split(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) positions into `labels`, stratified: each class gives `fraction` of its images
    (largest remainders settle the rounding so the total is round(fraction * N)), chosen by `seed`.
    Both arrays are sorted."""
    labels = np.asarray(labels)
    n = len(labels)
    k = int(round(fraction * n))
    if k < 1 or k > n - 1:
        raise CnnkitError(f"val={fraction} of {n} images leaves {'no validation' if k < 1 else 'no training'} "
                          "images; use another fraction or more data")
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(fraction * counts).astype(np.int64)
    rest = k - int(quota.sum())
    if rest > 0:  # largest fractional parts first; ties in class order
        quota[np.argsort(-(fraction * counts - quota), kind="stable")[:rest]] += 1
    rng = np.random.default_rng([seed, 1])
    perm = rng.permutation(n)
    grouped = perm[np.argsort(labels[perm], kind="stable")]  # by class, random within each class
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    is_val = np.zeros(n, dtype=bool)
    for s, q in zip(starts, quota):
        is_val[grouped[s:s + q]] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# ----------------------------------------------------------------------------------------------
# The API


def _max_in_memory(value: int | None) -> int:
    if value is not None:
        return int(value)
    env = os.environ.get("CNNKIT_MAX_IN_MEMORY", "").strip().upper()
    if not env:
        return DEFAULT_MAX_IN_MEMORY
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        return int(float(env[:-1]) * mult[env[-1]]) if env[-1] in mult else int(env)
    except ValueError:
        raise CnnkitError(f"$CNNKIT_MAX_IN_MEMORY={env!r} is not a size in bytes (e.g. 2G, 512M)") from None


def _check(val, seed, in_chans, image_size, num_train, num_val) -> str | float:
    for key, v in (("num_train", num_train), ("num_val", num_val)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise CnnkitError(f"{key} must be a positive whole number of images, got {v!r}")
    if in_chans is not None and in_chans not in (1, 3):
        raise CnnkitError(f"in_chans must be 1 (grey) or 3 (RGB), got {in_chans!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer))
                                   or image_size < 8):
        raise CnnkitError(f"image_size must be a whole number of pixels >= 8, got {image_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CnnkitError(f"seed must be a whole number >= 0, got {seed!r}")
    if isinstance(val, str) and val.strip().lower() == "test":
        return "test"
    try:
        frac = float(val) if not isinstance(val, bool) else None
    except (TypeError, ValueError):
        frac = None
    if frac is None or not 0.0 < frac < 1.0:
        raise CnnkitError(f"val must be 'test' (the official test split) or a fraction of train in (0, 1) "
                          f"such as 0.1, got {val!r}")
    return frac


def load_data(name: str, *, data_dir: str | None = None, download: bool = False, val: str | float = "test",
              in_chans: int | None = None, image_size: int | None = None, seed: int = 0,
              num_train: int | None = None, num_val: int | None = None,
              max_in_memory: int | None = None, targets: str = "label", log=None) -> DataBundle:
    """Load a registered data set as uint8 tensors with its classes and normalization.

    name: a `list_datasets()` name; data_dir: where to look first (for `imagefolder`: the root
    folder); download: fetch with torchvision when not found (never otherwise); val: "test" for the
    official test split, or a fraction of train held out (stratified, seeded by `seed`);
    in_chans / image_size: convert and resize once here (default: native); num_train: use at most
    this many training images (chosen by `seed`, before any hold-out; for shapes: how many to
    generate, default 10,000); num_val: at most this many validation images (shapes default 2,000);
    max_in_memory: bytes above which splits are streamed (default $CNNKIT_MAX_IN_MEMORY or 2 GiB).
    targets: what the task needs per image: "label" (a class index), "labels" (a uint8 multi-hot row,
    `data/multilabel.py`; a single-label data set gives its class indices instead, sets of one),
    "objects" (boxes, labels and masks as `ObjectTargets`, see `data/detection.py`) or "mask" (class
    maps, `data/segmentation.py`); a data set that lacks them is an error.
    log: where one-line notices go (boxes clipped or dropped, unreadable files skipped).
    """
    frac = _check(val, seed, in_chans, image_size, num_train, num_val)
    spec: DatasetSpec = DATASETS.get(name)
    req = _Request(data_dir=None if data_dir is None else str(data_dir), download=bool(download),
                   need_test=frac == "test", in_chans=in_chans, image_size=image_size,
                   num_train=num_train, num_val=num_val, seed=int(seed))
    if targets == "labels" and targets not in spec.kinds and "label" in spec.kinds:
        targets = "label"  # one class per image is a set of one label
    if targets not in spec.kinds:
        which = [n for n in DATASETS.list() if targets in DATASETS.get(n).kinds]
        raise CnnkitError(f"{name} has {' and '.join(_KIND_WORDS[k] for k in spec.kinds)} only, but this task needs "
                          f"{_KIND_WORDS.get(targets, targets)}: use {', '.join(which) or 'another data set'}")
    if targets != "label":
        from .detection import load_dense

        return load_dense(spec, spec.dense[targets], req, frac, log or print)
    raw = spec(req)

    # Which images: positions into the source splits.
    rng = np.random.default_rng([int(seed), 0])
    train_idx = _subsample(np.arange(len(raw.train.labels)), num_train, rng)
    if frac == "test":
        val_pool, val_name = raw.test, "test"
        val_idx = np.arange(len(val_pool.labels))
    else:
        tr, va = holdout_split(raw.train.labels[train_idx], frac, seed)
        train_idx, val_idx, val_pool, val_name = train_idx[tr], train_idx[va], raw.train, "holdout"
    val_idx = _subsample(val_idx, num_val, np.random.default_rng([int(seed), 2]))

    chans, size = in_chans or raw.chans, image_size or raw.size
    limit = _max_in_memory(max_in_memory)
    stream = (len(train_idx) + len(val_idx)) * chans * size * size > limit
    train = _materialize(raw.train, train_idx, chans, size, stream)
    valid = _materialize(val_pool, val_idx, chans, size, stream)
    mean, std = channel_stats(train.images if train.images is not None else _sample(train.dataset, seed))
    return DataBundle(name=name, train=train, val=valid, classes=list(raw.classes), mean=mean, std=std,
                      in_chans=chans, image_size=size, val_name=val_name, source=raw.source)


def _materialize(pool: _Pool, idx: np.ndarray, chans: int, size: int, stream: bool) -> ImageSplit:
    targets = torch.from_numpy(pool.labels[idx])
    if pool.files is not None:
        files = [pool.files[i] for i in idx]
        if stream:
            return ImageSplit(None, targets, sources.ImageFileDataset(files, targets.numpy(), chans, size))
        images, ok, bad = sources.load_images(files, chans, size)
        return ImageSplit(torch.from_numpy(images), targets[torch.from_numpy(ok)], skipped=len(bad))
    images = pool.images if len(idx) == len(pool.images) else pool.images[torch.from_numpy(idx)]
    if stream:
        return ImageSplit(None, targets, ResizedTensorDataset(images, targets, chans, size))
    return ImageSplit(_channels_then_size(images, chans, size), targets)


def _sample(ds: torch.utils.data.Dataset, seed: int, k: int = 1024) -> torch.Tensor:
    """Up to `k` images of a streamed split, stacked (N, C, H, W), for its mean/std."""
    pick = np.sort(np.random.default_rng([seed, 3]).choice(len(ds), size=min(k, len(ds)), replace=False))
    return torch.stack([ds[int(i)][0] for i in pick])


from . import detection as _detection  # noqa: E402,F401 - registers the detection data sets (coco, yolo, voc)
from . import multilabel as _multilabel  # noqa: E402,F401 - registers the multi-label data sets (chestxray14, chexpert)

# volumes (shapes-volumes, nnU-Net raw folders) are listed here; the volume task loads them itself
_KIND_WORDS["volume"] = "a class per voxel of 3-D volumes (cnnkit plan, cnnkit train --plan)"
from .volumes import dataset_specs as _volume_specs  # noqa: E402

for _spec in _volume_specs():
    _register(_spec)
