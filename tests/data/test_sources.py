"""File formats and locating data: IDX, CIFAR pickles, image folders, the search path.

Every file is written here, in tmp_path, so the expected contents are known exactly.
"""
import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data import sources
from cnnkit.registry import CnnkitError


def write_idx(path, arr, gz=False):
    """An IDX file of uint8 `arr`: 0, 0, type 0x08, ndim, big-endian dims, data."""
    raw = bytes([0, 0, 8, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes() + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_mnist(folder, n_train=12, n_test=5, size=28, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte{ext}", x, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", y, gz)
        out[split] = (x, y)
    return out


# ---------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    data = write_mnist(tmp_path, gz=gz)
    for split in ("train", "t10k"):
        x, y = sources.load_idx(tmp_path, split)
        assert x.dtype == np.uint8 and x.shape == (len(data[split][0]), 1, 28, 28)
        assert y.dtype == np.int64
        np.testing.assert_array_equal(x[:, 0], data[split][0])
        np.testing.assert_array_equal(y, data[split][1])


def test_idx_truncated_and_corrupt(tmp_path):
    x = np.zeros((4, 28, 28), np.uint8)
    p = write_idx(tmp_path / "a-idx3-ubyte", x)
    p.write_bytes(p.read_bytes()[:-10])  # cut the last image short
    with pytest.raises(CnnkitError, match=r"a-idx3-ubyte is truncated"):
        sources.read_idx(p)
    p.write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(CnnkitError, match="not an IDX file"):
        sources.read_idx(p)
    g = write_idx(tmp_path / "b-idx3-ubyte.gz", x, gz=True)
    g.write_bytes(g.read_bytes()[: len(g.read_bytes()) // 2])  # truncated gzip stream
    with pytest.raises(CnnkitError, match=r"b-idx3-ubyte\.gz"):
        sources.read_idx(g)
    p2 = write_idx(tmp_path / "c-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(CnnkitError, match="expected an IDX file of 3 dimensions"):
        sources.read_idx(p2, ndim=3)


def test_idx_count_mismatch_and_missing(tmp_path):
    write_mnist(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(7, np.uint8))
    with pytest.raises(CnnkitError, match="has 12 images but .* has 7 labels"):
        sources.load_idx(tmp_path, "train")
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(CnnkitError, match=r"no t10k-labels-idx1-ubyte\[\.gz\]"):
        sources.load_idx(tmp_path, "t10k")


# ---------------------------------------------------------------------------------------------- CIFAR


def write_cifar_batch(path, n, key="labels", n_classes=10, seed=0, protocol=2, numpy1=False, extra=None):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, n_classes, n).tolist()
    d = {b"batch_label": b"x", b"data": data, key.encode(): labels, b"filenames": [b"f.png"] * n, **(extra or {})}
    raw = pickle.dumps(d, protocol=protocol)
    if numpy1:  # the official files were written by numpy 1 under Python 2: numpy.core, not numpy._core
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(raw)
    return data, labels


def make_cifar10(folder, n=6, numpy1=True):
    folder.mkdir(parents=True, exist_ok=True)
    parts = [write_cifar_batch(folder / f"data_batch_{i}", n, seed=i, numpy1=numpy1) for i in range(1, 6)]
    test = write_cifar_batch(folder / "test_batch", n, seed=9, protocol=5)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    return parts, test


def test_cifar10_batches(tmp_path):
    parts, test = make_cifar10(tmp_path)
    assert sources.has_cifar10(tmp_path)
    x, y, names = sources.load_cifar10(tmp_path, "train")
    assert x.shape == (30, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    assert names[0] == "airplane" and len(names) == 10
    row = parts[1][0][2]  # third image of data_batch_2: R plane, G plane, B plane
    np.testing.assert_array_equal(x[6 + 2, 1], row[1024:2048].reshape(32, 32))
    np.testing.assert_array_equal(y, sum((p[1] for p in parts), []))
    xt, yt, _ = sources.load_cifar10(tmp_path, "test")
    np.testing.assert_array_equal(xt.reshape(len(xt), -1), test[0])


def test_cifar100_fine_labels(tmp_path):
    data, fine = write_cifar_batch(tmp_path / "train", 5, key="fine_labels", n_classes=100,
                                   extra={b"coarse_labels": [0] * 5})
    write_cifar_batch(tmp_path / "test", 3, key="fine_labels", n_classes=100)
    names = [f"c{i}".encode() for i in range(100)]
    (tmp_path / "meta").write_bytes(pickle.dumps({b"fine_label_names": names, b"coarse_label_names": []}))
    assert sources.has_cifar100(tmp_path)
    x, y, n = sources.load_cifar100(tmp_path, "train")
    assert x.shape == (5, 3, 32, 32) and y.tolist() == fine and n[99] == "c99"


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned",))


def test_cifar_corrupt_and_hostile_pickles(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(b"garbage, not a pickle")
    with pytest.raises(CnnkitError, match="data_batch_1 is not a readable CIFAR batch"):
        sources.read_cifar_pickle(tmp_path / "data_batch_1")
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil()}))
    with pytest.raises(CnnkitError, match="refusing to load global"):
        sources.read_cifar_pickle(tmp_path / "data_batch_1")
    assert not (tmp_path / "pwned").exists()
    write_cifar_batch(tmp_path / "data_batch_1", 4)
    d = pickle.loads((tmp_path / "data_batch_1").read_bytes())
    d[b"data"] = d[b"data"][:, :100]  # wrong row length
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(d))
    with pytest.raises(CnnkitError, match="data_batch_1 is corrupt"):
        sources.load_cifar10(tmp_path, "train")


# ---------------------------------------------------------------------------------------------- locating


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No $CNNKIT_DATA, an empty cache and no system folders, so only what a test makes is found."""
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "SYSTEM_DIRS", (str(tmp_path / "system"),))
    return tmp_path


@pytest.mark.parametrize("layout", ["fashion-mnist", "FashionMNIST/raw", "."])
def test_locate_layouts(clean_env, layout):
    d = clean_env / "data"
    write_mnist(d / layout, 2, 1)
    found = sources.locate("fashion-mnist", d, sources.has_idx)
    assert found.resolve() == (d / layout).resolve()


def test_locate_order_env_and_system(clean_env, monkeypatch):
    write_mnist(clean_env / "system" / "fashion-mnist", 2, 1)
    assert sources.locate("fashion-mnist", None, sources.has_idx) == clean_env / "system" / "fashion-mnist"
    write_mnist(clean_env / "env" / "FashionMNIST" / "raw", 2, 1)
    monkeypatch.setenv("CNNKIT_DATA", str(clean_env / "env"))
    assert sources.locate("fashion-mnist", None, sources.has_idx) == clean_env / "env" / "FashionMNIST" / "raw"
    write_mnist(clean_env / "arg" / "fashion-mnist", 2, 1)
    assert sources.locate("fashion-mnist", clean_env / "arg", sources.has_idx) == clean_env / "arg" / "fashion-mnist"
    # A shared root is never read flat: MNIST files there must not pass for Fashion-MNIST.
    write_mnist(clean_env / "flat", 2, 1)
    monkeypatch.setenv("CNNKIT_DATA", str(clean_env / "flat"))
    assert sources.locate("fashion-mnist", None, sources.has_idx) == clean_env / "system" / "fashion-mnist"


def test_not_found_names_every_place(clean_env):
    places = sources.candidate_dirs("fashion-mnist", clean_env / "mine")
    with pytest.raises(CnnkitError) as e:
        sources.locate("fashion-mnist", clean_env / "mine", sources.has_idx)
    msg = str(e.value)
    assert "\n" not in msg and "apt-get install dataset-fashion-mnist" in msg and "--download" in msg
    assert "$CNNKIT_DATA is not set" in msg
    for p in places:
        assert str(p) in msg
    assert str(clean_env / "mine") in msg and str(clean_env / "system" / "fashion-mnist") in msg
    assert str(clean_env / "cache" / "cnnkit" / "FashionMNIST" / "raw") in msg


def test_locate_cifar_torchvision_layout(clean_env):
    make_cifar10(clean_env / "root" / "cifar-10-batches-py", n=2)
    assert sources.locate("cifar10", clean_env / "root", sources.has_cifar10).name == "cifar-10-batches-py"


# ---------------------------------------------------------------------------------------------- image folders


def gradient(w, h, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(a, "RGB").convert(mode) if mode != "RGB" else Image.fromarray(a, "RGB")


def test_to_channels_modes():
    rgb = gradient(9, 7)
    # RGB -> grey equals PIL's own ITU-R 601 conversion; grey -> RGB repeats the plane.
    np.testing.assert_array_equal(np.asarray(sources.to_channels(rgb, 1)), np.asarray(rgb.convert("L")))
    g3 = np.asarray(sources.to_channels(rgb.convert("L"), 3))
    assert (g3 == g3[..., :1]).all()
    # RGBA over white: a transparent pixel becomes white, an opaque one keeps its colour, half mixes.
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(10, 20, 30, 0), (10, 20, 30, 255), (0, 0, 0, 128)])
    out = np.asarray(sources.to_channels(rgba, 3))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [10, 20, 30]
    assert 120 <= out[0, 2, 0] <= 130
    # 16-bit grey is scaled down (65535 -> 255), not clipped; float [0, 1] scaled up.
    i16 = Image.fromarray(np.array([[0, 257 * 100, 65535]], np.uint16))
    assert np.asarray(sources.to_channels(i16, 1)).tolist() == [[0, 100, 255]]
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    assert np.asarray(sources.to_channels(f, 1)).tolist() == [[0, 128, 255]]
    # Palette with a transparent index, 1-bit, CMYK.
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.putdata([0, 1])
    p.info["transparency"] = 0
    assert np.asarray(sources.to_channels(p, 3)).tolist() == [[[255, 255, 255], [0, 0, 255]]]
    assert np.asarray(sources.to_channels(Image.new("1", (2, 2), 1), 1)).max() == 255
    assert sources.to_channels(Image.new("CMYK", (2, 2)), 3).mode == "RGB"


def make_folder(root, spec):
    """spec: {class: [(file name, mode, (w, h)), ...]} -> random-pixel images under root/class/."""
    k = 0
    for cls, items in spec.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for name, mode, (w, h) in items:
            k += 1
            gradient(w, h, seed=k).convert(mode).save(root / cls / name)


MIXED = {
    "cat": [("a.png", "RGB", (13, 11)), ("b.jpg", "L", (20, 20)), ("c.png", "RGBA", (8, 9)),
            ("d.gif", "P", (16, 16)), ("e.bmp", "RGB", (5, 30))],
    "dog": [("a.webp", "RGB", (40, 40)), ("b.png", "LA", (12, 12)), ("c.jpeg", "CMYK", (64, 48))],
    "empty": [],
}


def test_image_folder_modes_and_sizes(tmp_path):
    make_folder(tmp_path, MIXED)
    (tmp_path / "dog" / "notes.txt").write_text("not an image: ignored by extension")
    (tmp_path / ".hidden").mkdir()
    with pytest.warns(UserWarning, match="no images: empty"):
        classes, files, labels = sources.scan_image_folder(tmp_path)
    assert classes == ["cat", "dog"] and len(files) == 8 and labels.tolist() == [0] * 5 + [1] * 3
    assert sources.first_readable(files) == (0, 3, 11)  # 13x11 RGB: 3 channels, shorter side
    for channels in (1, 3):
        x, ok, bad = sources.load_images(files, channels, 16)
        assert x.shape == (8, channels, 16, 16) and x.dtype == np.uint8 and ok.all() and not bad
    # A PNG: exactly PIL's own convert + antialiased bilinear resize, laid out CHW.
    ref = np.asarray(Image.open(files[0]).convert("RGB").resize((8, 8), Image.BILINEAR)).transpose(2, 0, 1)
    np.testing.assert_array_equal(sources.open_image(files[0], 3, 8), ref)
    # At its own size, the grey + alpha PNG comes back composited over white: l * a + 255 * (1 - a).
    la = np.asarray(Image.open(files[6]), dtype=float)  # (12, 12, 2)
    ref = la[..., 0] * la[..., 1] / 255 + 255 * (1 - la[..., 1] / 255)
    grey = sources.open_image(files[6], 1, 12)[0]
    assert grey.shape == (12, 12) and np.abs(grey - ref).max() <= 1.01


def test_jpeg_draft_and_exif(tmp_path):
    # A large smooth JPEG read at 32x32: draft decoding (1/8 scale) must match a full decode + resize.
    yy, xx = np.mgrid[0:512, 0:512]
    a = np.stack([xx // 2, yy // 2, (xx + yy) // 4], -1).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "big.jpg", quality=95)
    fast = sources.open_image(str(tmp_path / "big.jpg"), 3, 32).astype(int)
    full = np.asarray(Image.open(tmp_path / "big.jpg").convert("RGB").resize((32, 32), Image.BILINEAR))
    assert np.abs(fast - full.transpose(2, 0, 1).astype(int)).max() <= 4
    # EXIF orientation 3 (rotated 180 degrees): the dark left half is shown on the right.
    b = np.zeros((16, 16), np.uint8)
    b[:, 8:] = 255
    exif = Image.Exif()
    exif[0x0112] = 3
    Image.fromarray(b).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    x = sources.open_image(str(tmp_path / "rot.jpg"), 1, 16)[0].astype(int)
    assert x[:, :6].mean() > 200 and x[:, 10:].mean() < 50


def test_corrupt_images_skipped_and_counted(tmp_path):
    make_folder(tmp_path, {"a": [("1.png", "RGB", (10, 10)), ("2.png", "RGB", (10, 10))],
                           "b": [("1.jpg", "RGB", (10, 10))]})
    (tmp_path / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    good = (tmp_path / "b" / "1.jpg").read_bytes()
    (tmp_path / "b" / "cut.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    _, files, labels = sources.scan_image_folder(tmp_path)
    assert len(files) == 5
    with pytest.warns(UserWarning, match="skipped 2 of 5 images"):
        x, ok, bad = sources.load_images(files, 3, 10)
    assert len(x) == 3 and ok.sum() == 3 and sorted(bad) == sorted(
        [str(tmp_path / "a" / "bad.png"), str(tmp_path / "b" / "cut.jpg")])
    with pytest.raises(CnnkitError, match="none of the 2 images could be read"):
        sources.load_images([f for f in files if not ok[files.index(f)]], 3, 10)


def test_image_folder_errors(tmp_path):
    with pytest.raises(CnnkitError, match="does not exist"):
        sources.image_folder_splits(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnkitError, match="has no class folders"):
        sources.scan_image_folder(tmp_path / "empty")
    (tmp_path / "noimg" / "cat").mkdir(parents=True)
    (tmp_path / "noimg" / "cat" / "readme.txt").write_text("x")
    with pytest.raises(CnnkitError, match="has class folders .*cat.* but no images") as e:
        sources.scan_image_folder(tmp_path / "noimg")
    assert "\n" not in str(e.value)
    make_folder(tmp_path / "split" / "train", {"a": [("1.png", "L", (8, 8))]})
    make_folder(tmp_path / "split" / "val", {"a": [("1.png", "L", (8, 8))], "zebra": [("1.png", "L", (8, 8))]})
    train, val = sources.image_folder_splits(tmp_path / "split")
    assert (train.name, val.name) == ("train", "val")
    classes, _, _ = sources.scan_image_folder(train)
    with pytest.raises(CnnkitError, match="not in the training split: zebra"):
        sources.scan_image_folder(val, classes)
    make_folder(tmp_path / "odd" / "test", {"a": [("1.png", "L", (8, 8))]})
    with pytest.raises(CnnkitError, match="no train/ folder"):
        sources.image_folder_splits(tmp_path / "odd")


def test_streaming_dataset(tmp_path):
    make_folder(tmp_path, {"a": [("1.png", "RGB", (12, 12))], "b": [("1.png", "RGBA", (9, 14))]})
    (tmp_path / "b" / "0bad.png").write_bytes(b"nope")
    _, files, labels = sources.scan_image_folder(tmp_path)
    ds = sources.ImageFileDataset(files, labels, 1, 8)
    ds = pickle.loads(pickle.dumps(ds))  # DataLoader workers receive it pickled
    x, y = ds[0]
    assert x.dtype == torch.uint8 and x.shape == (1, 8, 8) and y == 0
    np.testing.assert_array_equal(x.numpy(), sources.open_image(files[0], 1, 8))
    with pytest.warns(UserWarning, match="skipping unreadable image .*0bad.png"):
        x, y = ds[1]  # the corrupt file is replaced by the next readable one
    assert y == 1 and ds.skipped == 1 and x.shape == (1, 8, 8)
    batch = next(iter(torch.utils.data.DataLoader(sources.ImageFileDataset(files[:1] + files[2:], [0, 1], 3, 8),
                                                  batch_size=2)))
    assert batch[0].shape == (2, 3, 8, 8) and batch[1].tolist() == [0, 1]
