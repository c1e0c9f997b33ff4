"""Multi-label data (`data/multilabel.py`): the shapes scenes' presence labels, the ChestX-ray14 and
CheXpert CSV layouts on tiny files made here, the uncertain-label policies and every bad-input error."""
import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data.datasets import load_data
from cnnkit.data.multilabel import (
    CHEXPERT_LABELS,
    IGNORE,
    UNCERTAIN,
    group_holdout,
    presence_from_objects,
    resolve_uncertain,
)
from cnnkit.models.densenet import CHESTXRAY14_LABELS
from cnnkit.registry import CnnkitError

QUIET = dict(log=lambda *a: None, targets="labels")


def _image(path, value=128, size=12, mode="L", ext=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8), "L").convert(mode).save(path)
    return path


# ------------------------------------------------------------------ shapes


def test_shapes_presence_labels_are_the_classes_of_the_scenes_objects():
    from cnnkit.data.scenes import make_scene_batch

    b = load_data("shapes", num_train=48, num_val=16, **QUIET)
    assert b.train.targets.shape == (48, 8) and b.train.targets.dtype == torch.uint8
    assert b.classes[0] == "circle" and len(b.classes) == 8 and b.image_size == 64
    images, objects = make_scene_batch(48, seed=0, size=64, channels=3)  # the same scenes
    assert torch.equal(images, b.train.images)
    for i, t in enumerate(objects.per_image()):
        assert set(torch.nonzero(b.train.targets[i])[:, 0].tolist()) == set(t["labels"].tolist())
    assert (b.train.targets.sum(1) >= 1).all()  # every scene holds an object
    assert set(b.train.targets.unique().tolist()) <= {0, 1}


def test_presence_from_objects_by_hand():
    from cnnkit.data.targets import ObjectTargets

    t = ObjectTargets.from_list([dict(boxes=[[0, 0, 2, 2]] * 3, labels=[2, 0, 2]), dict(boxes=[], labels=[]),
                                 dict(boxes=[[0, 0, 1, 1]], labels=[3])])
    assert presence_from_objects(t, 3, 4).tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]]


def test_single_label_data_give_their_class_indices_for_labels(tmp_path):
    for k, c in enumerate(("cat", "dog")):
        for i in range(4):
            _image(tmp_path / "folder" / c / f"{i}.png", value=100 * k + i)
    b = load_data("imagefolder", data_dir=tmp_path / "folder", val=0.5, **QUIET)
    assert b.train.targets.ndim == 1 and sorted(b.train.targets.tolist()) == [0, 0, 1, 1]


# ------------------------------------------------------------------ ChestX-ray14


def _nih(root, rows, lists=True):
    lines = ["Image Index,Finding Labels,Follow-up #,Patient ID"]
    for name, findings, patient in rows:
        lines.append(f"{name},{findings},0,{patient}")
    root.mkdir(parents=True, exist_ok=True)
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    for k, (name, _, _) in enumerate(rows):
        _image(root / f"images_00{1 + k % 2}" / "images" / name, value=10 * k)
    if lists:
        (root / "train_val_list.txt").write_text("\n".join(r[0] for r in rows[:-2]) + "\n")
        (root / "test_list.txt").write_text("\n".join(r[0] for r in rows[-2:]) + "\n")


NIH_ROWS = [("a.png", "Effusion|Hernia", "1"), ("b.png", "No Finding", "1"), ("c.png", "Mass", "2"),
            ("d.png", "Atelectasis|Pneumonia|Mass", "3"), ("e.png", "No Finding", "4"), ("f.png", "Edema", "5")]


def test_chestxray14_labels_and_official_split(tmp_path):
    _nih(tmp_path / "nih", NIH_ROWS)
    b = load_data("chestxray14", data_dir=tmp_path / "nih", image_size=16, **QUIET)
    assert b.classes == list(CHESTXRAY14_LABELS) and b.val_name == "test"
    assert len(b.train) == 4 and len(b.val) == 2 and b.train.images.shape == (4, 1, 16, 16)
    want = lambda *names: [int(c in names) for c in CHESTXRAY14_LABELS]  # noqa: E731
    assert b.train.targets.tolist() == [want("Effusion", "Hernia"), want(), want("Mass"),
                                        want("Atelectasis", "Pneumonia", "Mass")]
    assert b.val.targets.tolist() == [want(), want("Edema")]
    assert b.train.images[1].float().mean() == pytest.approx(10, abs=1)  # b.png, read in its row's place


def test_chestxray14_without_lists_holds_out_by_patient(tmp_path):
    _nih(tmp_path / "nih", NIH_ROWS, lists=False)
    said = []
    for seed in range(4):
        b = load_data("chestxray14", data_dir=tmp_path / "nih", image_size=16, val=0.3, seed=seed, log=said.append,
                      targets="labels")
        assert b.val_name == "holdout" and len(b.train) + len(b.val) == 6 and len(b.val) >= 1
        train_values = {round(float(x.float().mean())) for x in b.train.images}
        assert ({0, 10} <= train_values) or not ({0, 10} & train_values)  # a.png, b.png: one patient, one side
    b = load_data("chestxray14", data_dir=tmp_path / "nih", image_size=16, log=said.append, targets="labels")
    assert b.val_name == "holdout" and "holding out 10%" in said[-1]
    tr, va = group_holdout(6, 0.3, ["1", "1", "2", "3", "4", "5"], seed=0)
    assert sorted(tr.tolist() + va.tolist()) == list(range(6))


def test_chestxray14_errors(tmp_path):
    _nih(tmp_path / "nih", NIH_ROWS)
    for name in ("c.png", "d.png", "e.png", "f.png"):
        next((tmp_path / "nih").rglob(name)).unlink()
    with pytest.raises(CnnkitError, match=r"names 4 of its 6 images that are not under .*c\.png, d\.png, e\.png, "
                       r"\.\.\."):
        load_data("chestxray14", data_dir=tmp_path / "nih", **QUIET)
    _nih(tmp_path / "typo", [("a.png", "Efusion", "1"), ("b.png", "Mass", "2")], lists=False)
    with pytest.raises(CnnkitError, match=r"row 2: unknown finding 'Efusion'. Did you mean 'Effusion'"):
        load_data("chestxray14", data_dir=tmp_path / "typo", **QUIET)
    (tmp_path / "cols").mkdir()
    (tmp_path / "cols" / "Data_Entry_2017.csv").write_text("Image Index,Labels\na.png,Mass\n")
    with pytest.raises(CnnkitError, match=r"lacks the column 'Finding Labels'"):
        load_data("chestxray14", data_dir=tmp_path / "cols", **QUIET)
    with pytest.raises(CnnkitError, match="no Data_Entry_2017.csv"):
        load_data("chestxray14", data_dir=tmp_path / "empty", **QUIET)
    with pytest.raises(CnnkitError, match="--data-dir"):
        load_data("chestxray14", **QUIET)


# ------------------------------------------------------------------ CheXpert


def _chexpert(root, prefix, rows, name="train.csv"):
    """rows: (patient, {observation: cell text}); the Path column starts with `prefix`."""
    cols = ["Path", "Sex", "Age", *CHEXPERT_LABELS]
    lines = [",".join(cols)]
    for k, (patient, cells) in enumerate(rows):
        rel = f"{name[:-4]}/patient{patient}/study1/view1_frontal.jpg"
        _image(root / rel, value=20 * k, mode="RGB")
        lines.append(",".join([prefix + rel, "F", "50"] + [cells.get(c, "") for c in CHEXPERT_LABELS]))
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text("\n".join(lines) + "\n")


CX_ROWS = [("00001", {"Cardiomegaly": "1.0", "Edema": "-1.0", "No Finding": ""}),
           ("00002", {"No Finding": "1.0", "Edema": "0.0"}),
           ("00003", {"Edema": "1", "Atelectasis": "-1"}),
           ("00004", {"Pleural Effusion": "1.0", "Fracture": "0"})]


@pytest.mark.parametrize("prefix", ["CheXpert-v1.0-small/", ""])
def test_chexpert_values_paths_and_official_valid(tmp_path, prefix):
    root = tmp_path / "CheXpert-v1.0-small"
    _chexpert(root, prefix, CX_ROWS)
    _chexpert(root, prefix, CX_ROWS[:2], name="valid.csv")
    b = load_data("chexpert", data_dir=root, image_size=16, **QUIET)
    assert b.classes == list(CHEXPERT_LABELS) and b.val_name == "test" and b.in_chans == 3
    assert len(b.train) == 4 and len(b.val) == 2
    t = b.train.targets
    col = {c: j for j, c in enumerate(CHEXPERT_LABELS)}
    assert t[0, col["Cardiomegaly"]] == 1 and t[0, col["Edema"]] == UNCERTAIN and t[0, col["No Finding"]] == 0
    assert t[1, col["No Finding"]] == 1 and t[2, col["Atelectasis"]] == UNCERTAIN and t[3, col["Fracture"]] == 0
    assert int((t == UNCERTAIN).sum()) == 2 and int((t == 1).sum()) == 4  # blank cells are 0
    b2 = load_data("chexpert", data_dir=root / "train.csv", image_size=16, val=0.5, **QUIET)  # the CSV itself
    assert b2.val_name == "holdout" and len(b2.train) + len(b2.val) == 4


def test_uncertain_policies():
    t = torch.tensor([[1, 0, UNCERTAIN, IGNORE]], dtype=torch.uint8)
    assert resolve_uncertain(t, "ones").tolist() == [[1, 0, 1, IGNORE]]
    assert resolve_uncertain(t, "zeros").tolist() == [[1, 0, 0, IGNORE]]
    assert resolve_uncertain(t, "ignore").tolist() == [[1, 0, IGNORE, IGNORE]]
    with pytest.raises(CnnkitError, match=r"unknown uncertain-label policy 'zero'. Did you mean 'zeros'"):
        resolve_uncertain(t, "zero")


def test_chexpert_errors(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    _chexpert(root, "CheXpert-v1.0-small/", CX_ROWS)
    text = (root / "train.csv").read_text()
    (root / "train.csv").write_text(text.replace("1.0,", "maybe,", 1))
    with pytest.raises(CnnkitError, match=r"row 2, column 'Cardiomegaly': 'maybe' is not a CheXpert label"):
        load_data("chexpert", data_dir=root, **QUIET)
    (root / "train.csv").write_text(text.replace(",Edema,", ",Oedema,"))
    with pytest.raises(CnnkitError, match=r"lacks the column 'Edema'"):
        load_data("chexpert", data_dir=root, **QUIET)
    (root / "train.csv").write_text(text)
    for p in list(root.rglob("*.jpg"))[:3]:
        p.unlink()
    with pytest.raises(CnnkitError, match=r"names 3 of its 4 images that are not under"):
        load_data("chexpert", data_dir=root, **QUIET)


def test_big_splits_stream_with_label_rows(tmp_path, monkeypatch):
    root = tmp_path / "CheXpert-v1.0-small"
    _chexpert(root, "", CX_ROWS)
    monkeypatch.setenv("CNNKIT_MAX_IN_MEMORY", "100")
    b = load_data("chexpert", data_dir=root, image_size=16, val=0.5, **QUIET)
    assert b.train.images is None and b.train.dataset is not None
    image, row = b.train.dataset[0]
    assert image.shape == (3, 16, 16) and row.dtype == torch.uint8 and torch.equal(row, b.train.targets[0])
