"""Detection data on disk: COCO JSON, YOLO YAML + txt, Pascal VOC XML, and the letterbox loader.

Every file is written here, in tmp_path, so boxes, masks and pixels are known exactly.
"""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

from cnnkit.data import detection_sources as ds
from cnnkit.data.detection_sources import (PAD_VALUE, VOC_CLASSES, DetectionPool, load_detection_images,
                                           read_coco, read_voc, read_yolo)
from cnnkit.registry import CnnkitError


def write_image(path, w, h, rect=None, colour=(20, 20, 20)):
    """A white w x h RGB image, with pixels [x0, x1) x [y0, y1) of `rect` in `colour`."""
    a = np.full((h, w, 3), 255, dtype=np.uint8)
    if rect is not None:
        x0, y0, x1, y1 = rect
        a[y0:y1, x0:x1] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


# ----------------------------------------------------------------------------------------------
# the loader


def test_letterbox_moves_a_known_box_to_the_known_place(tmp_path):
    f = write_image(tmp_path / "wide.png", 100, 50, rect=(20, 10, 40, 30))
    pool = DetectionPool(["thing"], [str(f)], [dict(boxes=[[20, 10, 40, 30]], labels=[0])])
    x, t, report = load_detection_images(pool, 50, 3)
    # scale 0.5: content 50 x 25, centred: 12 rows of grey above, 13 below
    assert x.shape == (1, 3, 50, 50) and x.dtype == torch.uint8
    assert torch.equal(t.boxes, torch.tensor([[10.0, 17.0, 20.0, 27.0]]))
    assert t.labels.tolist() == [0] and t.masks is None
    assert (x[0, :, :12] == PAD_VALUE).all() and (x[0, :, 37:] == PAD_VALUE).all()
    assert (x[0, :, 18:26, 11:19] < 60).all()  # the dark rectangle, inside the moved box
    assert (x[0, :, 12:37, :9] > 200).all() and (x[0, :, 12:37, 21:] > 200).all()
    assert report["images"] == 1 and report["objects"] == 1 and report["clipped_boxes"] == 0

    tall = write_image(tmp_path / "tall.png", 40, 80, rect=(0, 0, 40, 80))
    xt, tt, _ = load_detection_images(DetectionPool(["a"], [str(tall)], [dict(boxes=[[0, 40, 40, 80]], labels=[0])]), 40, 1)
    assert xt.shape == (1, 1, 40, 40)
    assert torch.equal(tt.boxes, torch.tensor([[10.0, 20.0, 30.0, 40.0]]))  # 20 wide, centred: 10 each side
    assert (xt[0, 0, :, :10] == PAD_VALUE).all() and (xt[0, 0, :, 30:] == PAD_VALUE).all()


def test_clipping_dropping_and_unreadable_images_are_counted(tmp_path):
    good = write_image(tmp_path / "a.png", 64, 64)
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"not an image at all")
    empty = write_image(tmp_path / "c.png", 32, 32)
    boxes = [[-10, -5, 20, 20],  # clipped to (0, 0, 20, 20)
             [30, 30, 30.5, 50],  # half a pixel wide: dropped
             [70, 10, 90, 20],  # wholly outside: nothing left, dropped
             [10, 40, 70, 63]]  # clipped on the right
    pool = DetectionPool(["a", "b"], [str(good), str(bad), str(empty)],
                         [dict(boxes=boxes, labels=[0, 1, 1, 0]), dict(boxes=[[1, 1, 5, 5]], labels=[1]),
                          dict(boxes=np.zeros((0, 4)), labels=[])])
    with pytest.warns(UserWarning, match="b.jpg"):
        x, t, report = load_detection_images(pool, 64, 3)
    assert x.shape == (2, 3, 64, 64) and t.counts().tolist() == [2, 0]
    assert torch.equal(t.boxes, torch.tensor([[0.0, 0, 20, 20], [10, 40, 64, 63]]))
    assert report["unreadable_images"] == 1 and report["clipped_boxes"] == 2 and report["dropped_boxes"] == 2
    assert report["images_without_objects"] == 1 and report["objects"] == 2

    with pytest.raises(CnnkitError, match="none of the 1 images"):
        load_detection_images(DetectionPool(["a"], [str(bad)], [dict(boxes=[], labels=[])]), 32)
    with pytest.raises(CnnkitError, match="empty"):
        load_detection_images(DetectionPool(["a"], [], []), 32)
    with pytest.raises(CnnkitError, match="beyond the 1 classes"):
        DetectionPool(["a"], [str(good)], [dict(boxes=[[0, 0, 4, 4]], labels=[1])])


# ----------------------------------------------------------------------------------------------
# COCO


def _coco(tmp_path, images=None):
    """Two 40 x 40 images and one 80 x 40; categories 7 and 3 (so 3 -> 0, 7 -> 1)."""
    root = tmp_path / "images"
    for name, w, h in (("one.png", 40, 40), ("two.png", 40, 40), ("three.png", 80, 40)):
        write_image(root / name, w, h)
    rle_mask = np.zeros((40, 40), dtype=np.uint8, order="F")
    rle_mask[5:15, 20:32] = 1  # 120 pixels
    rle_mask[30:33, 2:4] = 1  # + 6
    rle = mask_util.encode(rle_mask)
    rle["counts"] = rle["counts"].decode("ascii")
    # uncompressed RLE (column-major run lengths): 40 background, then 40 foreground (column 1)
    raw = {"size": [40, 40], "counts": [40, 40, 1520]}
    poly = [[2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]]
    d = {
        "images": images if images is not None else [
            {"id": 10, "file_name": "one.png", "height": 40, "width": 40},
            {"id": 11, "file_name": "two.png", "height": 40, "width": 40},
            {"id": 12, "file_name": "three.png", "height": 40, "width": 80}],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [2, 2, 10, 8], "segmentation": poly, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [20, 5, 12, 28], "segmentation": rle, "iscrowd": 0},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [1, 0, 1, 40], "segmentation": raw, "iscrowd": 0},
            {"id": 4, "image_id": 11, "category_id": 7, "bbox": [0, 0, 40, 40], "segmentation": raw, "iscrowd": 1},
        ],
    }
    p = tmp_path / "instances.json"
    p.write_text(json.dumps(d))
    return p, root, dict(poly=poly, rle=rle, raw=raw)


def test_coco_classes_boxes_and_masks(tmp_path):
    p, root, segs = _coco(tmp_path)
    pool = read_coco(p, root)
    assert pool.classes == ["three", "seven"] and len(pool) == 3
    assert pool.annotations[0]["labels"].tolist() == [1, 0]
    assert pool.annotations[0]["boxes"].tolist() == [[2, 2, 12, 10], [20, 5, 32, 33]]
    assert pool.counts["crowd_skipped"] == 1
    assert len(pool.annotations[2]["labels"]) == 0  # an image with no objects is kept
    # each kind of segmentation decodes to pycocotools' own area
    poly_rle = mask_util.merge(mask_util.frPyObjects(segs["poly"], 40, 40))
    for seg, area in ((segs["poly"], mask_util.area(poly_rle)),
                      (segs["rle"], 126), (segs["raw"], 40)):
        assert ds.decode_segmentation(seg, 40, 40).sum() == area
    assert mask_util.area({"size": [40, 40], "counts": segs["rle"]["counts"].encode()}) == 126

    x, t, report = load_detection_images(pool, 40, 3)  # square 40 x 40: no scaling for the first two
    assert x.shape == (3, 3, 40, 40) and t.counts().tolist() == [2, 1, 0]
    assert t.masks.shape == (3, 40, 40)
    assert t.masks[0].sum() == mask_util.area(poly_rle)
    assert t.masks[1].sum() == 126 and t.masks[1, 5:15, 20:32].all()
    assert t.masks[2].sum() == 40 and t.masks[2, :, 1].all()
    assert report["crowd_skipped"] == 1 and report["objects"] == 3
    # letterboxed to 20: masks and boxes halve together
    x2, t2, _ = load_detection_images(pool, 20, 1)
    # nearest sampling 40 -> 20 takes the odd rows and columns: 5 x 6 of the block, 1 of the bar
    assert t2.masks[1].sum() == 31 and t2.masks[1, 2:7, 10:16].all()
    assert torch.equal(t2.boxes[0], torch.tensor([1.0, 1, 6, 5]))
    # the wide image: 80 x 40 -> 20 x 10, centred: rows 5..14
    assert (x2[2, 0, :5] == PAD_VALUE).all() and (x2[2, 0, 5:15] > 200).all()


def test_coco_bad_input(tmp_path):
    p, root, _ = _coco(tmp_path)
    (root / "two.png").unlink()
    (root / "three.png").unlink()
    with pytest.raises(CnnkitError, match=r"instances.json names 2 image files that do not exist.*two.png"):
        read_coco(p, root)
    with pytest.raises(CnnkitError, match="nothing.json: no such file"):
        read_coco(tmp_path / "nothing.json", root)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(CnnkitError, match=r"broken.json:2: not valid JSON"):
        read_coco(broken, root)
    e, _, _ = _coco(tmp_path / "e", images=[])
    with pytest.raises(CnnkitError, match="instances.json lists no images"):
        read_coco(e, tmp_path / "e" / "images")
    d = json.loads(p.read_text())
    d["annotations"][0]["category_id"] = 99
    bad_cat = tmp_path / "badcat.json"
    bad_cat.write_text(json.dumps(d))
    write_image(root / "two.png", 40, 40)
    write_image(root / "three.png", 80, 40)
    with pytest.raises(CnnkitError, match="badcat.json: annotation 1 has category_id 99"):
        read_coco(bad_cat, root)


# ----------------------------------------------------------------------------------------------
# YOLO


def _yolo(tmp_path):
    root = tmp_path / "ds"
    write_image(root / "images" / "train" / "a.png", 100, 50)
    write_image(root / "images" / "train" / "b.png", 20, 20)
    write_image(root / "images" / "train" / "c.png", 20, 20)
    write_image(root / "images" / "val" / "v.png", 40, 40)
    lab = root / "labels" / "train"
    lab.mkdir(parents=True)
    (lab / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n\n0 0.1 0.1 0.2 0.2\n")
    (lab / "b.txt").write_text("")  # empty: no objects; c.png has no label file at all
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "val" / "v.txt").write_text("2 0.25 0.25 0.75 0.25 0.75 0.5 0.25 0.5\n")
    (root / "val.txt").write_text("./images/val/v.png\n")
    y = tmp_path / "data.yaml"
    y.write_text(f"path: {root}\ntrain: images/train\nval: val.txt\nnames:\n  0: cat\n  1: dog\n  2: box\n")
    return y, root


def test_yolo_boxes_segments_and_empty_images(tmp_path):
    y, root = _yolo(tmp_path)
    pool = read_yolo(y, "train")
    assert pool.classes == ["cat", "dog", "box"] and len(pool) == 3
    a = pool.annotations[0]
    assert a["labels"].tolist() == [1, 0]
    np.testing.assert_allclose(a["boxes"], [[40, 15, 60, 35], [0, 0, 20, 10]])
    assert [len(p["labels"]) for p in pool.annotations[1:]] == [0, 0]
    x, t, report = load_detection_images(pool, 50, 3)
    assert t.counts().tolist() == [2, 0, 0] and t.masks is None
    assert torch.allclose(t.boxes, torch.tensor([[20.0, 19.5, 30, 29.5], [0, 12, 10, 17]]))

    val = read_yolo(y, "val")  # a txt list; a polygon line gives a box and a mask
    assert val.files == [str(root / "images" / "val" / "v.png")]
    np.testing.assert_allclose(val.annotations[0]["boxes"], [[10, 10, 30, 20]])
    xv, tv, _ = load_detection_images(val, 40, 3)
    assert tv.masks is not None and tv.labels.tolist() == [2]
    poly = mask_util.merge(mask_util.frPyObjects([[10, 10, 30, 10, 30, 20, 10, 20]], 40, 40))
    assert tv.masks[0, 10:20, 10:30].all() and tv.masks[0].sum() == mask_util.area(poly)

    # names as a list, root relative to the YAML's folder
    y2 = tmp_path / "list.yaml"
    y2.write_text("path: ds\ntrain: images/train\nnames: [cat, dog, box]\n")
    assert read_yolo(y2, "train").classes == ["cat", "dog", "box"]


def test_yolo_bad_input(tmp_path):
    y, root = _yolo(tmp_path)
    lab = root / "labels" / "train" / "a.txt"
    lab.write_text("1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.2\n")
    with pytest.raises(CnnkitError, match=r"a.txt:2: expected 5 columns"):
        read_yolo(y, "train")
    lab.write_text("3 0.5 0.5 0.2 0.4\n")
    with pytest.raises(CnnkitError, match=r"a.txt:1: label id 3 is beyond the 3 classes"):
        read_yolo(y, "train")
    lab.write_text("")
    with pytest.raises(CnnkitError, match="data.yaml has no 'test' split"):
        read_yolo(y, "test")
    with pytest.raises(CnnkitError, match="gone.yaml: no such file"):
        read_yolo(tmp_path / "gone.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("path: x\nnames: [a, b\ntrain: y\n")
    with pytest.raises(CnnkitError, match=r"bad.yaml:\d+: not valid YAML"):
        read_yolo(bad)
    (root / "images" / "empty").mkdir()
    e = tmp_path / "empty.yaml"
    e.write_text(f"path: {root}\ntrain: images/empty\nnames: [a]\n")
    with pytest.raises(CnnkitError, match="empty.yaml: split 'train'.*holds no images"):
        read_yolo(e)
    (root / "val.txt").write_text("./images/val/v.png\n./images/val/missing.png\n")
    with pytest.raises(CnnkitError, match=r"val.txt names 1 image files that do not exist.*missing.png"):
        read_yolo(y, "val")


# ----------------------------------------------------------------------------------------------
# Pascal VOC


def _voc_xml(filename, objects):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b, d in objects)
    return f"<annotation><filename>{filename}</filename><size><width>60</width><height>40</height></size>{objs}</annotation>"


def _voc(tmp_path, names=("dog", "person")):
    root = tmp_path / "VOC"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    write_image(root / "JPEGImages" / "0001.jpg", 60, 40)
    write_image(root / "JPEGImages" / "0002.jpg", 60, 40)
    (root / "Annotations" / "0001.xml").write_text(_voc_xml("0001.jpg", [
        (names[0], (11, 6, 30, 25), False), (names[1], (1, 1, 60, 40), True)]))
    (root / "Annotations" / "0002.xml").write_text(_voc_xml("0002.jpg", [(names[1], (1, 1, 20, 10), False)]))
    (root / "ImageSets" / "Main" / "train.txt").write_text("0001\n0002\n")
    return root


def test_voc_classes_boxes_and_difficult(tmp_path):
    pool = read_voc(_voc(tmp_path), "train")
    assert pool.classes == list(VOC_CLASSES)
    a, b = pool.annotations
    assert a["labels"].tolist() == [VOC_CLASSES.index("dog")]
    assert a["boxes"].tolist() == [[10, 5, 30, 25]]  # 1-based pixels -> 0-based edges
    assert b["boxes"].tolist() == [[0, 0, 20, 10]] and pool.counts["difficult_skipped"] == 1
    x, t, report = load_detection_images(pool, 60, 3)
    assert x.shape == (2, 3, 60, 60) and t.counts().tolist() == [1, 1]
    assert torch.equal(t.boxes[0], torch.tensor([10.0, 15, 30, 35]))  # 10 rows of padding above
    assert report["difficult_skipped"] == 1

    custom = read_voc(_voc(tmp_path / "c", names=("zebra", "apple")), "train")
    assert custom.classes == ["apple", "zebra"]
    assert custom.annotations[0]["labels"].tolist() == [1]


def test_voc_bad_input(tmp_path):
    root = _voc(tmp_path)
    with pytest.raises(CnnkitError, match="val.txt: no such file"):
        read_voc(root, "val")
    (root / "Annotations" / "0002.xml").write_text("<annotation>\n<object><name>dog</name>\n</annotation>")
    with pytest.raises(CnnkitError, match=r"0002.xml:3: not valid XML"):
        read_voc(root, "train")
    (root / "Annotations" / "0002.xml").unlink()
    with pytest.raises(CnnkitError, match="0002.xml: no such file"):
        read_voc(root, "train")
    (root / "ImageSets" / "Main" / "empty.txt").write_text("\n")
    with pytest.raises(CnnkitError, match="empty.txt lists no images"):
        read_voc(root, "empty")


def test_exif_rotation_and_many_files(tmp_path):
    # stored 60 wide x 30 high, EXIF orientation 6: shown (and annotated) 30 wide x 60 high
    a = np.full((30, 60, 3), 255, dtype=np.uint8)
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6
    f = tmp_path / "phone.jpg"
    img.save(f, exif=exif)
    pool = DetectionPool(["a"], [str(f)], [dict(boxes=[[0, 30, 30, 60]], labels=[0])])
    x, t, _ = load_detection_images(pool, 60, 3)
    assert torch.equal(t.boxes, torch.tensor([[15.0, 30, 45, 60]]))
    assert (x[0, :, :, :15] == PAD_VALUE).all() and (x[0, :, :, 15:45] > 200).all()
    # enough files for the thread pool; order is kept
    files = [str(write_image(tmp_path / f"m{i}.png", 16, 8, rect=(i % 16, 0, i % 16 + 1, 8))) for i in range(70)]
    anns = [dict(boxes=[[i % 16, 0, i % 16 + 1, 8]], labels=[0]) for i in range(70)]
    xs, ts, report = load_detection_images(DetectionPool(["a"], files, anns), 16, 1)
    assert report["images"] == 70 and ts.counts().eq(1).all()
    assert torch.equal(ts.boxes[:, 0], torch.tensor([float(i % 16) for i in range(70)]))
    dark = xs[:, 0, 8].float().argmin(1)  # the dark column of each image, in its middle row
    assert torch.equal(dark, torch.tensor([i % 16 for i in range(70)]))
