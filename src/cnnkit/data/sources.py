"""Image classification data on disk: finding it, and reading its file formats into uint8 arrays.

Three formats cover the guide's data sets and the user's own images:

* IDX (MNIST, Fashion-MNIST): `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`, read with one
  `np.frombuffer` per file after the header is checked.
* CIFAR-10 / CIFAR-100 "python version" batches: pickles, read with a restricted unpickler that
  only rebuilds numpy arrays, and only from the known file names inside a located data set folder.
* Image folders: `root/<class>/<image>` (or `root/train/<class>/...` plus `root/val/...`), any file
  PIL opens, converted to 1 or 3 channels and resized to one square size. Unreadable files are
  skipped with a warning. Folders too large for memory are streamed by `ImageFileDataset`.

Every reader returns images as uint8 `(N, C, H, W)` and labels as int64 `(N,)`: data stays uint8
until it reaches the training device (see DESIGN.md). Everything that can go wrong because of the
user's files raises a one-line `CnnkitError` naming the file.
"""
from __future__ import annotations

import gzip
import os
import pickle
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from ..registry import CnnkitError
from ..utils import warn

# ----------------------------------------------------------------------------------------------
# Locating data

#: Folders that system packages install data sets into, as `<dir>/<name>` (Debian's
#: dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist). A module attribute so tests
#: can point it elsewhere.
SYSTEM_DIRS: tuple[str, ...] = ("/usr/share/datasets",)

#: Sub-folders of a data root that may hold each data set: ours first, then torchvision's layouts
#: (`FashionMNIST/raw`, `MNIST/raw`, `cifar-10-batches-py`, `cifar-100-python`).
LAYOUTS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST"),
    "mnist": ("mnist", "MNIST/raw", "MNIST"),
    "cifar10": ("cifar10", "cifar10/cifar-10-batches-py", "cifar-10-batches-py"),
    "cifar100": ("cifar100", "cifar100/cifar-100-python", "cifar-100-python"),
}

#: How to get each data set, for the not-found message.
HOW_TO_GET: dict[str, str] = {
    "fashion-mnist": "install it with `apt-get install dataset-fashion-mnist`, or pass --download "
    "(download=True) to fetch it with torchvision",
    "mnist": "pass --download (download=True) to fetch it with torchvision, or put the four IDX files "
    "in <data-dir>/mnist/",
    "cifar10": "pass --download (download=True) to fetch it with torchvision, or unpack "
    "cifar-10-python.tar.gz into <data-dir>/",
    "cifar100": "pass --download (download=True) to fetch it with torchvision, or unpack "
    "cifar-100-python.tar.gz into <data-dir>/",
}


def cache_dir() -> Path:
    """Where `download=True` puts data when no data_dir is given: `$XDG_CACHE_HOME/cnnkit`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cnnkit"


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every folder that may hold data set `name`, in search order.

    `data_dir` (the `--data-dir` argument), then each folder of `$CNNKIT_DATA` (os.pathsep-separated),
    then the download cache, then `SYSTEM_DIRS`; in each, the layouts of `LAYOUTS[name]`. Only the
    explicit `data_dir` is also tried as the data set folder itself (`<dir>/train-images-...`):
    a shared root holding MNIST files flat would otherwise be read as Fashion-MNIST, whose file names
    are the same.
    """
    roots: list[tuple[Path, bool]] = []
    if data_dir is not None:
        roots.append((Path(data_dir).expanduser(), True))
    for d in os.environ.get("CNNKIT_DATA", "").split(os.pathsep):
        if d.strip():
            roots.append((Path(d.strip()).expanduser(), False))
    roots.append((cache_dir(), False))
    roots.extend((Path(d), False) for d in SYSTEM_DIRS)
    out: list[Path] = []
    for root, flat in roots:
        for sub in LAYOUTS.get(name, (name,)):
            out.append(root / sub)
        if flat:
            out.append(root)
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def locate(name: str, data_dir: str | os.PathLike | None, is_here: Callable[[Path], bool]) -> Path:
    """The first of `candidate_dirs(name, data_dir)` for which `is_here(dir)` holds, else an error
    naming every place looked and how to get the data."""
    places = candidate_dirs(name, data_dir)
    for p in places:
        if p.is_dir() and is_here(p):
            return p
    env = "" if os.environ.get("CNNKIT_DATA") else " ($CNNKIT_DATA is not set)"
    how = HOW_TO_GET.get(name, "pass --data-dir pointing at it")
    raise CnnkitError(
        f"data set {name!r} not found; looked in: {', '.join(map(str, places))}{env}. To get it, {how}."
    )


def download(name: str, root: str | os.PathLike | None = None) -> Path:
    """Fetch `name` with torchvision into `root` (default `cache_dir()`); only ever called when the
    user asked for it. Returns the root, which `locate` then searches through torchvision's layouts."""
    import torchvision.datasets as tvd

    classes = {"fashion-mnist": tvd.FashionMNIST, "mnist": tvd.MNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}
    if name not in classes:
        raise CnnkitError(f"data set {name!r} cannot be downloaded; known: {', '.join(sorted(classes))}")
    root = Path(root).expanduser() if root is not None else cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            classes[name](str(root), train=train, download=True)
    except Exception as e:  # network, disk, checksum: all user-facing
        raise CnnkitError(f"downloading {name!r} into {root} failed: {type(e).__name__}: {e}") from None
    return root


# ----------------------------------------------------------------------------------------------
# IDX (MNIST family)

# IDX type codes -> big-endian numpy dtypes (the format: 2 zero bytes, type, ndim, ndim uint32 dims).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it ends in .gz (one zlib call: ~0.2 s for 47 MB)."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise CnnkitError(f"{path} is not a readable gzip file ({e}); delete it and get it again") from None
    return data


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """One IDX file as a numpy array (uint8 for MNIST), header and size checked.

    `ndim`, when given, is the number of dimensions the caller expects (3 for images, 1 for labels).
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise CnnkitError(f"{path} is not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    n = data[3]
    if ndim is not None and n != ndim:
        raise CnnkitError(f"{path}: expected an IDX file of {ndim} dimensions, found {n}")
    if len(data) < 4 + 4 * n:
        raise CnnkitError(f"{path} is truncated (header cut short)")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=n, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expect = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(data) - 4 - 4 * n
    if found != expect:
        what = "truncated" if found < expect else "longer than its header says"
        raise CnnkitError(f"{path} is {what}: header {dims} needs {expect} bytes of data, found {found}")
    arr = np.frombuffer(data, dtype, offset=4 + 4 * n).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)  # native order, writable


def idx_files(folder: Path, split: str) -> tuple[Path, Path]:
    """The images and labels files of `split` ("train" or "t10k") in `folder`, plain or gzipped."""
    found = []
    for stem in (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"):
        for p in (folder / stem, folder / f"{stem}.gz"):
            if p.is_file():
                found.append(p)
                break
        else:
            raise CnnkitError(f"{folder} has no {stem}[.gz]; the folder is incomplete, get the data set again")
    return found[0], found[1]


def has_idx(folder: Path) -> bool:
    return any((folder / f).is_file() for f in ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"))


def load_idx(folder: Path, split: str, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) uint8 and labels (N,) int64 of one IDX split."""
    img_path, lbl_path = idx_files(folder, split)
    images = read_idx(img_path, ndim=3)
    labels = read_idx(lbl_path, ndim=1)
    for p, a in ((img_path, images), (lbl_path, labels)):
        if a.dtype != np.uint8:
            raise CnnkitError(f"{p}: expected unsigned bytes, found {a.dtype}")
    if len(images) != len(labels):
        raise CnnkitError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels")
    if len(labels) and labels.max() >= num_classes:
        raise CnnkitError(f"{lbl_path}: label {labels.max()} out of range for {num_classes} classes")
    return images[:, None], labels.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# CIFAR pickles

# The CIFAR "python version" files are pickles of dicts of numpy arrays and lists. Unpickling can
# run arbitrary code, so (1) only files with the known names inside a located CIFAR folder are read
# and (2) the unpickler resolves only the globals needed to rebuild numpy arrays.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol <= 2
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy.core."):  # files written with numpy 1; numpy 2 moved it to numpy._core
            try:
                return super().find_class("numpy._core." + module[len("numpy.core."):], name)
            except (ImportError, AttributeError):
                pass
        return super().find_class(module, name)


def read_cifar_pickle(path: Path) -> dict:
    """One CIFAR batch/meta file as a dict with str keys (the files use bytes keys)."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise CnnkitError(f"{path} is missing; the CIFAR folder is incomplete, get the data set again") from None
    except Exception as e:  # any unpickling failure means a corrupt or foreign file
        raise CnnkitError(f"{path} is not a readable CIFAR batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise CnnkitError(f"{path} is not a CIFAR batch (holds a {type(obj).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_arrays(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = read_cifar_pickle(path)
    if "data" not in d or label_key not in d:
        raise CnnkitError(f"{path} is not a CIFAR batch (no 'data' or {label_key!r} entry)")
    data, labels = np.asarray(d["data"]), np.asarray(d[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise CnnkitError(f"{path} is corrupt: data {data.dtype}{data.shape}, {len(labels)} labels; "
                          "expected uint8 (N, 3072) and N labels")
    return data.reshape(-1, 3, 32, 32), labels  # rows are R plane, G plane, B plane: already CHW


def _cifar_names(path: Path, key: str) -> list[str] | None:
    if not path.is_file():
        return None
    names = read_cifar_pickle(path).get(key)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names is not None else None


def has_cifar10(folder: Path) -> bool:
    return (folder / "data_batch_1").is_file()


def has_cifar100(folder: Path) -> bool:
    return (folder / "train").is_file() and (folder / "meta").is_file()


def load_cifar10(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """CIFAR-10 images (N, 3, 32, 32) uint8, labels int64 and class names from batches.meta."""
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [_cifar_arrays(folder / f, "labels") for f in files]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts])
    return images, labels, _cifar_names(folder / "batches.meta", "label_names")


def load_cifar100(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """CIFAR-100 images, fine labels (100 classes) and fine class names from meta."""
    images, labels = _cifar_arrays(folder / ("train" if split == "train" else "test"), "fine_labels")
    return images, labels, _cifar_names(folder / "meta", "fine_label_names")


# ----------------------------------------------------------------------------------------------
# Image folders

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_VAL_FOLDERS = ("val", "valid", "validation", "test")


def _image_files(folder: Path) -> list[str]:
    """Image files under `folder` (recursively, following links), sorted for a stable order."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out.extend(os.path.join(dirpath, f) for f in filenames
                   if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(out)


def image_folder_splits(root: str | os.PathLike) -> tuple[Path, Path | None]:
    """(train folder, val folder or None) of an image-folder data set.

    `root/train/<class>/...` with an optional `root/{val,valid,validation,test}/<class>/...`, or
    `root/<class>/...` alone (then only a held-out fraction can validate).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CnnkitError(f"image folder {root} does not exist (expected <root>/<class>/<image> files)")
    if (root / "train").is_dir():
        return root / "train", next((root / v for v in _VAL_FOLDERS if (root / v).is_dir()), None)
    val = next((v for v in _VAL_FOLDERS if (root / v).is_dir()), None)
    if val is not None:
        raise CnnkitError(f"{root} has a {val}/ folder but no train/ folder; put the training classes in {root}/train/")
    return root, None


def scan_image_folder(folder: Path, classes: Sequence[str] | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """(class names, image paths, int64 labels) of `folder/<class>/<image>`.

    With `classes` (the train split's), labels use that order and an unknown class folder is an
    error. Without, classes are the sorted sub-folders that hold at least one image.
    """
    subdirs = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "__")))
    if not subdirs:
        raise CnnkitError(f"{folder} has no class folders; expected {folder}/<class>/<image> "
                          "(one sub-folder of images per class)")
    files_of = {d: _image_files(folder / d) for d in subdirs}
    if not any(files_of.values()):
        raise CnnkitError(f"{folder} has class folders ({', '.join(subdirs[:5])}{', ...' if len(subdirs) > 5 else ''}) "
                          f"but no images ({', '.join(IMAGE_EXTENSIONS)})")
    if classes is None:
        empty = [d for d in subdirs if not files_of[d]]
        if empty:
            warn(f"{folder}: ignoring class folders with no images: {', '.join(empty)}")
        classes = [d for d in subdirs if files_of[d]]
    else:
        unknown = [d for d in subdirs if d not in classes and files_of[d]]
        if unknown:
            raise CnnkitError(f"{folder} has class folders not in the training split: {', '.join(unknown)}")
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for d in subdirs:
        if d in index:
            files.extend(files_of[d])
            labels.extend([index[d]] * len(files_of[d]))
    return list(classes), files, np.asarray(labels, dtype=np.int64)


def _to_8bit(img: Image.Image) -> Image.Image:
    """Integer/float single-channel modes (16-bit PNG, TIFF) to 'L', scaling 16-bit ranges down
    rather than clipping them (PIL's own convert clips)."""
    a = np.asarray(img, dtype=np.float32)
    if img.mode.startswith("I;16") or (a.size and a.max() > 255):
        a = a / 257.0  # 65535 -> 255
    elif img.mode == "F" and a.size and a.max() <= 1.0:
        a = a * 255.0  # floats on the [0, 1] scale
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "L")


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> 'L' (channels=1) or 'RGB' (3). Transparency is composited over white, as the
    image shows on a white page (dropping alpha would expose whatever colour hides under it)."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def open_image(path: str, channels: int, size: int) -> np.ndarray:
    """One image file as uint8 (channels, size, size): EXIF orientation applied, converted, resized.

    The whole image is resized to the square (no crop), with PIL's antialiased bilinear filter.
    JPEGs are decoded at a reduced scale when much larger than `size` (draft mode: 2-8x faster).
    """
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("L" if channels == 1 else "RGB", (size, size))
        img.load()
        if img.getexif().get(0x0112, 1) != 1:  # EXIF orientation: phones store rotated pixels
            img = ImageOps.exif_transpose(img)
        img = to_channels(img, channels)
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        a = np.asarray(img, dtype=np.uint8)
    return np.array(a[None] if a.ndim == 2 else a.transpose(2, 0, 1), order="C")  # own, writable copy


def probe_image(path: str) -> tuple[int, int]:
    """(native channels, square side) of an image: 1 for grey modes else 3; the shorter side."""
    with Image.open(path) as img:
        img.load()
        grey = img.mode in _GREY_MODES or (img.mode == "P" and _grey_palette(img))
        return (1 if grey else 3), min(img.size)


def _grey_palette(img: Image.Image) -> bool:
    pal = np.asarray(img.getpalette() or [0, 0, 0], dtype=np.int32).reshape(-1, 3)
    return bool((pal == pal[:, :1]).all())


def first_readable(files: Sequence[str]) -> tuple[int, int, int]:
    """(index, channels, side) of the first file PIL can read; an error when none can."""
    err = None
    for i, f in enumerate(files):
        try:
            return (i, *probe_image(f))
        except Exception as e:  # corrupt files are skipped here as when loading
            err = err or f"{f}: {type(e).__name__}: {e}"
            if i >= 1000:
                break
    raise CnnkitError(f"none of the images could be read (first error: {err})")


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def load_images(files: Sequence[str], channels: int, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read `files` into one uint8 array (n_ok, channels, size, size).

    Returns (images, ok mask over files, unreadable file paths). A file PIL cannot read is skipped
    with one warning for all of them. Threads overlap decoding (PIL releases the GIL while decoding
    and resizing); order follows `files`.
    """
    out = np.empty((len(files), channels, size, size), dtype=np.uint8)
    ok = np.zeros(len(files), dtype=bool)
    errors: list[str | None] = [None] * len(files)

    def read(i: int) -> None:
        try:
            out[i] = open_image(files[i], channels, size)
            ok[i] = True
        except Exception as e:
            errors[i] = f"{type(e).__name__}: {e}"

    if len(files) < 64 or _threads() == 1:
        for i in range(len(files)):
            read(i)
    else:
        with ThreadPoolExecutor(_threads()) as ex:
            list(ex.map(read, range(len(files))))
    bad = [files[i] for i in np.flatnonzero(~ok)]
    if bad and ok.any():
        first = errors[int(np.flatnonzero(~ok)[0])]
        warn(f"skipped {len(bad)} of {len(files)} images that could not be read: "
             f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''} (first error: {first})")
    elif bad:
        raise CnnkitError(f"none of the {len(files)} images could be read, e.g. {bad[0]}: {errors[0]}")
    return (out if ok.all() else out[ok]), ok, bad


class ImageFileDataset(torch.utils.data.Dataset):
    """A list of image files streamed from disk: items are (uint8 (C, S, S) tensor, int label), or
    (image, its row of `labels`) when `labels` is (N, K) (multi-label targets, `data/multilabel.py`).

    For image folders too large to hold in memory; a DataLoader with workers reads them in parallel.
    A file that cannot be read is replaced by the next readable one (with a warning), so one bad
    file never stops an epoch; `skipped` counts them per process.
    """

    def __init__(self, files: Sequence[str], labels: Sequence[int], channels: int, size: int):
        self.files = list(files)
        labels = np.asarray(labels)
        self.labels = labels if labels.ndim == 2 else labels.astype(np.int64)
        self.channels, self.size = channels, size
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        for k in range(len(self.files)):
            j = (i + k) % len(self.files)
            try:
                image = torch.from_numpy(open_image(self.files[j], self.channels, self.size))
                row = self.labels[j]
                return image, (torch.from_numpy(row.copy()) if self.labels.ndim == 2 else int(row))
            except Exception as e:
                self.skipped += 1
                warn(f"skipping unreadable image {self.files[j]} ({type(e).__name__}: {e})")
        raise CnnkitError(f"none of the {len(self.files)} images could be read")
