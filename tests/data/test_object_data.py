"""Per-object targets through the data layer: ObjectTargets, load_data(targets="objects") for shapes
scenes and COCO files, batching by the in-memory loader, and augmentation that moves boxes and masks."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import masks_to_boxes

from cnnkit.data.datasets import load_data
from cnnkit.data.loader import make_loader
from cnnkit.data.object_augment import ObjectAugment, boxes_of_masks, parse_object_augment
from cnnkit.data.scenes import make_scene_batch
from cnnkit.data.targets import ObjectTargets
from cnnkit.registry import CnnkitError


def _items():
    return [dict(boxes=[[0, 0, 4, 4], [2, 2, 6, 8]], labels=[1, 2]), dict(boxes=torch.zeros(0, 4), labels=[]),
            dict(boxes=[[1, 1, 3, 3]], labels=[0])]


def test_object_targets_index_keep_and_cat():
    t = ObjectTargets.from_list(_items())
    assert len(t) == 3 and t.counts().tolist() == [2, 0, 1] and t.image_index().tolist() == [0, 0, 2]
    sub = t[torch.tensor([2, 0])]
    assert sub.counts().tolist() == [1, 2] and sub.labels.tolist() == [0, 1, 2]
    assert t[1:].counts().tolist() == [0, 1]
    kept = t.keep(torch.tensor([False, True, True]))
    assert kept.counts().tolist() == [1, 0, 1] and kept.labels.tolist() == [2, 0]
    both = ObjectTargets.cat([t, sub])
    assert len(both) == 5 and both.labels.tolist() == [1, 2, 0, 0, 1, 2]
    per = t.per_image()
    assert [len(d["labels"]) for d in per] == [2, 0, 1] and torch.equal(per[0]["boxes"][1], torch.tensor([2., 2, 6, 8]))
    with pytest.raises(ValueError, match="rows"):
        ObjectTargets(torch.zeros(2, 4), torch.zeros(3, dtype=torch.long), torch.tensor([0, 2]))


def test_shapes_scenes_through_load_data_and_the_loader():
    b = load_data("shapes", targets="objects", num_train=40, num_val=8)
    assert b.image_size == 64 and b.train.images.shape == (40, 3, 64, 64) and isinstance(b.train.targets, ObjectTargets)
    assert len(b.val) == 8 and b.val_name == "test" and len(b.classes) == 8
    loader = make_loader(b.train, 16, True, True, "cpu", 0)
    x, y = next(iter(loader))
    assert x.shape == (16, 3, 64, 64) and len(y) == 16 and (y.counts() >= 1).all()
    assert torch.equal(masks_to_boxes(y.masks) + torch.tensor([0., 0, 1, 1]), y.boxes)  # pixel edges
    held = load_data("shapes", targets="objects", num_train=40, val="0.25")
    assert len(held.train) == 30 and len(held.val) == 10 and held.val_name == "holdout"


def test_a_classification_only_data_set_names_the_ones_with_boxes():
    with pytest.raises(CnnkitError, match="mnist has one class label per image only.*use .*shapes"):
        load_data("mnist", targets="objects")


def test_coco_files_through_load_data(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / split).mkdir()
        a = np.full((40, 60, 3), 255, dtype=np.uint8)
        a[10:30, 5:25] = 0
        Image.fromarray(a).save(root / split / "1.png")
        ann = dict(images=[dict(id=1, file_name="1.png", width=60, height=40)],
                   categories=[dict(id=7, name="box")],
                   annotations=[dict(id=1, image_id=1, category_id=7, bbox=[5, 10, 20, 20], iscrowd=0, area=400,
                                     segmentation=[[5, 10, 25, 10, 25, 30, 5, 30]])])
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(ann))
    lines = []
    b = load_data("coco", data_dir=str(root), targets="objects", image_size=60, log=lines.append)
    assert b.classes == ["box"] and len(b.train) == len(b.val) == 1
    # 60 x 40 letterboxed into 60 x 60: 10 rows of padding on top
    assert torch.allclose(b.train.targets.boxes, torch.tensor([[5.0, 20.0, 25.0, 40.0]]))
    with pytest.raises(CnnkitError, match="--data-dir"):
        load_data("coco", targets="objects")


def _batch():
    x, t = make_scene_batch(6, seed=2, size=48)
    return x.float() / 255, t


def test_flip_and_zoom_move_boxes_with_their_masks_exactly():
    x, t = _batch()
    aug = ObjectAugment(parse_object_augment("hflip=0.5,scale=0.3,translate=0.2,color=0.2"))
    g = torch.Generator().manual_seed(0)
    x2, t2 = aug(x, t, g)
    assert x2.shape == x.shape and 0 <= x2.min() and x2.max() <= 1
    boxes, nonempty = boxes_of_masks(t2.masks)
    assert nonempty.all() and torch.equal(boxes, t2.boxes)  # every kept box is its moved mask's
    assert ((t2.boxes[:, 2:] - t2.boxes[:, :2]) >= 2).all()
    x3, t3 = aug(x, t, torch.Generator().manual_seed(0))  # the generator decides everything: resume replays it
    assert torch.equal(x2, x3) and torch.equal(t2.boxes, t3.boxes)


def test_a_flip_without_masks_mirrors_the_boxes_and_the_pixels():
    x = torch.zeros(1, 1, 10, 20)
    x[..., 2:5, 3:7] = 1.0
    t = ObjectTargets.from_list([dict(boxes=[[3, 2, 7, 5]], labels=[0])])
    x2, t2 = ObjectAugment(parse_object_augment("hflip=1"))(x, t, torch.Generator().manual_seed(0))
    assert torch.equal(t2.boxes, torch.tensor([[13.0, 2.0, 17.0, 5.0]]))
    assert x2[0, 0, 2:5, 13:17].eq(1).all() and x2.sum() == x.sum()


def test_bad_augmentation_specs_are_clear():
    with pytest.raises(CnnkitError, match="Did you mean 'hflip'"):
        parse_object_augment("hflp=0.5")
    with pytest.raises(CnnkitError, match="probability"):
        parse_object_augment("hflip=2")
    assert not ObjectAugment(parse_object_augment("none")).active
