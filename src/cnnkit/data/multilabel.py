"""Data with a set of labels per image (multi-label, CheXNet): `load_data(..., targets="labels")`.

A split's targets are one uint8 tensor (N, K): 1 the label is present, 0 absent, `UNCERTAIN` (254)
stated as uncertain by the source (CheXpert's -1), `IGNORE` (255) counts for nothing. What an
uncertain label becomes is the training's choice, not the data's: the multilabel task's
`uncertain` option applies `resolve_uncertain` (U-Ones, U-Zeros or U-Ignore of the CheXpert
paper). A single-label data set gives class indices (N,) instead (`load_data` falls back to them),
which the multilabel task reads as sets of one label. Sources:

    shapes       the multi-object scenes of the shapes world (`data/scenes.py`, the detection
                 scenes, 64 px): which of the shape classes are in the picture
    chestxray14  NIH ChestX-ray14: `Data_Entry_2017.csv` (columns `Image Index`, `Finding Labels`
                 as `A|B`, `No Finding` for none) over the image folder (images anywhere below it,
                 e.g. images_001/images/); the 14 findings in CheXNet's order. The official
                 `train_val_list.txt` / `test_list.txt` split when there, else a held-out fraction
    chexpert     Stanford CheXpert: `train.csv` / `valid.csv` (`Path` and the 14 observation
                 columns: 1 positive, 0 negative, -1 uncertain, blank 0). --data-dir is the
                 `CheXpert-v1.0-small` folder (or a CSV in it); the CSV's paths may start with that
                 folder's name, as in the real set, or be relative to the folder itself

Files are read by the project's one image reader (`sources.load_images`: whole image resized to
the square `image_size`, default 224), after `num_train` / `num_val` have chosen the rows; splits
too large for memory are streamed. Held-out validation images are drawn by patient where the CSV
says who the patient is (`Patient ID`, CheXpert's `patientNNNNN` folders), so that no patient is on
both sides. Mistakes give one line each: a CSV that lacks a required column, a value that is not a
label, a finding not among the 14, images the CSV names that are not there (how many, the first few).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch

from ..models.densenet import CHESTXRAY14_LABELS
from ..registry import CnnkitError, suggest
from .datasets import DatasetSpec, ImageSplit, _register

UNCERTAIN = 254
IGNORE = 255
FILE_SIZE = 224  # CheXNet's input side
POLICIES = {"ones": 1, "zeros": 0, "ignore": IGNORE}  # CheXpert's U-Ones, U-Zeros, U-Ignore

CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
_SHOWN = 3  # missing files named in an error


def presence_from_objects(targets, n: int, k: int) -> torch.Tensor:
    """(N, K) uint8 multi-hot: which of the K classes have at least one object in each image."""
    out = torch.zeros(n, k, dtype=torch.uint8)
    if len(targets.labels):
        out[targets.image_index(), targets.labels] = 1
    return out


def resolve_uncertain(targets: torch.Tensor, policy: str) -> torch.Tensor:
    """`targets` with every `UNCERTAIN` entry made 1 (U-Ones), 0 (U-Zeros) or `IGNORE` (U-Ignore)."""
    if policy not in POLICIES:
        raise suggest(str(policy), POLICIES, "uncertain-label policy")
    if targets.dtype != torch.uint8:
        return targets  # class indices or float targets carry no uncertain marks
    return torch.where(targets == UNCERTAIN, torch.tensor(POLICIES[policy], dtype=torch.uint8,
                                                          device=targets.device), targets)


# ------------------------------------------------------------------ reading the CSV files


def _rows(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[dict]]:
    if not path.is_file():
        raise CnnkitError(f"{path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise CnnkitError(f"{path} is not a readable CSV file ({type(e).__name__}: {e})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise CnnkitError(f"{path} lacks the column{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(repr(c) for c in missing)} (its columns: {', '.join(header[:8]) or 'none'}"
                          f"{', ...' if len(header) > 8 else ''})")
    return header, rows


def _missing_error(where, missing: list[str], total: int, under: Path) -> CnnkitError:
    first = ", ".join(missing[:_SHOWN]) + (", ..." if len(missing) > _SHOWN else "")
    return CnnkitError(f"{where} names {len(missing):,} of its {total:,} images that are not under {under} "
                       f"(e.g. {first}); put the images there or remove their rows")


def read_chestxray14(csv_path: Path, root: Path) -> tuple[list[str], np.ndarray, list[str], list[str]]:
    """(image paths, uint8 (N, 14) labels, image names, patient ids) of a `Data_Entry_2017.csv`."""
    header, rows = _rows(csv_path, ("Image Index", "Finding Labels"))
    index = {n: i for i, n in enumerate(CHESTXRAY14_LABELS)}
    labels = np.zeros((len(rows), len(index)), dtype=np.uint8)
    for r, row in enumerate(rows):
        for finding in (row["Finding Labels"] or "").split("|"):
            finding = finding.strip()
            if not finding or finding == "No Finding":
                continue
            if finding not in index:
                err = suggest(finding, list(index) + ["No Finding"], "finding")
                raise CnnkitError(f"{csv_path}, row {r + 2}: {err}")
            labels[r, index[finding]] = 1
    names = [(row["Image Index"] or "").strip() for row in rows]
    by_name = {}
    for f in _walk_images(root):
        by_name.setdefault(os.path.basename(f), f)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise _missing_error(csv_path, missing, len(names), root)
    patients = [(row.get("Patient ID") or "").strip() for row in rows] if "Patient ID" in header else []
    return [by_name[n] for n in names], labels, names, patients


def _walk_images(root: Path) -> list[str]:
    from .sources import _image_files

    return _image_files(root)


def chexpert_value(text: str, where: str) -> int:
    """One CheXpert cell: 1 positive, 0 negative, -1 uncertain (-> UNCERTAIN), blank 0 (not mentioned)."""
    t = (text or "").strip()
    if not t:
        return 0
    try:
        v = float(t)
    except ValueError:
        v = None
    if v == 1:
        return 1
    if v == 0:
        return 0
    if v == -1:
        return UNCERTAIN
    raise CnnkitError(f"{where}: {t!r} is not a CheXpert label (1 positive, 0 negative, -1 uncertain, blank)")


def _resolve_path(p: str, root: Path) -> str | None:
    """A CSV path: relative to the data folder's parent (the real set), to the folder, or below its first part."""
    rel = Path(p.strip().replace("\\", "/"))
    if rel.is_absolute():
        return str(rel) if rel.is_file() else None
    for cand in (root.parent / rel, root / rel, root / Path(*rel.parts[1:]) if len(rel.parts) > 1 else None):
        if cand is not None and cand.is_file():
            return str(cand)
    return None


def read_chexpert(csv_path: Path, root: Path, labels: tuple[str, ...] = CHEXPERT_LABELS
                  ) -> tuple[list[str], np.ndarray, list[str]]:
    """(image paths, uint8 (N, len(labels)) targets with `UNCERTAIN` marks, patient ids) of a CheXpert CSV."""
    _, rows = _rows(csv_path, ("Path", *labels))
    out = np.zeros((len(rows), len(labels)), dtype=np.uint8)
    files, missing, patients = [], [], []
    for r, row in enumerate(rows):
        for j, name in enumerate(labels):
            out[r, j] = chexpert_value(row[name], f"{csv_path}, row {r + 2}, column {name!r}")
        p = (row["Path"] or "").strip()
        f = _resolve_path(p, root) if p else None
        if f is None:
            missing.append(p or f"(row {r + 2}: empty Path)")
        files.append(f)
        patients.append(next((part for part in Path(p).parts if part.startswith("patient")), ""))
    if missing:
        raise _missing_error(csv_path, missing, len(rows), root)
    return files, out, patients


# ------------------------------------------------------------------ splits


def group_holdout(n: int, frac: float, groups: list[str] | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) positions, sorted: about `frac` of the rows held out at random (seeded); with
    `groups` (patient ids), whole groups go to one side."""
    k = int(round(frac * n))
    if k < 1 or k > n - 1:
        raise CnnkitError(f"val={frac} of {n} images leaves {'no validation' if k < 1 else 'no training'} "
                          "images; use another fraction or more data")
    rng = np.random.default_rng([seed, 1])
    if not groups or not all(groups):
        perm = rng.permutation(n)
        return np.sort(perm[k:]), np.sort(perm[:k])
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    sizes = np.bincount(inverse)
    order = rng.permutation(len(names))
    take = order[:max(1, int(np.searchsorted(np.cumsum(sizes[order]), k)) + 1)]
    if len(take) == len(names):
        take = take[:-1]
    if not len(take):
        raise CnnkitError(f"val={frac}: the {n} images belong to one patient; validation needs another")
    is_val = np.isin(inverse, take)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _subsample(idx: np.ndarray, k: int | None, seed: int, stream: int) -> np.ndarray:
    if k is None or k >= len(idx):
        return idx
    return idx[np.sort(np.random.default_rng([seed, stream]).choice(len(idx), size=k, replace=False))]


def _read_split(files: list[str], targets: np.ndarray, chans: int, size: int, stream: bool) -> ImageSplit:
    """Images of `files` through the project's reader, in memory or streamed; unreadable files are skipped."""
    from . import sources

    t = torch.from_numpy(np.ascontiguousarray(targets))
    if stream:
        return ImageSplit(None, t, sources.ImageFileDataset(files, targets, chans, size))
    images, ok, bad = sources.load_images(files, chans, size)
    return ImageSplit(torch.from_numpy(images), t[torch.from_numpy(ok)], skipped=len(bad))


def _files_loader(find):
    """A loader over `find(root, need_test) -> (train (files, targets, groups), val or None, classes, source)`."""

    def load(req, frac, log):
        from . import sources
        from .datasets import _max_in_memory

        if req.data_dir is None:
            raise CnnkitError("this data set reads your files: pass --data-dir (data_dir=) pointing at them")
        if req.download:
            raise CnnkitError("multi-label data sets are read from your files and cannot be downloaded; "
                              "drop --download")
        root = Path(req.data_dir).expanduser()
        (files, targets, groups), official, classes, source = find(root, frac == "test")
        if frac == "test" and official is None:
            frac = 0.1
            log(f"{source}: no official validation split; holding out 10% of the images (patient-wise where "
                "known; --val sets the fraction)")
        if not files:
            raise CnnkitError(f"{source} lists no images")
        tr = _subsample(np.arange(len(files)), req.num_train, req.seed, 0)
        if frac == "test":
            val_files, val_targets, _ = official
            va, val_name = _subsample(np.arange(len(val_files)), req.num_val, req.seed, 2), "test"
        else:
            sub_groups = [groups[i] for i in tr] if groups else None
            a, b = group_holdout(len(tr), frac, sub_groups, req.seed)
            tr, va = tr[a], _subsample(tr[b], req.num_val, req.seed, 2)
            val_files, val_targets, val_name = files, targets, "holdout"
        _, native, _ = sources.first_readable([files[i] for i in tr[:1000]])
        c, s = req.in_chans or native, req.image_size or FILE_SIZE
        stream = (len(tr) + len(va)) * c * s * s > _max_in_memory(None)
        train = _read_split([files[i] for i in tr], targets[tr], c, s, stream)
        val = _read_split([val_files[i] for i in va], val_targets[va], c, s, stream)
        return train, val, list(classes), c, s, val_name, source

    return load


def _read_list(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _chestxray14(root: Path, need_test: bool):
    if root.is_file():
        csv_path, root = root, root.parent
    else:
        found = sorted(root.glob("Data_Entry_2017*.csv")) if root.is_dir() else []
        if not found:
            raise CnnkitError(f"{root}: no Data_Entry_2017.csv (NIH ChestX-ray14's label file); pass --data-dir "
                              "pointing at the folder that holds it and the images")
        csv_path = found[0]
    files, labels, names, patients = read_chestxray14(csv_path, root)
    test_names = _read_list(root / "test_list.txt")
    if test_names is None:
        return (files, labels, patients), None, CHESTXRAY14_LABELS, str(csv_path)
    trainval = _read_list(root / "train_val_list.txt")
    where = {n: i for i, n in enumerate(names)}
    unknown = [n for n in (test_names + (trainval or [])) if n not in where]
    if unknown:
        raise CnnkitError(f"{root}: the split lists name {len(unknown):,} images that {csv_path.name} does not "
                          f"(e.g. {', '.join(unknown[:_SHOWN])})")
    test_rows = np.array([where[n] for n in test_names], dtype=np.int64)
    if trainval is not None:
        train_rows = np.array([where[n] for n in trainval], dtype=np.int64)
    else:
        train_rows = np.setdiff1d(np.arange(len(names)), test_rows)

    def part(rows):
        return [files[i] for i in rows], labels[rows], [patients[i] for i in rows] if patients else []

    train = part(train_rows)
    return train, (part(test_rows) if need_test else None), CHESTXRAY14_LABELS, str(csv_path)


def _chexpert(root: Path, need_test: bool):
    if root.is_file():
        train_csv, root = root, root.parent
    else:
        train_csv = root / "train.csv"
        if not train_csv.is_file():
            raise CnnkitError(f"{root}: no train.csv (CheXpert's label file); pass --data-dir pointing at the "
                              "CheXpert-v1.0-small folder, or at the CSV itself")
    train = read_chexpert(train_csv, root)
    valid_csv = train_csv.with_name("valid.csv")
    val = read_chexpert(valid_csv, root) if need_test and valid_csv.is_file() and valid_csv != train_csv else None
    return train, val, CHEXPERT_LABELS, str(train_csv)


def _shapes(req, frac, log):
    from .detection import SCENE_SIZE, SCENES_TEST_OFFSET, SCENES_TRAIN, SCENES_VAL, _holdout
    from .scenes import make_scene_batch
    from .shapes import SHAPE_CLASSES

    c, s, k = req.in_chans or 3, req.image_size or SCENE_SIZE, len(SHAPE_CLASSES)

    def scenes(n, offset=0):
        images, targets = make_scene_batch(n, seed=req.seed, size=s, channels=c, offset=offset)
        return images, presence_from_objects(targets, n, k)

    images, labels = scenes(req.num_train or SCENES_TRAIN)
    if frac == "test":
        vi, vl = scenes(req.num_val or SCENES_VAL, SCENES_TEST_OFFSET)
        train, val, val_name = ImageSplit(images, labels), ImageSplit(vi, vl), "test"
    else:
        train, val = _holdout(images, labels, frac, req.seed, req.num_val)
        val_name = "holdout"
    return train, val, list(SHAPE_CLASSES), c, s, val_name, "generated"


LABEL_LOADERS = {"shapes_labels": _shapes, "chestxray14": _files_loader(_chestxray14),
                 "chexpert": _files_loader(_chexpert)}

_register(DatasetSpec("chestxray14", "NIH ChestX-ray14: Data_Entry_2017.csv over the X-ray images, 14 findings "
                      "(your files)", None, None, len(CHESTXRAY14_LABELS), None, None, None,
                      "--data-dir pointing at the folder with Data_Entry_2017.csv and the images",
                      dense={"labels": "chestxray14"}))
_register(DatasetSpec("chexpert", "Stanford CheXpert: train.csv / valid.csv, 14 observations with uncertain "
                      "labels (your files)", None, None, len(CHEXPERT_LABELS), None, None, None,
                      "--data-dir pointing at the CheXpert-v1.0-small folder", dense={"labels": "chexpert"}))
