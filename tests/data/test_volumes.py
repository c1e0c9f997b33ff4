"""Volumes for nnU-Net's plans: the generated shapes-volumes, nnU-Net's raw layout (NIfTI through nibabel and
PNG, written here in tmp_path), one clear line for each mistake in the files, resampling, and preprocess ->
restore back onto the original grid."""
import json
import sys

import numpy as np
import pytest

from cnnkit.data.segmentation import IGNORE
from cnnkit.data.volumes import (
    CLASS_HU,
    NOISE_HU,
    VOLUME_SOURCES,
    Case,
    crop_box,
    dataset_specs,
    load_volumes,
    preprocess,
    resample,
    restore,
    save_nnunet,
    split_cases,
)
from cnnkit.plan import fingerprint, make_plan
from cnnkit.registry import CnnkitError, Registry

try:
    import nibabel as nib
except ImportError:  # the NIfTI tests need it (cnnkit's test extra installs it); the rest run without
    nib = None
needs_nibabel = pytest.mark.skipif(nib is None, reason="nibabel is not installed (pip install cnnkit[medical])")


# ------------------------------------------------------------------ shapes-volumes


def test_shapes_volumes_are_deterministic_and_each_case_independent_of_the_count():
    a = load_volumes("shapes-volumes", num_cases=6, seed=3)
    b = load_volumes("shapes-volumes", num_cases=4, seed=3)
    c = load_volumes("shapes-volumes", num_cases=4, seed=4)
    for x, y in zip(a.cases, b.cases):
        assert x.name == y.name and x.spacing == y.spacing
        assert np.array_equal(x.image, y.image) and np.array_equal(x.label, y.label)
    assert not np.array_equal(a.cases[0].label, c.cases[0].label) or a.cases[0].spacing != c.cases[0].spacing
    assert a.load == {"data": "shapes-volumes", "data_dir": None, "num_cases": 6, "seed": 3}


def test_shapes_volumes_vary_in_size_and_are_anisotropic_like_ct():
    vs = load_volumes("shapes-volumes", num_cases=24)
    assert vs.dims == 3 and vs.channels == ["CT"] and vs.classes == ["background", "sphere", "box", "cylinder"]
    shapes = np.array([c.shape for c in vs.cases])
    spacing = np.array([c.spacing for c in vs.cases])
    assert len({tuple(s) for s in shapes}) == len(shapes)  # every case its own size
    assert shapes[:, 0].min() >= 16 and shapes[:, 0].max() <= 40 and shapes[:, 1:].min() >= 40
    assert shapes[:, 1:].max() <= 80 and np.ptp(shapes[:, 0]) > 10
    assert (spacing[:, 0] >= 2.5).all() and (spacing[:, 0] <= 4.0).all()
    assert (spacing[:, 1:] >= 0.7).all() and (spacing[:, 1:] <= 1.0).all()
    assert (spacing[:, 0] / spacing[:, 1] > 2.5).all()
    for c in vs.cases:
        assert c.image.dtype == np.float32 and c.image.shape == (1, *c.shape)
        assert c.label.dtype == np.uint8 and c.label.shape == c.shape
        assert c.affine.shape == (4, 4) and np.allclose(np.diag(c.affine)[:3], c.spacing[::-1])


def test_shapes_volumes_labels_match_the_intensities_and_the_physical_sizes():
    vs = load_volumes("shapes-volumes", num_cases=30)
    seen = set()
    for c in vs.cases:
        img, lab = c.image[0], c.label
        assert set(np.unique(lab)) <= {0, 1, 2, 3} and (lab > 0).any()
        assert img[lab == 0].min() < -900  # air around the body
        for k in range(1, 4):
            m = lab == k
            if m.sum() > 50:
                seen.add(k)
                assert abs(float(img[m].mean()) - CLASS_HU[k - 1]) < 30  # its own mean (+ bias <= 24 HU)
                assert float(img[m].std()) < NOISE_HU * 1.6
                # sizes are in mm: the object's extent in voxels shrinks with coarser spacing
                zs = np.flatnonzero(m.any(axis=(1, 2)))
                assert (zs[-1] - zs[0] + 1) * c.spacing[0] <= 2 * 22.0 + 2 * c.spacing[0]
    assert seen == {1, 2, 3}


def test_shapes_slices_are_2d():
    vs = load_volumes("shapes-slices", num_cases=5)
    assert vs.dims == 2 and vs.classes[1:] == ["ellipse", "rectangle", "ring"]
    for c in vs.cases:
        assert c.image.shape[:2] == (1, 1) and c.label.shape[0] == 1 and (c.label > 0).any()


def test_unknown_source_suggests_and_names_the_layout():
    with pytest.raises(CnnkitError, match="Did you mean 'shapes-volumes'.*imagesTr"):
        load_volumes("shapes-volume")
    with pytest.raises(CnnkitError, match="pass --data-dir"):
        load_volumes("nnunet")
    with pytest.raises(CnnkitError, match="num_cases must be a positive"):
        load_volumes("shapes-volumes", num_cases=0)


def test_dataset_specs_fit_the_dataset_registry():
    reg = Registry("dataset")
    for spec in dataset_specs():
        reg.register(spec, name=spec.name)
        assert spec.kinds == ("volume",) and spec.info()["description"]
    assert reg.list() == sorted(VOLUME_SOURCES)


def test_split_cases_is_seeded_and_keeps_cases_whole():
    vs = load_volumes("shapes-volumes", num_cases=10)
    tr, va = split_cases(vs, 0.2, seed=1)
    assert len(tr) == 8 and len(va) == 2
    assert sorted(c.name for c in tr + va) == [c.name for c in vs.cases]
    assert [c.name for c in split_cases(vs, 0.2, seed=1)[1]] == [c.name for c in va]
    with pytest.raises(CnnkitError, match="fraction"):
        split_cases(vs, 1.5)


# ------------------------------------------------------------------ nnU-Net's raw layout


def write_json(root, **over):
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "numTraining": 1,
            "file_ending": ".nii.gz"}
    meta.update(over)
    meta = {k: v for k, v in meta.items() if v is not None}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta))


def write_nifti(path, xyz, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.asarray(xyz), np.diag([0.5, 0.8, 3.0, 1.0]) if affine is None else affine).to_filename(
        str(path))


def blob_xyz(shape=(12, 10, 6), dtype=np.float32):
    img = np.full(shape, 10.0, dtype=dtype)
    img[3:7, 2:6, 1:4] = 100.0
    lab = np.zeros(shape, dtype=np.uint8)
    lab[3:7, 2:6, 1:4] = 1
    return img, lab


def make_dataset(root, n=2, **json_over):
    write_json(root, numTraining=n, **json_over)
    for i in range(n):
        img, lab = blob_xyz()
        write_nifti(root / "imagesTr" / f"c{i}_0000.nii.gz", img)
        write_nifti(root / "labelsTr" / f"c{i}.nii.gz", lab)
    return root


@needs_nibabel
def test_nifti_axes_become_z_y_x_and_spacing_reverses(tmp_path):
    root = tmp_path / "Dataset001_Test"
    write_json(root)
    xyz = np.zeros((5, 4, 3), dtype=np.float32)  # x, y, z as nibabel stores them
    xyz[4, 1, 2] = 7.0
    xyz[0, 0, 0] = 1.0
    lab = np.zeros((5, 4, 3), dtype=np.uint8)
    lab[4, 1, 2] = 1
    write_nifti(root / "imagesTr" / "a_0000.nii.gz", xyz)
    write_nifti(root / "labelsTr" / "a.nii.gz", lab)
    (root / "imagesTs").mkdir()
    write_nifti(root / "imagesTs" / "t_0000.nii.gz", xyz)
    vs = load_volumes(str(root))
    assert vs.name == "Dataset001_Test" and vs.source == str(root) and vs.classes == ["background", "organ"]
    assert len(vs.cases) == 1 and vs.channels == ["CT"] and vs.dims == 3
    c = vs.cases[0]
    assert c.image.shape == (1, 3, 4, 5) and c.label.shape == (3, 4, 5)
    assert c.image[0, 2, 1, 4] == 7.0 and c.label[2, 1, 4] == 1 and c.label.sum() == 1
    assert c.spacing == (3.0, 0.8, 0.5)
    assert np.allclose(c.affine, np.diag([0.5, 0.8, 3.0, 1.0]))
    # also found as DATA inside --data-dir, and through the nnunet source
    assert load_volumes("Dataset001_Test", data_dir=str(tmp_path)).cases[0].name == "a"
    assert load_volumes("nnunet", data_dir=str(root)).cases[0].name == "a"


@needs_nibabel
def test_saved_volumes_read_back_exactly(tmp_path):
    vs = load_volumes("shapes-volumes", num_cases=3)
    save_nnunet(vs, tmp_path / "ds")
    back = load_volumes(str(tmp_path / "ds"))
    assert back.classes == vs.classes and back.channels == vs.channels
    for a, b in zip(vs.cases, back.cases):
        assert a.name == b.name and np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
        assert np.allclose(a.spacing, b.spacing, atol=1e-6)


@needs_nibabel
def test_v1_dataset_json_multichannel_and_ignore_label(tmp_path):
    root = tmp_path / "Task05_Prostate"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "T2", "1": "ADC"},
                                                   "labels": {"0": "background", "1": "PZ", "2": "TZ"},
                                                   "numTraining": 1}))
    img, lab = blob_xyz()
    lab[0, 0, 0] = 2
    write_nifti(root / "imagesTr" / "p_0000.nii.gz", img)
    write_nifti(root / "imagesTr" / "p_0001.nii.gz", img * 2)
    write_nifti(root / "labelsTr" / "p.nii.gz", lab)
    vs = load_volumes(str(root))
    assert vs.channels == ["T2", "ADC"] and vs.classes == ["background", "PZ", "TZ"]
    assert vs.cases[0].image.shape == (2, 6, 10, 12) and np.allclose(vs.cases[0].image[1], vs.cases[0].image[0] * 2)
    root2 = tmp_path / "ign"
    make_dataset(root2, n=1, labels={"background": 0, "organ": 1, "ignore": 2})
    lab2 = blob_xyz()[1]
    lab2[0, 0, 0] = 2
    write_nifti(root2 / "labelsTr" / "c0.nii.gz", lab2)
    c = load_volumes(str(root2)).cases[0]
    assert load_volumes(str(root2)).classes == ["background", "organ"] and c.label[0, 0, 0] == IGNORE


def test_png_cases_are_2d(tmp_path):
    from PIL import Image

    root = tmp_path / "Dataset120_Road"
    write_json(root, channel_names={"0": "R", "1": "G", "2": "B"}, file_ending=".png", numTraining=2)
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    for i in range(2):
        rgb = np.zeros((20, 30, 3), dtype=np.uint8)
        rgb[5:10, 5:15] = (200, 100, 50)
        m = np.zeros((20, 30), dtype=np.uint8)
        m[5:10, 5:15] = 1
        Image.fromarray(rgb).save(root / "imagesTr" / f"r{i}_0000.png")
        Image.fromarray(m).save(root / "labelsTr" / f"r{i}.png")
    vs = load_volumes(str(root))
    assert vs.dims == 2 and vs.channels == ["R", "G", "B"]
    c = vs.cases[0]
    assert c.image.shape == (3, 1, 20, 30) and c.label.shape == (1, 20, 30) and c.label.sum() == 50
    assert c.image[0, 0, 6, 6] == 200 and c.image[2, 0, 6, 6] == 50 and c.affine is None
    plan = make_plan(fingerprint(vs))
    assert plan.dims == 2 and [n["scheme"] for n in plan.normalization] == ["zscore"] * 3


def _shape_mismatch(root):
    write_nifti(root / "labelsTr" / "c0.nii.gz", np.zeros((12, 10, 5), dtype=np.uint8))


def _affine_mismatch(root):
    write_nifti(root / "labelsTr" / "c0.nii.gz", blob_xyz()[1], np.diag([0.5, 0.8, 2.0, 1.0]))


def _constant(root):
    write_nifti(root / "imagesTr" / "c0_0000.nii.gz", np.full((12, 10, 6), 5.0, dtype=np.float32))


def _empty(root):
    write_nifti(root / "imagesTr" / "c0_0000.nii.gz", np.zeros((12, 10, 0), dtype=np.float32))


def _no_label(root):
    (root / "labelsTr" / "c1.nii.gz").unlink()


def _no_channel(root):
    write_json(root, channel_names={"0": "T2", "1": "ADC"}, numTraining=2)


def _missing_key(root):
    write_json(root, file_ending=None, numTraining=2)


def _bad_label(root):
    lab = blob_xyz()[1]
    lab[0, 0, 0] = 3
    write_nifti(root / "labelsTr" / "c1.nii.gz", lab)


def _bad_json(root):
    (root / "dataset.json").write_text("{labels: oops")


def _not_dataset(root):
    (root / "dataset.json").unlink()


def _channel_shape(root):
    write_json(root, channel_names={"0": "T2", "1": "ADC"}, numTraining=2)
    for i in range(2):
        write_nifti(root / "imagesTr" / f"c{i}_0001.nii.gz", np.ones((11, 10, 6), dtype=np.float32) * np.arange(6))


@needs_nibabel
@pytest.mark.parametrize("damage, message", [
    (_shape_mismatch, (r"c0.nii.gz: label shape \(z, y, x\) \(5, 10, 12\) differs from its image \(6, 10, 12\) "
                      r"\(case c0\)")),
    (_affine_mismatch, r"label's affine differs from its image's \(case c0: affine\[2,2\] is 2 vs 3\)"),
    (_constant, r"c0_0000.nii.gz: every voxel is 5: an empty or broken export"),
    (_empty, r"c0_0000.nii.gz: an empty volume \(shape .*, no voxels\)"),
    (_no_label, r"case c1 has no label file labelsTr/c1.nii.gz"),
    (_no_channel, r"case c0 has no channel file imagesTr/c0_0001.nii.gz \(dataset.json names 2 channels: T2, ADC\)"),
    (_channel_shape, r"c0_0001.nii.gz: shape \(z, y, x\) \(6, 10, 11\) differs from channel 0 of case c0"),
    (_missing_key, r"dataset.json: missing required key file_ending"),
    (_bad_label, r"c1.nii.gz: label value 3 not in dataset.json's labels \(0 background, 1 organ\)"),
    (_bad_json, r"dataset.json: not valid JSON"),
    (_not_dataset, r"is not an nnU-Net raw dataset \(no dataset.json\): expected dataset.json, imagesTr/"),
])
def test_each_mistake_is_one_line_naming_the_case(tmp_path, damage, message):
    root = make_dataset(tmp_path / "ds")
    damage(root)
    with pytest.raises(CnnkitError, match=message) as e:
        load_volumes(str(root))
    assert "\n" not in str(e.value)


@needs_nibabel
def test_parent_folder_of_datasets_points_at_them(tmp_path):
    make_dataset(tmp_path / "raw" / "Dataset002_Heart")
    with pytest.raises(CnnkitError, match="Dataset002_Heart are: pass one of them"):
        load_volumes(str(tmp_path / "raw"))


@needs_nibabel
def test_missing_nibabel_says_how_to_install(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds")
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(CnnkitError, match=r"pip install cnnkit\[medical\]"):
        load_volumes(str(root))


@needs_nibabel
def test_numtraining_mismatch_warns_and_reads_what_is_there(tmp_path):
    root = make_dataset(tmp_path / "ds")
    write_json(root, numTraining=5)
    with pytest.warns(UserWarning, match="numTraining 5 but imagesTr/ has 2"):
        assert len(load_volumes(str(root)).cases) == 2


# ------------------------------------------------------------------ resampling, preprocess, restore


def test_resample_shapes_dtypes_and_exact_cases():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, 6, 10, 12)).astype(np.float32)
    lab = (rng.random((6, 10, 12)) > 0.5).astype(np.uint8)
    for order in (0, 1, 3):
        out = resample(img, (9, 15, 7), order)
        assert out.shape == (2, 9, 15, 7) and out.dtype == np.float32
        sep = resample(img, (9, 15, 7), order, separate_axis=0)
        assert sep.shape == (2, 9, 15, 7)
    assert np.array_equal(resample(img, (6, 10, 12), 3), img)
    up = resample(lab, (12, 20, 24), 0)
    assert up.dtype == np.uint8 and set(np.unique(up)) <= {0, 1}
    assert np.array_equal(resample(up, (6, 10, 12), 0), lab)  # nearest x2 and back is exact
    const = np.full((1, 4, 5, 6), 3.5, dtype=np.float32)
    for order in (1, 3):
        assert np.allclose(resample(const, (7, 3, 9), order), 3.5, atol=1e-5)
    # separate along z: nearest across slices keeps each slice's plane values
    ramp = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 5, 5), dtype=np.float32)
    assert set(np.unique(resample(ramp, (8, 5, 5), 3, separate_axis=0))) == {0.0, 1.0, 2.0, 3.0}
    with pytest.raises(CnnkitError, match="order must be"):
        resample(img, (3, 3, 3), 2)


def _blob_case(spacing=(3.0, 0.8, 0.8), shape=(12, 40, 40), pad=0.0):
    z, y, x = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
    c = np.array(shape) * np.array(spacing) / 2
    lab = (((z - c[0]) / 10) ** 2 + ((y - c[1]) / 9) ** 2 + ((x - c[2]) / 8) ** 2 <= 1).astype(np.uint8)
    img = np.where(lab > 0, 200.0, 40.0).astype(np.float32)[None] + np.float32(1.0)
    img[:, :, :4, :] = pad  # a zero border that cropping removes
    return Case("blob", img, lab, spacing)


def test_preprocess_then_restore_gives_back_the_grid_and_the_label(tmp_path):
    fp = {"dims": 3, "channels": ["CT"], "classes": ["background", "blob"], "shapes": [[12, 40, 40]],
          "spacings": [[1.5, 0.4, 0.4]], "intensity": [{"mean": 200.0, "std": 1.0, "p00_5": 30.0, "p99_5": 210.0}]}
    plan = make_plan(fp)
    assert plan.target_spacing == [1.5, 0.4, 0.4]
    case = _blob_case()
    box = crop_box(case)
    assert box == [[0, 12], [4, 40], [0, 40]]
    after = preprocess(case, plan)
    assert after.image.shape == (1, 24, 72, 80) and after.spacing == (1.5, 0.4, 0.4)
    assert after.meta["crop_box"] == box and after.meta["original_shape"] == [12, 40, 40]
    assert after.image.dtype == np.float32  # clip [30, 210], then (v - 200) / 1: the blob 1, the rest -159
    assert np.allclose(np.median(after.image[0][after.label == 1]), 1.0)
    assert np.allclose(np.median(after.image[0][after.label == 0]), -159.0)
    back = restore(after.label, case, after)
    assert back.shape == case.shape and np.array_equal(back, case.label)  # x2 nearest, exact
    # a non-integer factor loses little
    fp["spacings"] = [[2.2, 0.55, 0.55]]
    plan = make_plan(fp)
    after = preprocess(case, plan)
    back = restore(after.label, case, after)
    dice = 2 * ((back == 1) & (case.label == 1)).sum() / ((back == 1).sum() + (case.label == 1).sum())
    assert back.shape == case.shape and dice > 0.93
    with pytest.raises(CnnkitError, match="the prediction is"):
        restore(after.label[:-1], case, after)


def test_preprocess_zscore_per_image_and_2d_planes():
    vs = load_volumes("shapes-slices", num_cases=3)
    vs.channels = ["MRI"]
    fp = fingerprint(vs)
    plan = make_plan(fp)
    assert plan.normalization == [{"channel": "MRI", "scheme": "zscore", "use_nonzero_mask": False}]
    c = vs.cases[0]
    after = preprocess(c, plan)
    assert after.image.shape[:2] == (1, 1) and after.spacing[1:] == tuple(plan.target_spacing)
    assert abs(float(after.image.mean())) < 0.05 and abs(float(after.image.std()) - 1) < 0.05
    assert restore(after.label, c, after).shape == c.shape
