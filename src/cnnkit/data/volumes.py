"""Volumes with a class per voxel, for nnU-Net's self-configuration (`cnnkit plan`, `cnnkit/plan/`).

A `Case` is one image: float32 (C, Z, Y, X) (a 2-D case has Z == 1), its uint8 label (Z, Y, X) with
0 = background and `IGNORE` (255) for voxels that count for nothing, and its voxel spacing (z, y, x) in
mm. Arrays are always (z, y, x), whatever the file's order. Sources of `load_volumes`:

    shapes-volumes  generated: CT-like 3-D volumes of varying size (z 16-40, y/x 40-80 voxels) and
                    anisotropic spacing (z 2.5-4.0 mm, in-plane 0.7-1.0 mm): a body of soft tissue in
                    air with a sphere, a box and a cylinder at random places and sizes in mm, each
                    class its own Hounsfield-like mean, Gaussian noise and a smooth bias. Case i is a
                    pure function of (seed, i). 60 cases by default, in about a second.
    shapes-slices   generated, 2-D (dims=2): scan-like slices (80-140 px, 0.6-1.0 mm) with an
                    ellipse, a rectangle and a ring.
    nnunet          nnU-Net's raw layout, read as is (--data-dir, or DATA itself a folder):
                    dataset.json, imagesTr/CASE_0000.nii.gz (one file per channel: _0000, _0001,
                    ...), labelsTr/CASE.nii.gz; imagesTs/ is not read. NIfTI needs nibabel (the
                    `medical` extra); file_ending ".png" reads 2-D PNG cases (an RGB file is 3 channels).

Each mistake in the files is one `CnnkitError` line that names the case: image and label of different
shapes or affines, a channel of another shape than the first, an empty volume (no voxels) or a
constant one (every voxel the same value: an empty or broken export, which no normalisation can use),
a missing label or channel file, dataset.json without a required key, label values dataset.json does
not name, and a folder that is not an nnU-Net dataset.

`preprocess(case, plan)` does what the plan says (crop to the nonzero region, resample to the target
spacing, normalise) and keeps in `case.meta` what `restore` needs to put a prediction back on the
original grid.
"""
from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import CnnkitError, suggest
from .segmentation import IGNORE

__all__ = [
    "ANISOTROPY",
    "VOLUME_SOURCES",
    "Case",
    "VolumeSet",
    "crop_box",
    "dataset_specs",
    "load_volumes",
    "preprocess",
    "resample",
    "restore",
    "save_nnunet",
    "split_cases",
]

ANISOTROPY = 3.0  # an axis whose spacing is more than this many times the finest is "anisotropic"


@dataclass
class Case:
    """One image with its label. `meta` holds what preprocessing did (see `preprocess`)."""

    name: str
    image: np.ndarray  # float32 (C, Z, Y, X)
    label: np.ndarray | None  # uint8 (Z, Y, X); 0 background, IGNORE (255) ignored
    spacing: tuple[float, float, float]  # (z, y, x) mm
    affine: np.ndarray | None = None  # 4x4 from NIfTI, else None
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.image.shape[1:])


@dataclass
class VolumeSet:
    """A data set of cases. `load` holds the arguments that load it again (the plan keeps them)."""

    name: str
    cases: list[Case]
    classes: list[str]  # classes[0] == "background"
    channels: list[str]  # modality per channel, e.g. ["CT"]
    dims: int  # 3, or 2 for sets of 2-D images
    source: str  # "generated" or the folder
    load: dict = field(default_factory=dict)


# ------------------------------------------------------------------ generated volumes

SHAPES_VOLUME_CLASSES = ["background", "sphere", "box", "cylinder"]
SHAPES_SLICE_CLASSES = ["background", "ellipse", "rectangle", "ring"]
AIR, TISSUE = -1000.0, 40.0  # Hounsfield-like values of the surroundings and the body
CLASS_HU = (150.0, -90.0, 300.0)  # mean of classes 1, 2, 3 (contrast-filled, fat-like, bone-like)
NOISE_HU = 25.0
DEFAULT_CASES = {"shapes-volumes": 60, "shapes-slices": 100}


def _grid(shape, spacing):
    """Voxel-centre coordinates in mm, (z, y, x) each broadcastable to `shape`."""
    return np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij", sparse=True)


def _inside(kind: str, z, y, x, c, r) -> np.ndarray:
    """Voxels of one object: centre c (mm), half-sizes r (mm) per axis."""
    dz, dy, dx = (z - c[0]) / r[0], (y - c[1]) / r[1], (x - c[2]) / r[2]
    if kind in ("sphere", "ellipse"):
        return dz ** 2 + dy ** 2 + dx ** 2 <= 1.0
    if kind in ("box", "rectangle"):
        return (np.abs(dz) <= 1.0) & (np.abs(dy) <= 1.0) & (np.abs(dx) <= 1.0)
    if kind == "cylinder":  # axis along z
        return (np.abs(dz) <= 1.0) & (dy ** 2 + dx ** 2 <= 1.0)
    rr = dy ** 2 + dx ** 2  # ring: an annulus of inner radius 0.55
    return (np.abs(dz) <= 1.0) & (rr <= 1.0) & (rr >= 0.55 ** 2)


def _make_case(seed: int, i: int, dims: int) -> Case:
    rng = np.random.default_rng([int(seed), int(i), dims])
    if dims == 3:
        shape = (int(rng.integers(16, 41)), int(rng.integers(40, 81)), int(rng.integers(40, 81)))
        inplane = float(rng.uniform(0.7, 1.0))
        spacing = (float(rng.uniform(2.5, 4.0)), inplane, inplane)
        kinds = SHAPES_VOLUME_CLASSES[1:]
    else:
        shape = (1, int(rng.integers(80, 141)), int(rng.integers(80, 141)))
        inplane = float(rng.uniform(0.6, 1.0))
        spacing = (1.0, inplane, inplane)
        kinds = SHAPES_SLICE_CLASSES[1:]
    spacing = tuple(round(s, 4) for s in spacing)
    ext = [n * s for n, s in zip(shape, spacing)]  # field of view in mm
    z, y, x = _grid(shape, spacing)
    body_r = (ext[1] * rng.uniform(0.40, 0.48), ext[2] * rng.uniform(0.40, 0.48))
    body = np.broadcast_to(((y - ext[1] / 2) / body_r[0]) ** 2 + ((x - ext[2] / 2) / body_r[1]) ** 2 <= 1.0, shape)
    label = np.zeros(shape, dtype=np.uint8)
    present = [k for k in range(3) if rng.random() < 0.75] or [int(rng.integers(0, 3))]
    placed: list[tuple[np.ndarray, float, float]] = []  # centre, in-plane and z half-extent (mm)
    for k in present:
        kind = kinds[k]
        if kind in ("sphere", "ellipse"):
            r = rng.uniform(6.0, 13.0, size=3)
        elif kind in ("box", "rectangle"):
            r = rng.uniform(5.0, 11.0, size=3)
        else:  # cylinder / ring: round in-plane, long along z
            rad = rng.uniform(5.0, 10.0)
            r = np.array([rng.uniform(10.0, 22.0), rad, rad])
        if dims == 2:
            r[0] = 1e6  # the slice cuts every object
        r[0] = min(r[0], ext[0] / 2 * 0.9)  # fits the volume along z
        bound = float(np.linalg.norm(r[1:]))
        for _ in range(60):  # inside the body, away from the objects already there
            a, rho = rng.uniform(0, 2 * math.pi), math.sqrt(rng.uniform(0, 1))
            cy = ext[1] / 2 + rho * max(body_r[0] - r[1] - 1.0, 0.0) * math.sin(a)
            cx = ext[2] / 2 + rho * max(body_r[1] - r[2] - 1.0, 0.0) * math.cos(a)
            cz = rng.uniform(r[0], ext[0] - r[0]) if dims == 3 else ext[0] / 2
            c = np.array([cz, cy, cx])
            if all(np.linalg.norm((c - pc)[1:]) > bound + pb or abs(c[0] - pc[0]) > r[0] + pz
                   for pc, pb, pz in placed):
                placed.append((c, bound, r[0]))
                label[_inside(kind, z, y, x, c, r) & body] = k + 1
                break
    image = np.where(body, TISSUE, AIR).astype(np.float32)
    for k in range(3):
        image[label == k + 1] = CLASS_HU[k]
    # a smooth bias (scanner and patient), then noise
    phase = rng.uniform(0, 2 * math.pi, size=3)
    bias = 12.0 * (np.cos(2 * math.pi * y / ext[1] + phase[0]) * np.cos(2 * math.pi * x / ext[2] + phase[1])
                   + np.cos(math.pi * z / max(ext[0], 1.0) + phase[2]))
    image = image + np.where(body, bias, 0.0) + rng.normal(0.0, NOISE_HU, size=shape)
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])  # (x, y, z) file axes, as NIfTI
    return Case(f"case_{i:04d}", image[None].astype(np.float32), label, spacing, affine)


def _generated(name: str, dims: int):
    def load(data_dir, num_cases, seed) -> VolumeSet:
        n = DEFAULT_CASES[name] if num_cases is None else num_cases
        cases = [_make_case(seed, i, dims) for i in range(n)]
        classes = SHAPES_VOLUME_CLASSES if dims == 3 else SHAPES_SLICE_CLASSES
        return VolumeSet(name, cases, list(classes), ["CT"], dims, "generated")

    return load


# ------------------------------------------------------------------ nnU-Net's raw layout

NNUNET_LAYOUT = ("dataset.json, imagesTr/CASE_0000.nii.gz (a file per channel: _0000, _0001, ...) and "
                 "labelsTr/CASE.nii.gz")


def _nibabel():
    try:
        import nibabel
    except ImportError:
        raise CnnkitError("reading NIfTI files needs nibabel: pip install cnnkit[medical] (or pip install "
                          "nibabel)") from None
    return nibabel


def read_dataset_json(root: Path) -> dict:
    """dataset.json -> {"classes", "label_ids", "ignore_id", "channels", "file_ending", "num_training"};
    nnU-Net v2 (`channel_names`, `labels` {name: id}) and v1 (`modality`, `labels` {id: name})."""
    path = root / "dataset.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CnnkitError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise CnnkitError(f"{path}: expected a JSON object with channel_names, labels, numTraining, file_ending")
    v1 = "modality" in meta and "channel_names" not in meta
    required = ["modality", "labels", "numTraining"] if v1 else ["channel_names", "labels", "numTraining",
                                                                  "file_ending"]
    missing = [k for k in required if k not in meta]
    if missing:
        raise CnnkitError(f"{path}: missing required key{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(missing)} (nnU-Net v2 needs {', '.join(required)})")
    chans = meta["modality"] if v1 else meta["channel_names"]
    if not isinstance(chans, dict) or not chans:
        raise CnnkitError(f"{path}: {'modality' if v1 else 'channel_names'} must map channel index to a name, "
                          f'e.g. {{"0": "CT"}}')
    try:
        channels = [str(chans[k]) for k in sorted(chans, key=int)]
    except ValueError:
        raise CnnkitError(f"{path}: channel keys must be indices \"0\", \"1\", ..., got {sorted(chans)}") from None
    labels = meta["labels"]
    if not isinstance(labels, dict) or not labels:
        raise CnnkitError(f"{path}: labels must map names to ids, e.g. {{\"background\": 0, \"tumour\": 1}}")
    if all(str(k).isdigit() for k in labels) and all(isinstance(v, str) for v in labels.values()):
        pairs = {str(v): int(k) for k, v in labels.items()}  # v1: {id: name}
    else:
        pairs = {}
        for k, v in labels.items():
            if isinstance(v, (list, tuple)):
                raise CnnkitError(f"{path}: label {k!r} is a region ({v}); region-based training is not "
                                  f"supported, give each label one id")
            if isinstance(v, bool) or not isinstance(v, int):
                raise CnnkitError(f"{path}: label {k!r} has id {v!r}; ids must be whole numbers 0, 1, 2, ...")
            pairs[str(k)] = v
    ignore_id = pairs.pop("ignore", None)
    ids = sorted(pairs.values())
    if ids != list(range(len(ids))) or ids[0] != 0:
        raise CnnkitError(f"{path}: label ids must be 0, 1, ..., {len(ids) - 1} with 0 the background, got {ids}")
    if ignore_id is not None and ignore_id != len(ids):
        raise CnnkitError(f"{path}: the ignore label must have the highest id ({len(ids)}), got {ignore_id}")
    classes = [name for name, _ in sorted(pairs.items(), key=lambda p: p[1])]
    return {"classes": classes, "ignore_id": ignore_id, "channels": channels,
            "file_ending": str(meta.get("file_ending", ".nii.gz")), "num_training": meta["numTraining"]}


def _read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """A NIfTI file -> (Z, Y, X) array, (z, y, x) spacing, affine. nibabel gives (x, y, z)."""
    nib = _nibabel()
    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))  # scaled by the header's slope, as stored
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        raise CnnkitError(f"{path}: cannot be read as NIfTI ({type(e).__name__}: {e})") from None
    if data.size == 0:
        raise CnnkitError(f"{path}: an empty volume (shape {tuple(data.shape)}, no voxels)")
    zooms = [round(float(v), 6) for v in img.header.get_zooms()]  # float32 in the header: 0.8 not 0.800000012
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
        zooms = zooms[:2] + [1.0]
    if data.ndim != 3:
        raise CnnkitError(f"{path}: a volume must have 2 or 3 axes, this one has shape {data.shape} (one file per "
                          f"channel: CASE_0000, CASE_0001, ...)")
    spacing = (zooms[2], zooms[1], zooms[0])
    return np.ascontiguousarray(data.transpose(2, 1, 0)), spacing, np.asarray(img.affine, dtype=np.float64)


def _read_png(path: Path) -> np.ndarray:
    """A PNG -> (C, 1, Y, X): grey gives one channel, RGB three."""
    from PIL import Image

    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001
        raise CnnkitError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from None
    if img.mode in ("RGB", "RGBA", "P"):
        a = np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
    else:
        a = np.asarray(img, dtype=np.float32)[None]
    return a[:, None]


def _read_png_label(path: Path) -> np.ndarray:
    from .segmentation import _open, mask_ids

    return mask_ids(_open(str(path)), str(path), None)[None]


def _check_volume(a: np.ndarray, where: str) -> None:
    if a.size == 0:
        raise CnnkitError(f"{where}: an empty volume (shape {tuple(a.shape)}, no voxels)")
    if not np.isfinite(a).all():
        raise CnnkitError(f"{where}: holds NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo == hi:
        raise CnnkitError(f"{where}: every voxel is {lo:g}: an empty or broken export that nothing can be "
                          f"learned from; remove the case or export it again")


def _fmt_affine_diff(a: np.ndarray, b: np.ndarray) -> str:
    d = np.abs(a - b)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    return f"affine[{i},{j}] is {a[i, j]:.6g} vs {b[i, j]:.6g}"


def _read_case(root: Path, name: str, files: dict[int, Path], info: dict) -> Case:
    """One case's channel files and label -> Case, with every check that names it."""
    ending, n_ch = info["file_ending"], len(info["channels"])
    png = ending.lower() == ".png"
    parts, spacing, affine, first = [], (1.0, 1.0, 1.0), None, None
    got, idx = 0, 0
    while got < n_ch:
        f = files.get(idx)
        if f is None:
            raise CnnkitError(f"{root}: case {name} has no channel file imagesTr/{name}_{idx:04d}{ending} "
                              f"(dataset.json names {n_ch} channel{'s' if n_ch > 1 else ''}: "
                              f"{', '.join(info['channels'])})")
        if png:
            a = _read_png(f)
        else:
            vol, sp, aff = _read_nifti(f)
            a = vol[None].astype(np.float32, copy=False)
            if affine is None:
                spacing, affine = sp, aff
            elif not np.allclose(aff, affine, atol=1e-4, rtol=1e-5):
                raise CnnkitError(f"{f}: its affine differs from channel 0 of case {name} "
                                  f"({_fmt_affine_diff(aff, affine)})")
        if first is not None and a.shape[1:] != first:
            raise CnnkitError(f"{f}: shape (z, y, x) {a.shape[1:]} differs from channel 0 of case {name} {first}")
        first = a.shape[1:]
        _check_volume(a, str(f))
        parts.append(a)
        got += a.shape[0]
        idx += 1
    extra = sorted(k for k in files if k >= idx)
    if got != n_ch or extra:
        what = (f"imagesTr/{name}_{extra[0]:04d}{ending} is one more" if extra else
                f"its files hold {got} (an RGB file is 3)")
        raise CnnkitError(f"{root}: case {name} does not have the {n_ch} channel{'s' if n_ch > 1 else ''} "
                          f"dataset.json names ({', '.join(info['channels'])}): {what}")
    image = np.concatenate(parts).astype(np.float32, copy=False)
    lab_path = root / "labelsTr" / f"{name}{ending}"
    if not lab_path.is_file():
        raise CnnkitError(f"{root}: case {name} has no label file labelsTr/{name}{ending}")
    if png:
        lab = _read_png_label(lab_path)
    else:
        lab, _, lab_aff = _read_nifti(lab_path)
    if lab.shape != image.shape[1:]:
        raise CnnkitError(f"{lab_path}: label shape (z, y, x) {lab.shape} differs from its image "
                          f"{tuple(image.shape[1:])} (case {name})")
    if not png and not np.allclose(lab_aff, affine, atol=1e-4, rtol=1e-5):
        raise CnnkitError(f"{lab_path}: the label's affine differs from its image's (case {name}: "
                          f"{_fmt_affine_diff(lab_aff, affine)})")
    return Case(name, image, _label_ids(lab, info, lab_path), tuple(float(s) for s in spacing), affine)


def _label_ids(lab: np.ndarray, info: dict, where: Path) -> np.ndarray:
    """Label values -> uint8 class ids (dataset.json's ignore id -> IGNORE), or one line on a stray value."""
    values = np.unique(lab)
    allowed = set(range(len(info["classes"])))
    if info["ignore_id"] is not None:
        allowed.add(info["ignore_id"])
    bad = [v for v in values.tolist() if v not in allowed]
    if bad:
        names = ", ".join(f"{i} {c}" for i, c in enumerate(info["classes"]))
        raise CnnkitError(f"{where}: label value{'s' if len(bad) > 1 else ''} "
                          f"{', '.join(f'{v:g}' for v in bad[:5])} not in dataset.json's labels ({names}"
                          f"{', ignore ' + str(info['ignore_id']) if info['ignore_id'] is not None else ''})")
    out = lab.astype(np.uint8)
    if info["ignore_id"] is not None:
        out[lab == info["ignore_id"]] = IGNORE
    return out


def _case_files(root: Path, ending: str) -> dict[str, dict[int, Path]]:
    """imagesTr/NAME_XXXX<ending> -> {NAME: {channel: path}}."""
    out: dict[str, dict[int, Path]] = {}
    for f in sorted((root / "imagesTr").iterdir()):
        if not f.name.endswith(ending) or f.name.startswith("."):
            continue
        stem = f.name[: -len(ending)]
        name, _, ch = stem.rpartition("_")
        if not name or len(ch) != 4 or not ch.isdigit():
            raise CnnkitError(f"{f}: image files are named CASE_XXXX{ending} with a 4-digit channel index "
                              f"(CASE_0000{ending}, CASE_0001{ending}, ...)")
        out.setdefault(name, {})[int(ch)] = f
    return out


def _not_nnunet(root: Path, what: str) -> CnnkitError:
    inner = sorted(p.name for p in root.iterdir() if (p / "dataset.json").is_file()) if root.is_dir() else []
    hint = f"; its subfolders {', '.join(inner[:3])} are: pass one of them" if inner else ""
    return CnnkitError(f"{root} is not an nnU-Net raw dataset ({what}): expected {NNUNET_LAYOUT}{hint}")


def load_nnunet(root: str | Path, num_cases: int | None = None) -> VolumeSet:
    """An nnU-Net raw dataset folder -> VolumeSet (the first `num_cases` cases in name order)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CnnkitError(f"{root}: no such folder (expected an nnU-Net raw dataset: {NNUNET_LAYOUT})")
    if not (root / "dataset.json").is_file():
        raise _not_nnunet(root, "no dataset.json")
    if not (root / "imagesTr").is_dir():
        raise _not_nnunet(root, "no imagesTr/")
    info = read_dataset_json(root)
    ending = info["file_ending"]
    if ending.lower() != ".png":
        _nibabel()
    files = _case_files(root, ending)
    if not files:
        raise CnnkitError(f"{root}/imagesTr has no CASE_0000{ending} files (dataset.json's file_ending is {ending!r})")
    if not (root / "labelsTr").is_dir():
        raise _not_nnunet(root, "no labelsTr/")
    names = sorted(files)
    if isinstance(info["num_training"], int) and info["num_training"] != len(names):
        warnings.warn(f"{root}: dataset.json says numTraining {info['num_training']} but imagesTr/ has "
                      f"{len(names)} cases; reading the {len(names)}", stacklevel=2)
    if num_cases is not None:
        names = names[:num_cases]
    cases = [_read_case(root, n, files[n], info) for n in names]
    dims = 2 if all(c.image.shape[1] == 1 for c in cases) else 3
    return VolumeSet(root.name, cases, info["classes"], info["channels"], dims, str(root))


def save_nnunet(vs: VolumeSet, root: str | Path) -> Path:
    """Write a VolumeSet in nnU-Net's raw layout (NIfTI): a way to look at the generated volumes in a
    viewer, or to hand them to nnU-Net itself."""
    nib = _nibabel()
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    for c in vs.cases:
        aff = c.affine if c.affine is not None else np.diag([c.spacing[2], c.spacing[1], c.spacing[0], 1.0])
        for k, ch in enumerate(c.image):
            nib.Nifti1Image(np.ascontiguousarray(ch.transpose(2, 1, 0)), aff).to_filename(
                str(root / "imagesTr" / f"{c.name}_{k:04d}.nii.gz"))
        if c.label is not None:
            nib.Nifti1Image(np.ascontiguousarray(c.label.transpose(2, 1, 0)), aff).to_filename(
                str(root / "labelsTr" / f"{c.name}.nii.gz"))
    meta = {"channel_names": {str(i): n for i, n in enumerate(vs.channels)},
            "labels": {n: i for i, n in enumerate(vs.classes)}, "numTraining": len(vs.cases),
            "file_ending": ".nii.gz", "name": vs.name}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return root


# ------------------------------------------------------------------ the sources


@dataclass(frozen=True)
class VolumeSource:
    name: str
    description: str
    load: Callable[[str | None, int | None, int], VolumeSet]
    generated: bool = False


def _nnunet_source(data_dir, num_cases, seed) -> VolumeSet:
    if data_dir is None:
        raise CnnkitError(f"nnunet reads your files: pass --data-dir (data_dir=) pointing at a folder with "
                          f"{NNUNET_LAYOUT}")
    return load_nnunet(data_dir, num_cases)


VOLUME_SOURCES: dict[str, VolumeSource] = {s.name: s for s in (
    VolumeSource("shapes-volumes", "CT-like 3-D volumes of varying size and anisotropic spacing with a sphere, a box "
                 "and a cylinder (generated, 60 cases)", _generated("shapes-volumes", 3), True),
    VolumeSource("shapes-slices", "CT-like 2-D slices with an ellipse, a rectangle and a ring (generated, "
                 "100 cases)", _generated("shapes-slices", 2), True),
    VolumeSource("nnunet", f"nnU-Net's raw layout in --data-dir: {NNUNET_LAYOUT}", _nnunet_source),
)}


def load_volumes(data: str, data_dir: str | None = None, num_cases: int | None = None, seed: int = 0) -> VolumeSet:
    """Volumes by source name (`VOLUME_SOURCES`) or an nnU-Net raw folder (DATA itself, or DATA inside
    `data_dir`). num_cases: how many to generate, or the first cases of a folder in name order; seed:
    the generated data's."""
    if num_cases is not None and (isinstance(num_cases, bool) or not isinstance(num_cases, (int, np.integer))
                                  or num_cases < 1):
        raise CnnkitError(f"num_cases must be a positive whole number, got {num_cases!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CnnkitError(f"seed must be a whole number >= 0, got {seed!r}")
    args = {"data": str(data), "data_dir": None if data_dir is None else str(data_dir), "num_cases": num_cases,
            "seed": int(seed)}
    if data in VOLUME_SOURCES:
        vs = VOLUME_SOURCES[data].load(args["data_dir"], num_cases, int(seed))
    elif Path(data).expanduser().is_dir():
        vs = load_nnunet(data, num_cases)
    elif data_dir is not None and (Path(data_dir).expanduser() / data).is_dir():
        vs = load_nnunet(Path(data_dir).expanduser() / data, num_cases)
    else:
        err = suggest(str(data), VOLUME_SOURCES, "volume data set")
        raise CnnkitError(f"{err} (or a folder in nnU-Net's raw layout: {NNUNET_LAYOUT})")
    vs.load = args
    return vs


def dataset_specs() -> list:
    """`DatasetSpec`s of the volume sources, so `cnnkit datasets` can list them (volumes go through
    `load_volumes`, not `load_data`: their only target kind is "volume")."""
    from .datasets import DatasetSpec

    counts = {"shapes-volumes": (60, None), "shapes-slices": (100, None), "nnunet": (None, None)}
    specs = []
    for s in VOLUME_SOURCES.values():
        chans, n = (1, len(SHAPES_VOLUME_CLASSES)) if s.generated else (None, None)
        specs.append(DatasetSpec(s.name, s.description, chans, None, n, counts[s.name][0], counts[s.name][1],
                                 None, "built in" if s.generated else "--data-dir pointing at the dataset folder",
                                 dense={"volume": s.name}))
    return specs


def split_cases(vs: VolumeSet, val: float = 0.2, seed: int = 0) -> tuple[list[Case], list[Case]]:
    """A seeded split of whole cases (never slices of one case on both sides), each side in name order."""
    try:
        frac = float(val)
    except (TypeError, ValueError):
        frac = -1.0
    if isinstance(val, bool) or not 0.0 < frac < 1.0:
        raise CnnkitError(f"val must be a fraction of the cases in (0, 1) such as 0.2, got {val!r}")
    n = len(vs.cases)
    if n < 2:
        raise CnnkitError(f"{vs.name}: {n} case{'s' if n != 1 else ''}; a train/validation split needs at least 2")
    n_val = min(n - 1, max(1, round(frac * n)))
    order = np.random.default_rng([int(seed), 7]).permutation(n)
    val_idx = set(order[:n_val].tolist())
    train = [c for i, c in enumerate(vs.cases) if i not in val_idx]
    return train, [c for i, c in enumerate(vs.cases) if i in val_idx]


# ------------------------------------------------------------------ resampling


def _interp(x: torch.Tensor, size: tuple[int, ...], order: int) -> torch.Tensor:
    """x (N, C, *S) -> (N, C, *size); order 0 nearest (pixel centres), 1 (bi/tri)linear, 3 cubic (2-D;
    in 3-D separable: bicubic in-plane, then cubic along the first axis)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if order == 0:
        return F.interpolate(x, size=size, mode="nearest-exact")
    if order == 1:
        return F.interpolate(x, size=size, mode={1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)],
                             align_corners=False)
    if len(size) == 1:  # cubic along one axis: bicubic over (axis, 1)
        return F.interpolate(x[..., None], size=(size[0], 1), mode="bicubic", align_corners=False)[..., 0]
    if len(size) == 2:
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    n, c, z = x.shape[:3]
    planes = _interp(x.permute(0, 2, 1, 3, 4).reshape(n * z, c, *x.shape[3:]), tuple(size[1:]), 3)
    return _cubic_first_axis(planes.reshape(n, z, c, *size[1:]).permute(0, 2, 1, 3, 4), size[0])


def _cubic_first_axis(y: torch.Tensor, nz: int) -> torch.Tensor:
    """(N, C, Z, Y, X) -> (N, C, nz, Y, X), cubic along Z only."""
    n, c, z, h, w = y.shape
    if z == nz:
        return y
    flat = y.permute(0, 1, 3, 4, 2).reshape(n, c * h * w, z)
    out = _interp(flat, (nz,), 3)
    return out.reshape(n, c, h, w, nz).permute(0, 1, 4, 2, 3)


def resample(array: np.ndarray, new_shape: tuple[int, ...], order: int, separate_axis: int | None = None,
             order_across: int = 0) -> np.ndarray:
    """(C, Z, Y, X) or (Z, Y, X) -> the same with spatial shape `new_shape` (voxel centres aligned).

    order: 0 nearest (labels), 1 linear, 3 cubic (images). separate_axis: on anisotropic data, as nnU-Net,
    resample the planes across that axis with `order` and along it with `order_across` (0: nearest), so
    thick slices are not blurred into each other. Cubic values may overshoot the input's range, as
    nnU-Net's; labels keep their dtype."""
    if order not in (0, 1, 3):
        raise CnnkitError(f"resample order must be 0 (nearest), 1 (linear) or 3 (cubic), got {order}")
    squeeze = array.ndim == 3
    a = array[None] if squeeze else array
    new_shape = tuple(int(s) for s in new_shape)
    if len(new_shape) != 3 or a.ndim != 4:
        raise CnnkitError(f"resample takes (C, Z, Y, X) or (Z, Y, X) and a (z, y, x) shape, got {array.shape} "
                          f"-> {new_shape}")
    if tuple(a.shape[1:]) == new_shape:
        return array.copy()
    dtype = array.dtype
    x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]  # (1, C, Z, Y, X)
    if separate_axis is not None:
        perm = [0, 1, 2 + separate_axis] + [2 + i for i in range(3) if i != separate_axis]
        inv = [perm.index(i) for i in range(5)]
        shp = [new_shape[separate_axis]] + [new_shape[i] for i in range(3) if i != separate_axis]
        x = x.permute(*perm)
        n, c, z = x.shape[:3]
        planes = x.permute(0, 2, 1, 3, 4).reshape(n * z, c, *x.shape[3:])
        planes = _interp(planes, tuple(shp[1:]), order).reshape(n, z, c, *shp[1:]).permute(0, 2, 1, 3, 4)
        if order_across == 3:
            x = _cubic_first_axis(planes, shp[0])
        else:
            flat = planes.reshape(n, c, z, -1)
            x = _interp(flat, (shp[0], flat.shape[3]), order_across).reshape(n, c, *shp)
        x = x.permute(*inv)
    else:
        x = _interp(x, new_shape, order)
    out = x[0].numpy()
    if np.issubdtype(dtype, np.integer):
        out = np.rint(out).astype(dtype)
    else:
        out = out.astype(dtype, copy=False)
    return out[0] if squeeze else out


# ------------------------------------------------------------------ preprocessing


def crop_box(case: Case) -> list[list[int]]:
    """[[z0, z1], [y0, y1], [x0, x1]]: the bounding box of the voxels that are nonzero in any channel or
    labelled, so no label is cut away; the whole volume when nothing is zero (CT's air is -1000)."""
    mask = (case.image != 0).any(axis=0)
    if case.label is not None:
        mask |= (case.label > 0) & (case.label != IGNORE)
    if not mask.any():
        return [[0, s] for s in mask.shape]
    box = []
    for ax in range(3):
        other = tuple(i for i in range(3) if i != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        box.append([int(idx[0]), int(idx[-1]) + 1])
    return box


def target_shape(shape, spacing, target) -> tuple[int, int, int]:
    """The (z, y, x) shape of a volume of `shape` at `spacing` resampled to `target` spacing."""
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target))


def _full_spacing(plan, spacing) -> tuple[float, float, float]:
    t = [float(v) for v in plan.target_spacing]
    return (float(spacing[0]), t[0], t[1]) if len(t) == 2 else tuple(t)


def _separate_axis(spacing, target, threshold: float) -> int | None:
    """The axis to resample on its own (nnU-Net: when the case's or the target spacing is anisotropic)."""
    for sp in (spacing, target):
        if max(sp) / min(sp) > threshold:
            return int(np.argmax(sp))
    return None


def _normalize(image: np.ndarray, schemes: list[dict], nonzero: np.ndarray) -> np.ndarray:
    out = np.empty_like(image, dtype=np.float32)
    for c, (ch, sch) in enumerate(zip(image, schemes)):
        if sch["scheme"] == "ct":
            lo, hi = sch["clip"]
            out[c] = (np.clip(ch, lo, hi) - sch["mean"]) / max(float(sch["std"]), 1e-8)
        elif sch["scheme"] == "zscore":
            if sch.get("use_nonzero_mask") and nonzero.any():
                v = ch[nonzero]
                out[c] = np.where(nonzero, (ch - v.mean()) / max(float(v.std()), 1e-8), 0.0)
            else:
                out[c] = (ch - ch.mean()) / max(float(ch.std()), 1e-8)
        elif sch["scheme"] == "none":
            out[c] = ch
        else:
            raise CnnkitError(f"unknown normalization scheme {sch['scheme']!r} (ct, zscore or none)")
    return out


def preprocess(case: Case, plan) -> Case:
    """The plan's preprocessing of one case: crop to the nonzero region (when `plan.crop_to_nonzero`),
    resample to `plan.target_spacing` (image cubic, label nearest; anisotropic cases across the coarse
    axis nearest, as nnU-Net), normalise per `plan.normalization`. The returned case's `meta` holds
    original_shape, crop_box, cropped_shape, original_spacing and resampled_shape for `restore`."""
    norm = plan.normalization
    if len(norm) != case.image.shape[0]:
        raise CnnkitError(f"case {case.name} has {case.image.shape[0]} channels but the plan normalises "
                          f"{len(norm)} ({', '.join(n.get('channel', '?') for n in norm)})")
    box = crop_box(case) if getattr(plan, "crop_to_nonzero", True) else [[0, s] for s in case.shape]
    sl = tuple(slice(a, b) for a, b in box)
    image = case.image[(slice(None), *sl)]
    label = None if case.label is None else case.label[sl]
    nonzero = (image != 0).any(axis=0)
    target = _full_spacing(plan, case.spacing)
    new = target_shape(image.shape[1:], case.spacing, target)
    rs = getattr(plan, "resampling", None) or {}
    sep = _separate_axis(case.spacing, target, float(rs.get("anisotropy_threshold", ANISOTROPY)))
    if plan.dims == 2:
        new, sep = (image.shape[1], new[1], new[2]), 0  # 2-D: planes only, each slice on its own
    kw = {"separate_axis": sep, "order_across": int(rs.get("order_across", 0))}
    image = _normalize(image, norm, nonzero)  # normalise first: cubic overshoot stays in the normalised scale
    image = resample(image, new, int(rs.get("image_order", 3)), **kw)
    if label is not None:
        label = resample(label, new, int(rs.get("label_order", 0)), **kw)
    if any(n.get("use_nonzero_mask") for n in norm):
        nz = resample(nonzero.astype(np.uint8), new, 0, **kw).astype(bool)
        image[:, ~nz] = 0.0
    meta = dict(case.meta, original_shape=list(case.shape), crop_box=box, cropped_shape=list(sl_shape(box)),
                original_spacing=[float(s) for s in case.spacing], resampled_shape=list(new))
    return replace(case, image=image.astype(np.float32, copy=False), label=label, spacing=target, meta=meta)


def sl_shape(box) -> tuple[int, ...]:
    return tuple(b - a for a, b in box)


def restore(pred_labels: np.ndarray, case_before: Case, case_after: Case) -> np.ndarray:
    """A (Z', Y', X') prediction on `case_after`'s grid (what `preprocess` gave) -> uint8 (Z, Y, X) on
    `case_before`'s grid: nearest back to the cropped shape, pasted into background at the crop box."""
    meta = case_after.meta
    if "crop_box" not in meta:
        raise CnnkitError(f"case {case_after.name} was not made by preprocess (no crop_box in its meta)")
    pred = np.asarray(pred_labels)
    if pred.shape != tuple(case_after.image.shape[1:]):
        raise CnnkitError(f"case {case_after.name}: the prediction is {pred.shape} but the preprocessed case is "
                          f"{tuple(case_after.image.shape[1:])}")
    box = meta["crop_box"]
    sep = _separate_axis(case_before.spacing, case_after.spacing, ANISOTROPY)
    if pred.shape[0] == 1 and len(box) == 3 and box[0][1] - box[0][0] == 1:
        sep = 0
    back = resample(pred.astype(np.uint8), sl_shape(box), 0, separate_axis=sep)
    out = np.zeros(tuple(meta["original_shape"]), dtype=np.uint8)
    out[tuple(slice(a, b) for a, b in box)] = back
    if out.shape != case_before.shape:
        raise CnnkitError(f"case {case_before.name}: the original is {case_before.shape} but its preprocessing "
                          f"remembered {out.shape}; restore needs the case that preprocess was given")
    return out
