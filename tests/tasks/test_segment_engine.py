"""Segmentation through the whole engine: `cnnkit train` on tiny shapes scenes, then eval, predict
(overlay + palette label PNG + JSON), report and export, for one model per family (every model's
forward and backward is tested in tests/models/test_segment_models.py)."""
import json

import numpy as np
import pytest
from PIL import Image

import cnnkit
from cnnkit.data.scenes import make_scene_batch
from cnnkit.registry import CnnkitError
from cnnkit.report.html import write_report

TINY = dict(data="shapes", epochs=1, num_train=8, num_val=4, batch_size=4, image_size=64, quiet=True,
            report=False, amp="off", warmup_epochs=0.0)
FAMILIES = ["unet_small", "deeplabv3plus_resnet18", "lraspp_mobilenet_v3_large"]


@pytest.mark.parametrize("name", FAMILIES)
def test_segmentation_trains_evaluates_predicts_and_exports(name, tmp_path):
    res = cnnkit.train(model=name, project=str(tmp_path), name="r", log=lambda *a: None, **TINY)
    row = res.history[-1]
    assert res.monitor == "val_miou" and 0.0 <= row["val_miou"] <= 1.0 and 0.0 <= row["val_pixel_acc"] <= 1.0
    ev = cnnkit.evaluate(str(res.run_dir), device="cpu", amp="off")
    assert ev["miou"] == pytest.approx(row["val_miou"], abs=1e-6)
    assert list(ev["iou_per_class"])[0] == "background"
    img = tmp_path / "scene.png"
    Image.fromarray(make_scene_batch(1, seed=5)[0][0].permute(1, 2, 0).numpy()).save(img)
    (pred,) = cnnkit.predict(str(res.run_dir), [str(img)], device="cpu")
    assert abs(sum(pred["shares"].values()) - 1.0) < 1e-3
    raw = Image.open(res.run_dir / "predict" / "scene_mask.png")
    assert raw.mode == "P" and raw.size == (64, 64)
    assert np.asarray(raw).max() < 9  # class ids, not colours
    assert Image.open(pred["drawn"]).size[0] >= 256
    out = json.loads((res.run_dir / "predict" / "predictions.json").read_text())
    assert out["classes"][0] == "background" and out["images"][0]["mask_png"].endswith("scene_mask.png")
    exp = cnnkit.export(str(res.run_dir), format="onnx")
    assert exp.max_abs_diff <= 1e-3 and exp.metadata["task"] == "segment"


def test_the_report_shows_the_segmentation_sections(tmp_path):
    res = cnnkit.train(model="unet_small", project=str(tmp_path), name="r", log=lambda *a: None,
                       task_args={"loss": "ce_dice"}, **TINY)
    html = write_report(res.run_dir, max_images=2).read_text()
    for title in ("Per-class IoU", "Predictions beside the ground truth", "Worst images"):
        assert title in html
    meta = json.loads((res.run_dir / "best" / "meta.json").read_text())
    assert meta["task"] == "segment" and meta["task_options"]["loss"] == "ce_dice"


def test_a_segmentation_model_needs_class_maps(tmp_path):
    with pytest.raises(CnnkitError, match="fashion-mnist has one class label per image only.*a class per pixel"):
        cnnkit.train(model="unet_small", data="fashion-mnist", project=str(tmp_path),
                     **{k: v for k, v in TINY.items() if k != "data"})
