"""Data with per-object targets (boxes, classes, masks) for detection: `load_data(..., targets="objects")`.

Sources, each read with no conversion step:

    shapes   multi-object scenes of the shapes world (`data/scenes.py`), 1-4 objects per image with
             exact boxes and instance masks; 64 px by default (--image-size to change)
    coco     COCO instances JSON (polygons and RLE masks): --data-dir is the JSON file of the
             training split, or a folder holding annotations/instances_train*.json (and _val*)
    yolo     ultralytics-style dataset YAML (path/train/val/names) with YOLO txt labels:
             --data-dir is the YAML file
    voc      Pascal VOC: --data-dir is the folder with Annotations/, JPEGImages/, ImageSets/Main/

Every image is letterboxed to a square `image_size` (default 64 for shapes, 320 for files) as
uint8 (N, C, S, S); the targets are an `ObjectTargets`, so the in-memory loader batches them as it
batches class labels. Boxes outside the image are clipped, boxes that end up degenerate are
dropped, and each is counted in one notice line. With `val` a fraction, images are held out at
random (seeded); "test" takes the source's own validation split.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..registry import CnnkitError
from .datasets import DataBundle, DatasetSpec, ImageSplit, _register, channel_stats

SCENE_SIZE = 64  # shapes scenes: objects of 13-29 px, fine for every detector family on a CPU
FILE_SIZE = 320  # real images: the side they are letterboxed to unless --image-size says otherwise
SCENES_TRAIN, SCENES_VAL = 10_000, 1_000
SCENES_TEST_OFFSET = 1_000_000


def _shapes(req, frac, log):
    from .scenes import make_scene_batch
    from .shapes import SHAPE_CLASSES

    c, s = req.in_chans or 3, req.image_size or SCENE_SIZE
    n_train = req.num_train or SCENES_TRAIN
    images, targets = make_scene_batch(n_train, seed=req.seed, size=s, channels=c)
    if frac == "test":
        vi, vt = make_scene_batch(req.num_val or SCENES_VAL, seed=req.seed, size=s, channels=c,
                                  offset=SCENES_TEST_OFFSET)
        train, val, val_name = ImageSplit(images, targets), ImageSplit(vi, vt), "test"
    else:
        train, val = _holdout(images, targets, frac, req.seed, req.num_val)
        val_name = "holdout"
    return train, val, list(SHAPE_CLASSES), c, s, val_name, "generated"


def _holdout(images, targets, frac, seed, num_val):
    n = len(images)
    k = int(round(frac * n))
    if k < 1 or k > n - 1:
        raise CnnkitError(f"val={frac} of {n} images leaves {'no validation' if k < 1 else 'no training'} images")
    perm = torch.from_numpy(np.random.default_rng([seed, 1]).permutation(n))
    va, tr = perm[:k].sort().values, perm[k:].sort().values
    if num_val is not None:
        va = va[:num_val]
    return ImageSplit(images[tr], targets[tr]), ImageSplit(images[va], targets[va])


def _subsample(images, targets, k, seed):
    if k is None or k >= len(images):
        return images, targets
    idx = torch.from_numpy(np.sort(np.random.default_rng([seed, 0]).choice(len(images), size=k, replace=False)))
    return images[idx], targets[idx]


def _files(reader):
    """A loader over a reader of `detection_sources` that gives (pool of the train split, pool of val or None)."""

    def load(req, frac, log):
        from .detection_sources import load_detection_images

        if req.data_dir is None:
            raise CnnkitError("this data set reads your files: pass --data-dir (data_dir=) pointing at them")
        if req.download:
            raise CnnkitError("detection data sets are read from your files and cannot be downloaded; drop --download")
        train_pool, val_pool = reader(Path(req.data_dir).expanduser(), frac == "test")
        c, s = req.in_chans or 3, req.image_size or FILE_SIZE
        images, targets, rep = load_detection_images(train_pool, s, c)
        _notice(rep, "training", log)
        images, targets = _subsample(images, targets, req.num_train, req.seed)
        if frac == "test":
            if val_pool is None:
                raise CnnkitError(f"{req.data_dir} has no validation split; hold out training images with --val 0.1")
            vi, vt, vrep = load_detection_images(val_pool, s, c)
            _notice(vrep, "validation", log)
            vi, vt = _subsample(vi, vt, req.num_val, req.seed)
            train, val, val_name = ImageSplit(images, targets), ImageSplit(vi, vt), "test"
        else:
            train, val = _holdout(images, targets, frac, req.seed, req.num_val)
            val_name = "holdout"
        return train, val, list(train_pool.classes), c, s, val_name, str(req.data_dir)

    return load


def _notice(rep: dict, split: str, log) -> None:
    said = {k: v for k, v in rep.items() if isinstance(v, int) and v and k != "images" and k != "boxes"}
    if said:
        log(f"{split} split: " + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in said.items()))


def _coco(root: Path, need_val: bool):
    from .detection_sources import read_coco

    if root.is_file():
        train_json = root
        val_json = root.with_name(root.name.replace("train", "val")) if "train" in root.name else None
    else:
        ann = root / "annotations" if (root / "annotations").is_dir() else root
        trains = sorted(ann.glob("instances_train*.json")) or sorted(ann.glob("*train*.json"))
        if not trains:
            raise CnnkitError(f"{root}: no COCO instances JSON found (expected annotations/instances_train*.json)")
        train_json = trains[0]
        vals = sorted(ann.glob("instances_val*.json")) or sorted(ann.glob("*val*.json"))
        val_json = vals[0] if vals else None

    def image_root(js: Path) -> Path:
        split = js.stem.replace("instances_", "")
        base = js.parent.parent if js.parent.name == "annotations" else js.parent
        for cand in (base / split, base / "images" / split, base / "images", base):
            if cand.is_dir():
                return cand
        return base

    train = read_coco(train_json, image_root(train_json))
    val = read_coco(val_json, image_root(val_json)) if need_val and val_json and val_json.is_file() else None
    return train, val


def _yolo(root: Path, need_val: bool):
    from .detection_sources import read_yolo

    if root.is_dir():
        yamls = sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml"))
        if not yamls:
            raise CnnkitError(f"{root}: no dataset YAML found; pass --data-dir pointing at the YAML file")
        root = yamls[0]
    return read_yolo(root, "train"), (read_yolo(root, "val") if need_val else None)


def _voc(root: Path, need_val: bool):
    from .detection_sources import read_voc

    return read_voc(root, "train"), (read_voc(root, "val") if need_val else None)


LOADERS = {"shapes": _shapes, "coco": _files(_coco), "yolo": _files(_yolo), "voc": _files(_voc)}


def load_dense(spec: DatasetSpec, loader: str, req, frac, log) -> DataBundle:
    """Any target kind but class labels: the loaders here (objects), in `data/segmentation.py` (masks) and
    in `data/multilabel.py` (sets of labels, whose file splits may be streamed)."""
    from .datasets import _sample
    from .multilabel import LABEL_LOADERS
    from .segmentation import MASK_LOADERS

    load = {**LOADERS, **MASK_LOADERS, **LABEL_LOADERS}[loader]
    train, val, classes, c, s, val_name, source = load(req, frac, log)
    if len(train) == 0:
        raise CnnkitError(f"{spec.name}: the training split has no images")
    if len(val) == 0:
        raise CnnkitError(f"{spec.name}: the validation split has no images")
    mean, std = channel_stats(train.images if train.images is not None else _sample(train.dataset, req.seed))
    return DataBundle(name=spec.name, train=train, val=val, classes=classes, mean=mean, std=std, in_chans=c,
                      image_size=s, val_name=val_name, source=source)


_register(DatasetSpec("coco", "COCO instances JSON: boxes, polygon and RLE masks (your files)", None, None, None,
                      None, None, None, "--data-dir pointing at instances_train*.json or its folder",
                      dense={"objects": "coco", "mask": "coco_mask"}))
_register(DatasetSpec("yolo", "YOLO txt labels with an ultralytics dataset YAML (your files)", None, None, None,
                      None, None, None, "--data-dir pointing at the dataset YAML", dense={"objects": "yolo"}))
_register(DatasetSpec("voc", "Pascal VOC: XML boxes, segmentation PNGs (your files)", None, None, None, None, None,
                      None, "--data-dir pointing at the VOC folder (Annotations/ or SegmentationClass/, JPEGImages/, "
                      "ImageSets/)", dense={"objects": "voc", "mask": "voc_mask"}))
_register(DatasetSpec("segfolder", "images/ and masks/ folders with matching names (your files)", None, None, None,
                      None, None, None, "--data-dir pointing at the folder holding images/ and masks/ (or train/, val/)",
                      dense={"mask": "segfolder"}))
