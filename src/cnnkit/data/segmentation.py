"""Data with per-pixel class maps for semantic segmentation: `load_data(..., targets="mask")`.

A split's targets are one uint8 tensor (N, S, S) of class ids beside the uint8 images (N, C, S, S);
`IGNORE` (255) marks pixels that count for nothing (VOC's object borders, letterbox padding). Class
0 is the background wherever a source has one. Sources, each read with no conversion step:

    shapes     the multi-object scenes of the shapes world (`data/scenes.py`): "background" plus
               the shape classes, from the scenes' exact visible-pixel instance masks; 64 px
    segfolder  the most common layout of your own files: `images/` and `masks/` with matching
               names (`a.jpg` <-> `a.png`), optionally under `train/` and `val/`. Mask values are
               class ids (grey or palette PNG; a palette PNG's indices are the ids) or the colours
               of Pascal VOC's colour map. Class names come from `classes.txt` (one per line, id
               order) beside the folders, else `class 0`, `class 1`, ...
    voc        Pascal VOC segmentation: --data-dir holds JPEGImages/, SegmentationClass/ (palette
               PNGs, 255 on borders) and ImageSets/Segmentation/{train,val}.txt; 21 classes
    coco       COCO instances JSON rendered to semantic maps: each object's polygon / RLE mask
               painted with its class, objects in file order, "background" first

Files are letterboxed to a square `image_size` (default 256): the image bilinearly, its mask
with nearest-neighbour sampling, and the padding of the mask is `IGNORE`, so padding never counts
as background. Mistakes give one line each: a mask whose size differs from its image, a value
beyond the classes that is not 255, an RGB mask that is not a palette, an image without a mask,
a list naming files that do not exist.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..registry import CnnkitError
from .sources import _image_files, to_channels

IGNORE = 255
FILE_SIZE = 256
PAD_VALUE = 114  # letterbox grey, as the detection sources


def voc_colormap(n: int = 256) -> np.ndarray:
    """Pascal VOC's colour map (n, 3) uint8: class id bits spread over the high bits of R, G, B."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def semantic_from_objects(targets, n: int, size: int) -> torch.Tensor:
    """(N, S, S) uint8 class maps from `ObjectTargets` with masks: 0 background, object class k -> k + 1.
    Later objects paint over earlier ones (the scenes' masks are disjoint already)."""
    out = torch.zeros(n, size * size, dtype=torch.uint8)
    if targets.masks is None or not len(targets.labels):
        return out.view(n, size, size)
    owner = targets.image_index()
    flat = targets.masks.reshape(len(targets.labels), -1)
    for j in range(len(targets.labels)):  # M objects, a few per image: cheap next to drawing them
        row = out[owner[j]]
        row[flat[j]] = int(targets.labels[j]) + 1
    return out.view(n, size, size)


# ------------------------------------------------------------------ reading one pair


def _open(path: str) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file") from None
    except Exception as e:
        raise CnnkitError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from None
    return img


def mask_ids(img: Image.Image, path: str, num_classes: int | None) -> np.ndarray:
    """A mask image -> (H, W) uint8 class ids. Palette PNGs give their indices; grey and 16-bit images
    their values; RGB images must use VOC's colour map (anything else is an error: which colour is
    which class cannot be guessed)."""
    if img.mode == "P" or img.mode == "L":
        ids = np.asarray(img, dtype=np.uint8)
    elif img.mode in ("I", "I;16", "I;16B", "I;16L"):
        a = np.asarray(img, dtype=np.int64)
        if a.size and (a.max() > IGNORE or a.min() < 0):
            raise CnnkitError(f"{path}: mask values must be class ids 0..254 (255 = ignore), found {a.min()}..{a.max()}")
        ids = a.astype(np.uint8)
    elif img.mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            ids = rgb[..., 0].copy()  # a grey mask saved as RGB
        else:
            cmap = voc_colormap()
            key = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
            lut = {(int(r) << 16) | (int(g) << 8) | int(b): i for i, (r, g, b) in enumerate(cmap)}
            lut[(224 << 16) | (224 << 8) | 192] = IGNORE  # VOC's border colour
            colours, inverse = np.unique(key, return_inverse=True)
            unknown = [int(c) for c in colours if int(c) not in lut]
            if unknown:
                c = unknown[0]
                raise CnnkitError(f"{path}: an RGB mask that is not a palette (colour ({c >> 16}, {(c >> 8) & 255}, "
                                  f"{c & 255}) is not in VOC's colour map); save masks as class ids (grey or "
                                  f"palette PNG)")
            ids = np.array([lut[int(c)] for c in colours], dtype=np.uint8)[inverse].reshape(key.shape)
    else:
        raise CnnkitError(f"{path}: a mask of mode {img.mode} cannot hold class ids; use a grey or palette PNG")
    if num_classes is not None:
        bad = (ids >= num_classes) & (ids != IGNORE)
        if bad.any():
            v = int(ids[bad].max())
            raise CnnkitError(f"{path}: mask value {v} is beyond the {num_classes} classes and is not {IGNORE} (ignore)")
    return ids


def _geometry(w: int, h: int, size: int) -> tuple[int, int, int, int]:
    scale = size / max(w, h)
    nw, nh = max(1, min(size, round(w * scale))), max(1, min(size, round(h * scale)))
    return nw, nh, (size - nw) // 2, (size - nh) // 2


def letterbox_pair(image: Image.Image, ids: np.ndarray, size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, S, S) uint8 image and (S, S) uint8 mask, letterboxed: bilinear pixels, nearest ids, ignored padding."""
    img = to_channels(image, channels)
    w, h = img.size
    nw, nh, left, top = _geometry(w, h, size)
    px = np.asarray(img.resize((nw, nh), Image.BILINEAR) if (nw, nh) != (w, h) else img, dtype=np.uint8)
    out = np.full((channels, size, size), PAD_VALUE, dtype=np.uint8)
    out[:, top:top + nh, left:left + nw] = px[None] if px.ndim == 2 else px.transpose(2, 0, 1)
    m = np.full((size, size), IGNORE, dtype=np.uint8)
    m[top:top + nh, left:left + nw] = np.asarray(Image.fromarray(ids).resize((nw, nh), Image.NEAREST), dtype=np.uint8)
    return out, m


def read_pair(image_path: str, mask_path: str, size: int, channels: int, num_classes: int | None):
    image = _open(image_path)
    if image.getexif().get(0x0112, 1) != 1:
        image = ImageOps.exif_transpose(image)
    mask = _open(mask_path)
    if mask.size != image.size:
        raise CnnkitError(f"{mask_path}: the mask is {mask.size[0]}x{mask.size[1]} but its image {image_path} is "
                          f"{image.size[0]}x{image.size[1]} (width x height)")
    return letterbox_pair(image, mask_ids(mask, mask_path, num_classes), size, channels)


def load_pairs(pairs: list[tuple[str, str]], size: int, channels: int, num_classes: int | None, where: str):
    """Every (image, mask) pair -> images (N, C, S, S) uint8, masks (N, S, S) uint8."""
    from .detection_sources import _map

    if not pairs:
        raise CnnkitError(f"{where}: no images with masks found")
    if channels not in (1, 3):
        raise CnnkitError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    res = _map(lambda p: read_pair(p[0], p[1], size, channels, num_classes), pairs)
    return torch.from_numpy(np.stack([r[0] for r in res])), torch.from_numpy(np.stack([r[1] for r in res]))


# ------------------------------------------------------------------ layouts


def _classes_file(root: Path) -> list[str] | None:
    for cand in (root / "classes.txt", root.parent / "classes.txt"):
        if cand.is_file():
            names = [line.strip() for line in cand.read_text(encoding="utf-8").splitlines() if line.strip()]
            if not names:
                raise CnnkitError(f"{cand}: no class names (one per line, in id order)")
            return names
    return None


def folder_pairs(folder: Path) -> list[tuple[str, str]]:
    """(image, mask) pairs of FOLDER/images/* and FOLDER/masks/<same stem>.*; an image without a mask
    is an error that names it."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise CnnkitError(f"{folder}: expected images/ and masks/ folders with matching file names "
                              f"({d.name}/ is missing)")
    masks = {}
    for f in _image_files(masks_dir):
        rel = Path(f).relative_to(masks_dir)
        masks[str(rel.with_suffix(""))] = f
    pairs, missing = [], []
    for f in _image_files(images_dir):
        key = str(Path(f).relative_to(images_dir).with_suffix(""))
        if key in masks:
            pairs.append((f, masks[key]))
        else:
            missing.append(f)
    if missing:
        raise CnnkitError(f"{folder}: {len(missing)} images have no mask in masks/ (e.g. {missing[0]}); "
                          f"give each image a mask of the same name")
    return pairs


def segfolder_splits(root: Path) -> tuple[list, list | None, list[str] | None]:
    root = root.expanduser()
    if not root.is_dir():
        raise CnnkitError(f"{root} does not exist (expected images/ and masks/ folders, or train/ and val/ with them)")
    classes = _classes_file(root)
    if (root / "train").is_dir():
        val = next((root / v for v in ("val", "valid", "validation", "test") if (root / v).is_dir()), None)
        return folder_pairs(root / "train"), (folder_pairs(val) if val else None), classes
    return folder_pairs(root), None, classes


def voc_pairs(root: Path, split: str) -> list[tuple[str, str]]:
    root = root.expanduser()
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "SegmentationClass").is_dir():
            root = cand
            break
    else:
        raise CnnkitError(f"{root}: no SegmentationClass/ folder (expected a Pascal VOC folder with JPEGImages/, "
                          f"SegmentationClass/ and ImageSets/Segmentation/)")
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if listing.is_file():
        stems = [s.strip() for s in listing.read_text().splitlines() if s.strip()]
    else:
        stems = sorted(Path(f).stem for f in _image_files(root / "SegmentationClass"))
    pairs = []
    for s in stems:
        img = next((root / "JPEGImages" / f"{s}{e}" for e in (".jpg", ".jpeg", ".png")
                    if (root / "JPEGImages" / f"{s}{e}").is_file()), None)
        mask = root / "SegmentationClass" / f"{s}.png"
        if img is None or not mask.is_file():
            raise CnnkitError(f"{listing if listing.is_file() else root}: {s} has no "
                              f"{'image in JPEGImages/' if img is None else 'mask in SegmentationClass/'}")
        pairs.append((str(img), str(mask)))
    return pairs


def check_classes(masks: torch.Tensor, num_classes: int, where: str) -> None:
    bad = (masks >= num_classes) & (masks != IGNORE)
    if bool(bad.any()):
        raise CnnkitError(f"{where}: mask value {int(masks[bad].max())} is beyond the {num_classes} classes "
                          f"and is not {IGNORE} (ignore)")


# ------------------------------------------------------------------ loaders for `load_data(targets="mask")`


def _shapes(req, frac, log):
    from .detection import SCENE_SIZE, SCENES_TEST_OFFSET, SCENES_TRAIN, SCENES_VAL, _holdout
    from .datasets import ImageSplit
    from .scenes import make_scene_batch
    from .shapes import SHAPE_CLASSES

    c, s = req.in_chans or 3, req.image_size or SCENE_SIZE

    def scenes(n, offset=0):
        images, targets = make_scene_batch(n, seed=req.seed, size=s, channels=c, offset=offset)
        return images, semantic_from_objects(targets, n, s)

    images, masks = scenes(req.num_train or SCENES_TRAIN)
    if frac == "test":
        vi, vm = scenes(req.num_val or SCENES_VAL, SCENES_TEST_OFFSET)
        train, val, val_name = ImageSplit(images, masks), ImageSplit(vi, vm), "test"
    else:
        train, val = _holdout(images, masks, frac, req.seed, req.num_val)
        val_name = "holdout"
    return train, val, ["background", *SHAPE_CLASSES], c, s, val_name, "generated"


def _from_pairs(split_fn, default_classes=None):
    """A loader over a function root -> (train pairs, val pairs or None, class names or None)."""

    def load(req, frac, log):
        from .datasets import ImageSplit
        from .detection import _holdout, _subsample

        if req.data_dir is None:
            raise CnnkitError("this data set reads your files: pass --data-dir (data_dir=) pointing at them")
        root = Path(req.data_dir)
        train_pairs, val_pairs, classes = split_fn(root)
        classes = classes or default_classes
        c, s = req.in_chans or 3, req.image_size or FILE_SIZE
        k = None if classes is None else len(classes)
        images, masks = load_pairs(train_pairs, s, c, k, str(root))
        if classes is None:  # ids as names: as many classes as the largest id seen
            seen = masks[masks != IGNORE]
            classes = [f"class {i}" for i in range(int(seen.max()) + 1 if len(seen) else 1)]
        images, masks = _subsample(images, masks, req.num_train, req.seed)
        if frac == "test":
            if val_pairs is None:
                raise CnnkitError(f"{root} has no validation split; hold out training images with --val 0.1")
            vi, vm = load_pairs(val_pairs, s, c, len(classes), str(root))
            vi, vm = _subsample(vi, vm, req.num_val, req.seed)
            train, val, val_name = ImageSplit(images, masks), ImageSplit(vi, vm), "test"
        else:
            train, val = _holdout(images, masks, frac, req.seed, req.num_val)
            val_name = "holdout"
        log(f"masks: {len(classes)} classes; {float((masks == IGNORE).float().mean()):.1%} of the training "
            f"pixels ignored ({IGNORE})")
        return train, val, list(classes), c, s, val_name, str(root)

    return load


def _voc_split(root: Path):
    from .detection_sources import VOC_CLASSES

    return voc_pairs(root, "train"), voc_pairs(root, "val"), ["background", *VOC_CLASSES]


def _coco(req, frac, log):
    from .datasets import ImageSplit
    from .detection import LOADERS

    # the detection reader finds the JSON files and images; the masks are painted into class maps
    train, val, classes, c, s, val_name, source = LOADERS["coco"](req, frac, log)

    def paint(split):
        t = split.targets
        if t.masks is None and len(t.labels):
            raise CnnkitError(f"{source}: some objects have no segmentation, so no class map can be painted")
        return ImageSplit(split.images, semantic_from_objects(t, len(split.images), s))

    return paint(train), paint(val), ["background", *classes], c, s, val_name, source


MASK_LOADERS = {"shapes_mask": _shapes, "segfolder": _from_pairs(segfolder_splits), "voc_mask": _from_pairs(_voc_split),
                "coco_mask": _coco}
