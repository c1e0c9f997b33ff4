"""Semantic-segmentation data: shapes class maps, images/ + masks/ folders, Pascal VOC, the mask
augmentation, and one clear line for each mistake in the files.

Files are written here, in tmp_path, so every pixel of every mask is known."""
import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data.datasets import load_data
from cnnkit.data.mask_augment import MaskAugment, warp_masks
from cnnkit.data.object_augment import ObjectAugmentConfig
from cnnkit.data.scenes import make_scene_batch
from cnnkit.data.segmentation import IGNORE, mask_ids, semantic_from_objects, voc_colormap
from cnnkit.registry import CnnkitError


def write_pair(folder, stem, w=40, h=30, rect=(5, 5, 20, 15), cls=1, mode="L", size=None):
    """An image with a dark rectangle and its mask (class `cls` there, 0 elsewhere)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    img = np.full((h, w, 3), 230, dtype=np.uint8)
    m = np.zeros((h, w), dtype=np.uint8)
    x0, y0, x1, y1 = rect
    img[y0:y1, x0:x1] = 20
    m[y0:y1, x0:x1] = cls
    Image.fromarray(img).save(folder / "images" / f"{stem}.jpg", quality=95)
    mw, mh = size or (w, h)
    mask = Image.fromarray(m).resize((mw, mh), Image.NEAREST)
    if mode == "P":
        mask = mask.convert("P")
        mask.putpalette([int(v) for v in voc_colormap().flatten()])
    elif mode == "RGB":
        mask = Image.fromarray(voc_colormap()[np.asarray(mask)])
    mask.save(folder / "masks" / f"{stem}.png")


def test_shapes_masks_are_the_scenes_instance_masks_painted_with_their_classes():
    b = load_data("shapes", targets="mask", num_train=32, num_val=8)
    assert b.classes[0] == "background" and len(b.classes) == 9
    assert b.train.targets.shape == (32, 64, 64) and b.train.targets.dtype == torch.uint8
    images, objs = make_scene_batch(32, seed=0)
    assert torch.equal(b.train.images, images)
    sem = semantic_from_objects(objs, 32, 64)
    assert torch.equal(b.train.targets, sem)
    # every object's visible pixels carry its class + 1, the rest of the image is background
    owner = objs.image_index()
    for j in range(len(objs.labels)):
        assert bool((sem[owner[j]][objs.masks[j]] == objs.labels[j] + 1).all())
    assert int((sem > 0).sum()) == int(objs.masks.sum())


def test_segfolder_letterboxes_images_and_masks_and_ignores_the_padding(tmp_path):
    for i in range(4):
        write_pair(tmp_path, f"im{i}", cls=1 + i % 2)
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    b = load_data("segfolder", data_dir=tmp_path, targets="mask", image_size=40, val=0.25, log=lambda *a: None)
    assert b.classes == ["background", "cat", "dog"]
    m = b.train.targets[0]
    # 40 x 30 -> 40 x 30 centred in 40 x 40: 5 padded rows above and below, ignored
    assert (m[:5] == IGNORE).all() and (m[35:] == IGNORE).all()
    inside = m[5:35]
    assert set(inside.unique().tolist()) <= {0, 1, 2}
    assert int((inside > 0).sum()) == 15 * 10  # the rectangle, nearest-resized at scale 1
    assert b.train.images.shape == (3, 3, 40, 40) and len(b.val) == 1


def test_palette_and_voc_colour_masks_read_as_class_ids(tmp_path):
    write_pair(tmp_path / "p", "a", cls=3, mode="P")
    write_pair(tmp_path / "c", "a", cls=3, mode="RGB")
    for sub in ("p", "c"):
        ids = mask_ids(Image.open(tmp_path / sub / "masks" / "a.png"), "a.png", 21)
        assert ids.max() == 3 and int((ids == 3).sum()) == 150


def test_voc_segmentation_layout(tmp_path):
    root = tmp_path / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    for s, cls in (("2007_000001", 15), ("2007_000002", 12)):
        Image.fromarray(np.full((30, 40, 3), 128, dtype=np.uint8)).save(root / "JPEGImages" / f"{s}.jpg")
        m = np.zeros((30, 40), dtype=np.uint8)
        m[5:15, 5:20] = cls
        m[4, 4:21] = 255  # VOC's border, ignored
        p = Image.fromarray(m, "P")
        p.putpalette([int(v) for v in voc_colormap().flatten()])
        p.save(root / "SegmentationClass" / f"{s}.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("2007_000001\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000002\n")
    b = load_data("voc", data_dir=tmp_path, targets="mask", image_size=40, log=lambda *a: None)
    assert len(b.classes) == 21 and b.classes[15] == "person"
    assert b.train.targets.max() == IGNORE and 15 in b.train.targets.unique().tolist()
    assert 12 in b.val.targets.unique().tolist()


@pytest.mark.parametrize("case,match", [
    ("size", "mask is 20x15 but its image"),
    ("value", "mask value 7 is beyond the 3 classes"),
    ("rgb", "RGB mask that is not a palette"),
    ("missing", "have no mask"),
])
def test_bad_masks_give_one_clear_line(tmp_path, case, match):
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    if case == "size":
        write_pair(tmp_path, "a", size=(20, 15))
    elif case == "value":
        write_pair(tmp_path, "a", cls=7)
    elif case == "rgb":
        write_pair(tmp_path, "a")
        a = np.zeros((30, 40, 3), dtype=np.uint8)
        a[..., 0] = 17  # no VOC colour
        a[0, 0] = (1, 2, 3)
        Image.fromarray(a).save(tmp_path / "masks" / "a.png")
    else:
        write_pair(tmp_path, "a")
        Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(tmp_path / "images" / "b.png")
    with pytest.raises(CnnkitError, match=match):
        load_data("segfolder", data_dir=tmp_path, targets="mask", val=0.5, log=lambda *a: None)


def test_a_classification_data_set_cannot_feed_a_segmentation_model():
    with pytest.raises(CnnkitError, match="a class per pixel"):
        load_data("mnist", targets="mask")


def test_augment_moves_masks_with_the_pixels():
    """Pixels and mask go through the same flip and affine map: a bright square stays labelled."""
    x = torch.zeros(4, 3, 32, 32)
    m = torch.zeros(4, 32, 32, dtype=torch.uint8)
    x[:, :, 8:16, 4:12] = 1.0
    m[:, 8:16, 4:12] = 2
    g = torch.Generator().manual_seed(0)
    aug = MaskAugment(ObjectAugmentConfig(hflip=0.5, scale=0.3, translate=0.2))
    xa, ma = aug(x, m, g)
    labelled = ma == 2
    assert labelled.any()
    bright = xa[:, 0] > 0.75
    # nearest vs bilinear sampling differ only on the square's edge
    assert (labelled & bright).sum() >= 0.8 * labelled.sum()
    assert set(ma.unique().tolist()) <= {0, 2, IGNORE}


def test_pixels_from_outside_the_image_are_ignored():
    m = torch.ones(1, 8, 8, dtype=torch.uint8)
    theta = torch.tensor([[[1.0, 0, 0.5], [0, 1.0, 0]]])  # shift left by a quarter of the width
    out = warp_masks(m, theta)
    assert (out[0, :, :6] == 1).all() and (out[0, :, 6:] == IGNORE).all()
