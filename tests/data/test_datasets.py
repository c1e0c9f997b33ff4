"""`load_data`: the registry entries, splits, channel conversion, resizing, statistics, and the
real Fashion-MNIST that Debian's dataset-fashion-mnist installs."""
import gzip
import pickle
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnkit.data import datasets as D
from cnnkit.data import sources
from cnnkit.data.datasets import DataBundle, ImageSplit, dataset_info, list_datasets, load_data
from cnnkit.registry import CnnkitError

FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path, arr):
    raw = bytes([0, 0, 8, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes() + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw, compresslevel=1))


def write_mnist(folder, n_train=40, n_test=10, size=28, seed=0):
    """Tiny IDX files; labels cycle through the 10 classes so every class has n/10 images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", y)
        out[split] = (x, y)
    return out


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """Nothing is found except what the test writes; any download attempt fails the test."""
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    monkeypatch.delenv("CNNKIT_MAX_IN_MEMORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "SYSTEM_DIRS", (str(tmp_path / "system"),))

    def no_network(*a, **k):
        raise AssertionError("download attempted")

    monkeypatch.setattr(sources, "download", no_network)
    return tmp_path


# ---------------------------------------------------------------------------------------------- registry


def test_registry_entries():
    assert {"shapes", "fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder"} <= set(list_datasets())
    assert list_datasets("cifar*") == ["cifar10", "cifar100"]
    for name in list_datasets():
        info = dataset_info(name)
        assert info["name"] == name and info["description"] and "\n" not in info["description"]
        assert set(info) >= {"in_chans", "image_size", "num_classes", "train", "test"}
    assert (dataset_info("fashion-mnist")["in_chans"], dataset_info("fashion-mnist")["image_size"]) == (1, 28)
    assert dataset_info("cifar100")["num_classes"] == 100
    with pytest.raises(CnnkitError, match="Did you mean 'fashion-mnist'"):
        load_data("fashon-mnist")


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_train=-5), "num_train must be a positive"),
    (dict(num_val=0), "num_val must be a positive"),
    (dict(val=1.5), "val must be 'test'"),
    (dict(val=0.0), "val must be 'test'"),
    (dict(val="train"), "val must be 'test'"),
    (dict(in_chans=2), "in_chans must be 1"),
    (dict(image_size=4), "image_size must be"),
    (dict(seed=-1), "seed must be"),
])
def test_bad_values(kwargs, match):
    with pytest.raises(CnnkitError, match=match):
        load_data("mnist", **kwargs)


# ---------------------------------------------------------------------------------------------- IDX via load_data


def test_mnist_files_channels_resize(clean_env):
    data = write_mnist(clean_env / "d" / "MNIST" / "raw")  # torchvision's layout under --data-dir
    b = load_data("mnist", data_dir=str(clean_env / "d"))
    assert isinstance(b, DataBundle) and isinstance(b.train, ImageSplit)
    assert b.train.images.shape == (40, 1, 28, 28) and b.val.images.shape == (10, 1, 28, 28)
    assert b.train.images.dtype == torch.uint8 and b.train.targets.dtype == torch.int64
    assert (b.in_chans, b.image_size, b.val_name, b.classes[3]) == (1, 28, "test", "3")
    np.testing.assert_array_equal(b.train.images[:, 0].numpy(), data["train"][0])
    # mean/std: exact histogram method equals a float computation on the [0, 1] scale.
    x = b.train.images.double() / 255
    assert b.mean[0] == pytest.approx(x.mean().item(), abs=1e-12)
    assert b.std[0] == pytest.approx(x.std(unbiased=False).item(), abs=1e-9)

    # grey -> RGB repeats the plane; resize matches antialiased bilinear interpolation within rounding.
    c = load_data("mnist", data_dir=str(clean_env / "d"), in_chans=3, image_size=16)
    assert c.train.images.shape == (40, 3, 16, 16) and (c.in_chans, c.image_size) == (3, 16)
    assert torch.equal(c.train.images[:, 0], c.train.images[:, 2])
    ref = F.interpolate(b.train.images.float(), size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    assert (c.train.images[:, :1].float() - ref.round().clamp(0, 255)).abs().max() <= 1
    assert c.mean[0] == c.mean[1] == c.mean[2]


def test_holdout_split_deterministic_stratified(clean_env):
    write_mnist(clean_env / "d" / "mnist", n_train=200)
    kw = dict(data_dir=str(clean_env / "d"), val=0.1)
    a, b = load_data("mnist", seed=1, **kw), load_data("mnist", seed=1, **kw)
    c = load_data("mnist", seed=2, **kw)
    assert a.val_name == "holdout" and len(a.train) == 180 and len(a.val) == 20
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.targets, b.train.targets)
    assert not torch.equal(a.val.images, c.val.images)
    assert a.val.targets.bincount(minlength=10).tolist() == [2] * 10  # 10% of each class
    # Disjoint and together the whole train set (images are random, so rows identify them).
    rows = lambda s: {bytes(r) for r in s.images.reshape(len(s), -1).numpy()}
    assert not rows(a.train) & rows(a.val) and len(rows(a.train) | rows(a.val)) == 200
    # num_train subsamples before the hold-out; num_val caps the validation split.
    d = load_data("mnist", seed=1, num_train=50, num_val=3, **kw)
    assert (len(d.train), len(d.val)) == (45, 3) and rows(d.train) <= rows(a.train) | rows(a.val)
    e = load_data("mnist", data_dir=str(clean_env / "d"), num_train=30, num_val=4)
    assert (len(e.train), len(e.val), e.val_name) == (30, 4, "test")


def test_holdout_split_rounding():
    labels = np.repeat(np.arange(3), [5, 5, 3])  # 13 images: 0.3 of them is 3.9 -> 4
    tr, va = D.holdout_split(labels, 0.3, seed=0)
    assert len(va) == 4 and len(tr) == 9 and not set(tr) & set(va)
    assert np.bincount(labels[va], minlength=3).tolist() in ([2, 1, 1], [1, 2, 1], [1, 1, 2])
    with pytest.raises(CnnkitError, match="leaves no validation"):
        D.holdout_split(np.zeros(4, int), 0.1)


def test_not_found_never_downloads(clean_env):
    with pytest.raises(CnnkitError) as e:
        load_data("fashion-mnist", data_dir=str(clean_env / "empty"))  # download=False: no network
    msg = str(e.value)
    assert "not found" in msg and str(clean_env / "empty" / "FashionMNIST" / "raw") in msg
    assert str(clean_env / "system" / "fashion-mnist") in msg and "apt-get install dataset-fashion-mnist" in msg


def test_download_only_when_asked(clean_env, monkeypatch):
    calls = []

    def fake_download(name, root=None):  # what torchvision leaves behind: <root>/MNIST/raw/*
        calls.append((name, root))
        write_mnist(Path(root) / "MNIST" / "raw", 20, 10)
        return Path(root)

    monkeypatch.setattr(sources, "download", fake_download)
    with pytest.raises(CnnkitError, match="not found"):
        load_data("mnist", data_dir=str(clean_env / "dl"))
    assert calls == []
    b = load_data("mnist", data_dir=str(clean_env / "dl"), download=True)
    assert calls == [("mnist", str(clean_env / "dl"))] and len(b.train) == 20
    load_data("mnist", data_dir=str(clean_env / "dl"), download=True)  # found now: no second download
    assert len(calls) == 1


# ---------------------------------------------------------------------------------------------- CIFAR via load_data


def test_cifar10_rgb_to_grey_matches_pil(clean_env):
    folder = clean_env / "c" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, 4).tolist()}
        (folder / f).write_bytes(pickle.dumps(d, protocol=2))
    b = load_data("cifar10", data_dir=str(clean_env / "c"), in_chans=1)  # no batches.meta: built-in names
    assert b.train.images.shape == (20, 1, 32, 32) and b.val.images.shape == (4, 1, 32, 32)
    assert b.classes[0] == "airplane" and len(b.classes) == 10 and b.in_chans == 1
    rgb = load_data("cifar10", data_dir=str(clean_env / "c")).train.images
    for i in (0, 7, 19):
        pil = Image.fromarray(rgb[i].permute(1, 2, 0).numpy()).convert("L")  # ITU-R 601 luma
        np.testing.assert_array_equal(b.train.images[i, 0].numpy(), np.asarray(pil))


# ---------------------------------------------------------------------------------------------- image folders


def save(path, w, h, mode="RGB", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(a).convert(mode).save(path)


def test_imagefolder_train_val(clean_env):
    root = clean_env / "imgs"
    for i in range(6):
        save(root / "train" / "cat" / f"{i}.png", 20, 20, seed=i)
        save(root / "train" / "dog" / f"{i}.jpg", 30 + i, 24, "L", seed=10 + i)
    save(root / "val" / "dog" / "v.png", 12, 12, "RGBA", seed=99)
    (root / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="skipped 1 of 13"):
        b = load_data("imagefolder", data_dir=str(root))
    assert b.classes == ["cat", "dog"] and b.val_name == "test"
    assert (b.in_chans, b.image_size) == (3, 20)  # from the first image: RGB 20x20
    assert b.train.images.shape == (12, 3, 20, 20) and b.train.skipped == 1
    assert b.train.targets.tolist() == [0] * 6 + [1] * 6 and b.val.targets.tolist() == [1]
    with pytest.warns(UserWarning, match="skipped 1 of"):
        g = load_data("imagefolder", data_dir=str(root), in_chans=1, image_size=8, val=0.5, seed=3)
    assert g.train.images.shape[1:] == (1, 8, 8) and g.val_name == "holdout"
    assert len(g.train) + len(g.val) == 12 and len(g.val) == 6


def test_imagefolder_flat_needs_fraction(clean_env):
    root = clean_env / "flat"
    for i in range(4):
        save(root / "a" / f"{i}.png", 10, 10, "L", seed=i)
        save(root / "b" / f"{i}.png", 10, 10, "L", seed=9 + i)
    with pytest.raises(CnnkitError, match="no val/ or test/ folder.*val 0.1"):
        load_data("imagefolder", data_dir=str(root))
    with pytest.raises(CnnkitError, match="needs --data-dir"):
        load_data("imagefolder")
    b = load_data("imagefolder", data_dir=str(root), val=0.25)
    assert (len(b.train), len(b.val), b.in_chans, b.image_size) == (6, 2, 1, 10)
    assert sorted(b.val.targets.tolist()) == [0, 1]  # stratified: one of each class
    (clean_env / "none").mkdir()
    with pytest.raises(CnnkitError, match="has no class folders"):
        load_data("imagefolder", data_dir=str(clean_env / "none"), val=0.5)


def test_streaming_when_too_large(clean_env, monkeypatch):
    root = clean_env / "big"
    for i in range(3):
        save(root / "train" / "x" / f"{i}.png", 16, 16, seed=i)
        save(root / "train" / "y" / f"{i}.png", 16, 16, seed=5 + i)
        save(root / "val" / "y" / f"{i}.png", 16, 16, seed=9 + i)
    whole = load_data("imagefolder", data_dir=str(root))
    monkeypatch.setenv("CNNKIT_MAX_IN_MEMORY", "1K")  # 9 * 3 * 16 * 16 bytes > 1 KiB
    b = load_data("imagefolder", data_dir=str(root))
    assert b.train.images is None and isinstance(b.train.dataset, torch.utils.data.Dataset)
    assert len(b.train) == 6 and len(b.val) == 3 and b.train.targets.tolist() == [0, 0, 0, 1, 1, 1]
    x, y = b.train.dataset[4]
    assert x.dtype == torch.uint8 and torch.equal(x, whole.train.images[4]) and y == 1
    assert b.mean == pytest.approx(whole.mean) and b.std == pytest.approx(whole.std)
    batch = next(iter(torch.utils.data.DataLoader(b.val.dataset, batch_size=3)))
    assert torch.equal(batch[0], whole.val.images)
    # Tensor data sets stream too when resizing would not fit: items resized one at a time.
    write_mnist(clean_env / "m" / "mnist", 10, 10)
    s = load_data("mnist", data_dir=str(clean_env / "m"), image_size=64, in_chans=3, max_in_memory=10_000)
    full = load_data("mnist", data_dir=str(clean_env / "m"), image_size=64, in_chans=3, max_in_memory=1 << 30)
    assert s.train.images is None and torch.equal(s.train.dataset[3][0], full.train.images[3])


# ---------------------------------------------------------------------------------------------- shapes


def test_shapes_uses_disjoint_test_offset(monkeypatch):
    calls = []

    def make_classification(n, seed=0, size=32, channels=3, offset=0):
        calls.append((n, seed, size, channels, offset))
        idx = np.arange(offset, offset + n)
        return np.broadcast_to((idx % 256).astype(np.uint8)[:, None, None, None], (n, channels, size, size)).copy(), idx % 4

    fake = types.SimpleNamespace(SHAPE_CLASSES=("circle", "square", "triangle", "star"),
                                 make_classification=make_classification)
    monkeypatch.setitem(sys.modules, "cnnkit.data.shapes", fake)
    b = load_data("shapes", num_train=40, num_val=8, image_size=16, in_chans=1, seed=5)
    assert calls[0] == (40, 5, 16, 1, 0) and calls[1][:4] == (8, 5, 16, 1) and calls[1][4] >= 40
    assert b.train.images.shape == (40, 1, 16, 16) and b.val.images.shape == (8, 1, 16, 16)
    assert (b.classes, b.val_name, b.source) == (["circle", "square", "triangle", "star"], "test", "generated")
    calls.clear()
    h = load_data("shapes", num_train=40, val=0.25)
    assert calls == [(40, 0, 32, 3, 0)] and (len(h.train), len(h.val)) == (30, 10)


def test_shapes_real():
    pytest.importorskip("cnnkit.data.shapes", reason="cnnkit.data.shapes not written yet")
    b = load_data("shapes", num_train=64, num_val=16)
    assert b.train.images.shape == (64, 3, 32, 32) and b.val.images.shape == (16, 3, 32, 32)
    assert b.train.images.dtype == torch.uint8 and b.train.targets.dtype == torch.int64
    assert 0 <= int(b.train.targets.min()) and int(b.train.targets.max()) < len(b.classes)
    train_rows = {bytes(r) for r in b.train.images.reshape(64, -1).numpy()}
    assert not train_rows & {bytes(r) for r in b.val.images.reshape(16, -1).numpy()}
    assert all(0 < s for s in b.std)


# ---------------------------------------------------------------------------------------------- real Fashion-MNIST


@pytest.fixture(scope="module")
def fashion():
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{FASHION} missing: `apt-get install dataset-fashion-mnist` to run this test")
    t = time.perf_counter()
    b = load_data("fashion-mnist", data_dir=str(FASHION))
    print(f"\nFashion-MNIST loaded from .gz in {time.perf_counter() - t:.2f} s")
    return b


def test_fashion_mnist_real(fashion):
    b = fashion
    assert b.train.images.shape == (60000, 1, 28, 28) and b.val.images.shape == (10000, 1, 28, 28)
    assert b.train.images.dtype == torch.uint8 and b.train.targets.dtype == torch.int64
    assert b.classes == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert b.train.targets.bincount().tolist() == [6000] * 10 and b.val.targets.bincount().tolist() == [1000] * 10
    assert (b.in_chans, b.image_size, b.val_name) == (1, 28, "test")
    # The published normalization of Fashion-MNIST's training set.
    assert b.mean[0] == pytest.approx(0.2860, abs=1e-4) and b.std[0] == pytest.approx(0.3530, abs=1e-4)
    assert b.train.images[:100].float().mean() > 10  # real pictures, not zeros


def test_fashion_mnist_found_without_data_dir(fashion, monkeypatch):
    # Found at /usr/share/datasets/fashion-mnist by the default search; listed in the message otherwise.
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    places = [str(p) for p in sources.candidate_dirs("fashion-mnist")]
    assert str(FASHION) in places
    assert sources.locate("fashion-mnist", None, sources.has_idx) in (FASHION, *map(Path, places))
