"""Detection data sets on disk: COCO JSON, YOLO (ultralytics YAML + txt labels), Pascal VOC XML.

Every reader returns the same in-memory `DetectionPool` (class names, image files and one
annotation dict per file, boxes in the original image's pixels), and `load_detection_images`
turns any pool into training arrays: uint8 images letterboxed to one square size and an
`ObjectTargets` whose boxes (and masks) moved with the pixels. Nothing needs converting first.

Annotation dict of one image:
    boxes   float64 (K, 4) x0, y0, x1, y1 in pixel edges of the image as `open_image` shows it
            (EXIF orientation applied)
    labels  int64 (K,) 0..len(classes) - 1
    masks   optional {"segmentations": [K entries], "height": h, "width": w}: each entry a COCO
            segmentation (a list of polygons [x1, y1, x2, y2, ...] in pixels, or an RLE dict
            {"size": [h, w], "counts": str | bytes | list}) or None; decoded only when loaded,
            with `pycocotools.mask`

Letterbox: the image is scaled by size / max(w, h) (aspect kept) and centred on a 114-grey
square; the padding is split evenly, the odd pixel going right / down. The pixels come from
`sources.open_image` (the one image reader: EXIF rotation, alpha over white, 16-bit scaling),
which resizes the whole image to the square; the square is then resized once more to the
letterboxed shape, so only the shorter side is resampled twice. Boxes are clipped to the image
(counted as `clipped_boxes`), then moved; a box under 1 pixel wide or high in the letterboxed
image is dropped (`dropped_boxes`) with its mask. Masks are decoded at the annotation's size and
resized with nearest-neighbour sampling. An image that cannot be read is skipped and counted
(`unreadable_images`), never a crash; images with no objects are valid.

Mistakes in the files (a missing or corrupt JSON / YAML / XML file, a COCO file or list naming
images that do not exist, a label line with the wrong number of columns, a label id beyond the
class list, an empty data set) raise a one-line `CnnkitError` naming the file, and the line
where there is one.
"""
from __future__ import annotations

import json
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..registry import CnnkitError
from .sources import IMAGE_EXTENSIONS, _image_files, open_image
from .targets import ObjectTargets

PAD_VALUE = 114  # letterbox grey

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")


@dataclass
class DetectionPool:
    """A detection data set in memory: class names, image files, one annotation dict per file.

    `counts`: what the reader skipped (e.g. `crowd_skipped`, `difficult_skipped`); it is added to
    the report of `load_detection_images`. `source`: what the pool was read from, for messages.
    """

    classes: list[str]
    files: list[str]
    annotations: list[dict]
    counts: dict[str, int] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        where = self.source or "detection pool"
        if len(self.files) != len(self.annotations):
            raise CnnkitError(f"{where}: {len(self.files)} files but {len(self.annotations)} annotations")
        k = len(self.classes)
        for f, a in zip(self.files, self.annotations):
            a["boxes"] = np.asarray(a.get("boxes", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
            a["labels"] = np.asarray(a.get("labels", np.zeros(0)), dtype=np.int64).reshape(-1)
            if len(a["boxes"]) != len(a["labels"]):
                raise CnnkitError(f"{where}: {f} has {len(a['boxes'])} boxes but {len(a['labels'])} labels")
            if len(a["labels"]) and (a["labels"].min() < 0 or a["labels"].max() >= k):
                raise CnnkitError(f"{where}: {f} has label {int(a['labels'].max())} beyond the {k} classes")

    def __len__(self) -> int:
        return len(self.files)


# ----------------------------------------------------------------------------------------------
# masks


_DECODE_LOCK = threading.Lock()  # warning filters are process-wide: one decode at a time


def decode_segmentation(seg: Any, height: int, width: int) -> np.ndarray:
    """One COCO segmentation (polygons, or RLE compressed or not) as a bool (height, width) mask."""
    from pycocotools import mask as mask_util

    if seg is None:
        return np.zeros((height, width), dtype=bool)
    if isinstance(seg, dict):
        h, w = (int(v) for v in seg["size"])
        counts = seg["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            rle = mask_util.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        else:
            rle = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        polys = [[float(v) for v in p] for p in seg if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), dtype=bool)
        rle = mask_util.merge(mask_util.frPyObjects(polys, height, width))
    with _DECODE_LOCK, warnings.catch_warnings():  # pycocotools trips a numpy 2 deprecation warning
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                                category=DeprecationWarning)
        return mask_util.decode(rle).astype(bool)


def _check_segmentation(seg: Any) -> str | None:
    """Why `seg` is not a COCO segmentation, or None when it is one."""
    if isinstance(seg, dict):
        if "size" not in seg or "counts" not in seg or len(seg["size"]) != 2:
            return "an RLE needs 'size': [h, w] and 'counts'"
        return None
    if isinstance(seg, list) and all(isinstance(p, list) and len(p) % 2 == 0 for p in seg):
        return None
    return "expected a list of polygons [x1, y1, x2, y2, ...] or an RLE dict"


# ----------------------------------------------------------------------------------------------
# COCO


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CnnkitError(f"{path} cannot be read ({type(e).__name__}: {e})") from None


def _read_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CnnkitError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None


def read_coco(json_path: str | os.PathLike, image_root: str | os.PathLike) -> DetectionPool:
    """A COCO instances file (`instances_*.json`) and its images folder.

    Classes are the categories in id order, mapped to 0..K-1 (names from the categories); boxes
    are `bbox` (x, y, w, h) as x0, y0, x1, y1; masks are the segmentations (polygons or RLE).
    Crowd annotations (`iscrowd: 1`) are skipped and counted (`crowd_skipped`). Every image in
    the file is kept, with or without annotations.
    """
    path, root = Path(json_path), Path(image_root)
    d = _read_json(path)
    if not isinstance(d, dict) or not isinstance(d.get("images"), list) or not isinstance(d.get("categories"), list):
        raise CnnkitError(f"{path} is not a COCO instances file (needs 'images' and 'categories' lists)")
    anns = d.get("annotations", [])
    if not isinstance(anns, list):
        raise CnnkitError(f"{path}: 'annotations' must be a list")
    try:
        cats = sorted(d["categories"], key=lambda c: int(c["id"]))
        cat_index = {int(c["id"]): i for i, c in enumerate(cats)}
        classes = [str(c.get("name", c["id"])) for c in cats]
        images = [(int(im["id"]), str(im["file_name"]), int(im["height"]), int(im["width"])) for im in d["images"]]
    except (KeyError, TypeError, ValueError) as e:
        raise CnnkitError(f"{path}: a category or image entry lacks {e} (categories need 'id' and 'name', "
                          "images 'id', 'file_name', 'height' and 'width')") from None
    if not images:
        raise CnnkitError(f"{path} lists no images: the data set is empty")
    if not classes:
        raise CnnkitError(f"{path} lists no categories")
    files = [str(root / name) for _, name, _, _ in images]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise CnnkitError(f"{path} names {len(missing)} image files that do not exist under {root}, "
                          f"the first: {missing[0]}")
    slot = {im_id: i for i, (im_id, _, _, _) in enumerate(images)}
    per_image: list[list[dict]] = [[] for _ in images]
    crowd = 0
    for a in anns:
        try:
            im_id, cat = int(a["image_id"]), int(a["category_id"])
        except (KeyError, TypeError, ValueError):
            raise CnnkitError(f"{path}: annotation {a.get('id', '?')} lacks an image_id or category_id") from None
        if im_id not in slot:
            raise CnnkitError(f"{path}: annotation {a.get('id', '?')} refers to image_id {im_id}, not in 'images'")
        if cat not in cat_index:
            raise CnnkitError(f"{path}: annotation {a.get('id', '?')} has category_id {cat}, "
                              f"not among the {len(classes)} categories")
        if a.get("iscrowd", 0):
            crowd += 1
            continue
        per_image[slot[im_id]].append(a)
    annotations = []
    for (_, name, h, w), items in zip(images, per_image):
        boxes, labels, segs = [], [], []
        for a in items:
            seg = a.get("segmentation")
            if seg is not None and (why := _check_segmentation(seg)):
                raise CnnkitError(f"{path}: annotation {a.get('id', '?')} has a bad segmentation: {why}")
            bbox = a.get("bbox")
            if bbox is None or len(bbox) != 4:
                raise CnnkitError(f"{path}: annotation {a.get('id', '?')} has no bbox [x, y, w, h]")
            x, y, bw, bh = (float(v) for v in bbox)
            boxes.append((x, y, x + bw, y + bh))
            labels.append(cat_index[int(a["category_id"])])
            segs.append(seg)
        ann = dict(boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels=np.asarray(labels, dtype=np.int64))
        if all(s is not None for s in segs):
            ann["masks"] = dict(segmentations=segs, height=h, width=w)
        annotations.append(ann)
    return DetectionPool(classes, files, annotations, counts=dict(crowd_skipped=crowd), source=str(path))


# ----------------------------------------------------------------------------------------------
# YOLO


def _read_yaml(path: Path) -> Any:
    import yaml

    text = _read_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise CnnkitError(f"{path}{line}: not valid YAML ({what})") from None


def _yolo_names(path: Path, d: dict) -> list[str]:
    names = d.get("names")
    if isinstance(names, dict):
        try:
            by_id = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise CnnkitError(f"{path}: 'names' keys must be class ids 0..K-1") from None
        if sorted(by_id) != list(range(len(by_id))):
            raise CnnkitError(f"{path}: 'names' ids must be 0..{len(by_id) - 1} with none missing, "
                              f"found {sorted(by_id)}")
        names = [by_id[i] for i in range(len(by_id))]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    elif names is None and isinstance(d.get("nc"), int):
        names = [str(i) for i in range(d["nc"])]
    else:
        raise CnnkitError(f"{path} has no 'names' (a list of class names or an {{id: name}} mapping)")
    if not names:
        raise CnnkitError(f"{path}: 'names' is empty")
    if isinstance(d.get("nc"), int) and d["nc"] != len(names):
        raise CnnkitError(f"{path}: nc is {d['nc']} but 'names' lists {len(names)} classes")
    return names


def _yolo_images(yaml_path: Path, root: Path, entry: Any) -> list[str]:
    """The image files of one split entry: folders (searched recursively) and/or txt lists."""
    out: list[str] = []
    for e in entry if isinstance(entry, list) else [entry]:
        p = Path(str(e)).expanduser()
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            out.extend(_image_files(p))
        elif p.is_file() and p.suffix == ".txt":
            lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
            listed = [str(Path(ln) if os.path.isabs(ln) else (p.parent / ln)) for ln in lines if ln]
            missing = [f for f in listed if not os.path.isfile(f)]
            if missing:
                raise CnnkitError(f"{p} names {len(missing)} image files that do not exist, the first: {missing[0]}")
            out.extend(os.path.normpath(f) for f in listed)
        elif p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            out.append(str(p))
        else:
            raise CnnkitError(f"{yaml_path}: {e!r} is neither a folder of images nor a .txt list of images "
                              f"(looked for {p})")
    return out


def label_path(image: str) -> str:
    """The YOLO label file of an image: the last `/images/` of the path becomes `/labels/`, the
    extension `.txt`."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head = sb.join(image.rsplit(sa, 1)) if sa in image else image
    return os.path.splitext(head)[0] + ".txt"


def _image_size(path: str) -> tuple[int, int]:
    """(width, height) of the image as `open_image` shows it: EXIF orientations 5-8 swap the sides."""
    with Image.open(path) as img:
        w, h = img.size
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            w, h = h, w
    return w, h


def _read_yolo_labels(path: str, num_classes: int, yaml_path: Path) -> tuple[list, list, list]:
    """(labels, normalised boxes cx cy w h, normalised polygons or None) of one label file."""
    labels, boxes, polys = [], [], []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return labels, boxes, polys
    except (OSError, UnicodeDecodeError) as e:
        raise CnnkitError(f"{path} cannot be read ({type(e).__name__}: {e})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != 5 and (len(cols) < 7 or len(cols) % 2 == 0):
            raise CnnkitError(f"{path}:{lineno}: expected 5 columns (class cx cy w h) or a polygon "
                              f"(class x1 y1 x2 y2 x3 y3 ...), found {len(cols)}")
        try:
            vals = [float(v) for v in cols]
        except ValueError:
            raise CnnkitError(f"{path}:{lineno}: not numbers: {line.strip()!r}") from None
        cls = int(vals[0])
        if cls != vals[0] or not 0 <= cls < num_classes:
            raise CnnkitError(f"{path}:{lineno}: label id {cols[0]} is beyond the {num_classes} classes "
                              f"of {yaml_path}")
        labels.append(cls)
        if len(cols) == 5:
            boxes.append(vals[1:])
            polys.append(None)
        else:
            xy = np.asarray(vals[1:]).reshape(-1, 2)
            lo, hi = xy.min(0), xy.max(0)
            boxes.append([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[0] - lo[0], hi[1] - lo[1]])
            polys.append(xy)
    return labels, boxes, polys


def read_yolo(yaml_path: str | os.PathLike, split: str = "train") -> DetectionPool:
    """An ultralytics data set YAML and one of its splits (`train`, `val`, `test`).

    `path` is the data set root (relative: to the YAML's folder; absent: the YAML's folder); the
    split is a folder of images (searched recursively), a .txt list of image paths (relative
    ones: to the list's folder), or a list of those. Labels: `labels/` beside `images/`, one
    `class cx cy w h` line per object in [0, 1] image units, or a polygon `class x1 y1 x2 y2 ...`
    (box from the polygon, and a mask). No label file, or an empty one: no objects. Masks come
    with the pool only where every object of an image is a polygon. Images whose header cannot
    be read are skipped and counted (`unreadable_images`).
    """
    path = Path(yaml_path)
    d = _read_yaml(path)
    if not isinstance(d, dict):
        raise CnnkitError(f"{path} is not a data set YAML (expected a mapping with path, train, val, names)")
    names = _yolo_names(path, d)
    root = Path(str(d.get("path") or ".")).expanduser()
    root = root if root.is_absolute() else path.parent / root
    if d.get(split) is None:
        known = [k for k in ("train", "val", "test") if d.get(k) is not None]
        raise CnnkitError(f"{path} has no {split!r} split (it has: {', '.join(known) or 'none'})")
    files = _yolo_images(path, root, d[split])
    if not files:
        raise CnnkitError(f"{path}: split {split!r} ({d[split]}) holds no images: the data set is empty")

    def one(f: str):
        labels, boxes, polys = _read_yolo_labels(label_path(f), len(names), path)
        try:
            w, h = _image_size(f)
        except Exception:  # unreadable: counted and skipped
            return None
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * [w, h, w, h]
        ann = dict(boxes=np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1),
                   labels=np.asarray(labels, dtype=np.int64))
        if all(p is not None for p in polys):
            ann["masks"] = dict(segmentations=[[(p * [w, h]).ravel().tolist()] for p in polys], height=h, width=w)
        return ann

    results = _map(one, files)
    keep = [i for i, r in enumerate(results) if r is not None]
    if not keep:
        raise CnnkitError(f"{path}: none of the {len(files)} images of split {split!r} could be read, "
                          f"e.g. {files[0]}")
    return DetectionPool(names, [files[i] for i in keep], [results[i] for i in keep],
                         counts=dict(unreadable_images=len(files) - len(keep)), source=str(path))


# ----------------------------------------------------------------------------------------------
# Pascal VOC


def _parse_xml(path: Path):
    import xml.etree.ElementTree as ET

    try:
        return ET.parse(path).getroot()
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file") from None
    except ET.ParseError as e:
        line = e.position[0] if getattr(e, "position", None) else "?"
        raise CnnkitError(f"{path}:{line}: not valid XML ({e})") from None
    except OSError as e:
        raise CnnkitError(f"{path} cannot be read ({type(e).__name__}: {e})") from None


def _voc_objects(path: Path) -> tuple[str | None, list[tuple[str, tuple, bool]]]:
    """(file name, [(class name, (xmin, ymin, xmax, ymax), difficult)]) of one VOC XML file."""
    root = _parse_xml(path)
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        try:
            box = tuple(float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise CnnkitError(f"{path}: object {name!r} has no numeric bndbox xmin, ymin, xmax, ymax") from None
        if not name:
            raise CnnkitError(f"{path}: an object has no <name>")
        objects.append((name, box, (obj.findtext("difficult") or "0").strip() == "1"))
    return root.findtext("filename"), objects


def read_voc(root: str | os.PathLike, split: str = "train", classes: list[str] | None = None) -> DetectionPool:
    """A Pascal VOC folder (`Annotations/*.xml`, `JPEGImages/`, `ImageSets/Main/{split}.txt`).

    Classes: `classes` when given; else VOC's 20 in the standard order when every name found is
    VOC's, else the names of all `Annotations/*.xml` files, sorted (so every split agrees).
    Boxes: VOC's 1-based pixel coordinates become 0-based edges (xmin - 1, ymin - 1, xmax, ymax).
    Objects marked difficult are skipped and counted (`difficult_skipped`).
    """
    root = Path(root)
    list_file = root / "ImageSets" / "Main" / f"{split}.txt"
    try:
        ids = [ln.split()[0] for ln in list_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except FileNotFoundError:
        raise CnnkitError(f"{list_file}: no such file (a VOC folder holds ImageSets/Main/{split}.txt)") from None
    if not ids:
        raise CnnkitError(f"{list_file} lists no images: the data set is empty")
    parsed = [_voc_objects(root / "Annotations" / f"{i}.xml") for i in ids]
    files = []
    for i, (fname, _) in zip(ids, parsed):
        f = root / "JPEGImages" / fname if fname else None
        files.append(str(f if f is not None and f.is_file() else root / "JPEGImages" / f"{i}.jpg"))
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise CnnkitError(f"{list_file} names {len(missing)} images that do not exist in {root / 'JPEGImages'}, "
                          f"the first: {missing[0]}")
    if classes is None:
        found = {name for _, objs in parsed for name, _, _ in objs}
        if found <= set(VOC_CLASSES):
            classes = list(VOC_CLASSES)
        else:
            for x in sorted((root / "Annotations").glob("*.xml")):
                found |= {name for name, _, _ in _voc_objects(x)[1]}
            classes = sorted(found)
    index = {c: k for k, c in enumerate(classes)}
    annotations, difficult = [], 0
    for i, (_, objs) in zip(ids, parsed):
        boxes, labels = [], []
        for name, (x0, y0, x1, y1), hard in objs:
            if name not in index:
                raise CnnkitError(f"{root / 'Annotations' / f'{i}.xml'}: class {name!r} is not among the "
                                  f"{len(classes)} classes")
            if hard:
                difficult += 1
                continue
            boxes.append((x0 - 1, y0 - 1, x1, y1))
            labels.append(index[name])
        annotations.append(dict(boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                                labels=np.asarray(labels, dtype=np.int64)))
    return DetectionPool(list(classes), files, annotations, counts=dict(difficult_skipped=difficult),
                         source=str(list_file))


# ----------------------------------------------------------------------------------------------
# loading


def _map(fn, items: list) -> list:
    """fn over items, in threads when there are many (PIL and pycocotools release the GIL)."""
    threads = max(1, min(8, os.cpu_count() or 1))
    if len(items) < 64 or threads == 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(threads) as ex:
        return list(ex.map(fn, items))


def letterbox_geometry(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """(new width, new height, left pad, top pad) of an image letterboxed into `size` x `size`."""
    scale = size / max(width, height)
    nw, nh = max(1, min(size, round(width * scale))), max(1, min(size, round(height * scale)))
    return nw, nh, (size - nw) // 2, (size - nh) // 2


def _nearest(mask: np.ndarray, nh: int, nw: int) -> np.ndarray:
    h, w = mask.shape
    rows = np.minimum(((np.arange(nh) + 0.5) * (h / nh)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(nw) + 0.5) * (w / nw)).astype(np.int64), w - 1)
    return mask[rows[:, None], cols[None, :]]


def _load_one(path: str, ann: dict, size: int, channels: int, with_masks: bool, source: str):
    """(image, boxes, labels, masks, clipped, dropped) of one file, or None when unreadable."""
    try:
        w, h = _image_size(path)
        square = open_image(path, channels, size)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    nw, nh, left, top = letterbox_geometry(w, h, size)
    out = np.full((channels, size, size), PAD_VALUE, dtype=np.uint8)
    if (nw, nh) != (size, size):
        modes = "L" if channels == 1 else "RGB"
        img = Image.fromarray(square[0] if channels == 1 else square.transpose(1, 2, 0), modes)
        a = np.asarray(img.resize((nw, nh), Image.BILINEAR), dtype=np.uint8)
        square = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    out[:, top:top + nh, left:left + nw] = square

    boxes = ann["boxes"]
    clipped = np.clip(boxes, 0, [w, h, w, h])
    was_clipped = (clipped != boxes).any(1)
    moved = clipped * [nw / w, nh / h, nw / w, nh / h] + [left, top, left, top]
    keep = ((moved[:, 2] - moved[:, 0]) >= 1) & ((moved[:, 3] - moved[:, 1]) >= 1)
    masks = None
    if with_masks:
        m = ann["masks"]
        masks = np.zeros((int(keep.sum()), size, size), dtype=bool)
        for j, k in enumerate(np.flatnonzero(keep)):
            try:
                full = decode_segmentation(m["segmentations"][k], int(m["height"]), int(m["width"]))
            except Exception as e:
                raise CnnkitError(f"{source}: object {k} of {path} has a segmentation pycocotools cannot "
                                  f"decode ({type(e).__name__}: {e})") from None
            masks[j, top:top + nh, left:left + nw] = _nearest(full, nh, nw)
    return (out, moved[keep].astype(np.float32), ann["labels"][keep], masks,
            int((was_clipped & keep).sum()), int((~keep).sum()))


def load_detection_images(pool: DetectionPool, size: int, channels: int = 3, masks: bool | None = None
                          ) -> tuple[torch.Tensor, ObjectTargets, dict]:
    """Every readable image of `pool` letterboxed to `size` (see the module docstring).

    Returns images uint8 (N, channels, size, size) in pool order (unreadable files left out),
    their `ObjectTargets`, and a report of counts: images, objects, images_without_objects,
    unreadable_images, clipped_boxes (cut to the image, kept), dropped_boxes (under 1 pixel after
    clipping), objects_without_masks, plus the reader's own counts (e.g. crowd_skipped).
    `masks`: None gives masks when every object of the pool has one; True demands them.
    """
    if channels not in (1, 3):
        raise CnnkitError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if size < 1:
        raise CnnkitError(f"image size must be >= 1 pixel, got {size}")
    where = pool.source or "detection pool"
    if not len(pool):
        raise CnnkitError(f"{where}: the data set is empty (no images)")
    lacking = sum(len(a["labels"]) for a in pool.annotations if "masks" not in a) + sum(
        sum(s is None for s in a["masks"]["segmentations"]) for a in pool.annotations if "masks" in a)
    if masks and lacking:
        raise CnnkitError(f"{where}: masks asked for, but {lacking} objects have no segmentation")
    with_masks = lacking == 0 if masks is None else bool(masks)
    with_masks = with_masks and any("masks" in a for a in pool.annotations)

    results = _map(lambda i: _load_one(pool.files[i], pool.annotations[i], size, channels, with_masks, where),
                   list(range(len(pool))))
    ok = [r for r in results if not isinstance(r, str)]
    bad = [(f, r) for f, r in zip(pool.files, results) if isinstance(r, str)]
    if not ok:
        raise CnnkitError(f"{where}: none of the {len(pool)} images could be read, e.g. {bad[0][0]}: {bad[0][1]}")
    if bad:
        warnings.warn(f"{where}: skipped {len(bad)} of {len(pool)} images that could not be read: "
                      f"{', '.join(f for f, _ in bad[:3])}{', ...' if len(bad) > 3 else ''} "
                      f"(first error: {bad[0][1]})", stacklevel=2)
    images = torch.from_numpy(np.stack([r[0] for r in ok]))
    targets = ObjectTargets.from_list([dict(boxes=torch.from_numpy(r[1]).reshape(-1, 4), labels=torch.from_numpy(r[2]),
                                            masks=None if r[3] is None else torch.from_numpy(r[3]))
                                       for r in ok])
    if with_masks and targets.masks is None:  # every image without objects
        targets = targets.with_(masks=torch.zeros(0, size, size, dtype=torch.bool))
    report = dict(images=len(ok), objects=int(targets.starts[-1]),
                  images_without_objects=int((targets.counts() == 0).sum()),
                  unreadable_images=len(bad), clipped_boxes=sum(r[4] for r in ok),
                  dropped_boxes=sum(r[5] for r in ok), objects_without_masks=0 if with_masks else lacking)
    for k, v in pool.counts.items():
        report[k] = report.get(k, 0) + v
    return images, targets, report
