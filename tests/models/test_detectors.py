"""Every registered detector, driven by the registry: through `cnnkit train` on tiny shapes scenes
(one epoch of a few images), then eval, predict (drawn PNG + COCO results JSON) and export where
the model supports it. What each family computes is tested beside it (test_yolo.py, test_detect_tv.py)."""
import json

import pytest
from PIL import Image

import cnnkit
from cnnkit.data.scenes import make_scene_batch
from cnnkit.models import create_model, list_models
from cnnkit.registry import CnnkitError

DETECTORS = list_models(task="detect")
TINY = dict(data="shapes", epochs=1, num_train=8, num_val=4, batch_size=4, image_size=64, quiet=True,
            report=False, amp="off", warmup_epochs=0.0)


def test_there_are_detectors_of_every_family():
    for family in ("yolo_n", "yolov1", "ssd300_vgg16", "ssdlite320_mobilenet_v3_large", "fasterrcnn_resnet50_fpn",
                   "maskrcnn_resnet50_fpn"):
        assert family in DETECTORS


@pytest.mark.parametrize("name", DETECTORS)
def test_every_detector_trains_evaluates_predicts_and_exports(name, tmp_path):
    res = cnnkit.train(model=name, project=str(tmp_path), name="r", log=lambda *a: None, **TINY)
    row = res.history[-1]
    assert res.monitor == "val_map" and 0.0 <= row["val_map"] <= row["val_map50"] <= 1.0
    assert row["train_loss"] == row["train_loss"]  # finite, not NaN
    ev = cnnkit.evaluate(str(res.run_dir), device="cpu", amp="off")  # as trained: fp32
    assert ev["map"] == pytest.approx(row["val_map"], abs=1e-6)
    img = tmp_path / "scene.png"
    Image.fromarray(make_scene_batch(1, seed=5)[0][0].permute(1, 2, 0).numpy()).save(img)
    (pred,) = cnnkit.predict(str(res.run_dir), [str(img)], device="cpu", conf=0.0)
    assert len(pred["boxes"]) == len(pred["scores"]) == len(pred["labels"])
    assert Image.open(pred["drawn"]).size[0] >= 64
    rows = json.loads((res.run_dir / "predict" / "predictions.json").read_text())
    assert len(rows) == len(pred["boxes"]) and all(len(r["bbox"]) == 4 for r in rows)
    if create_model(name, num_classes=8, image_size=64).default_cfg.get("export"):
        out = cnnkit.export(str(res.run_dir), format="onnx")
        assert out.max_abs_diff <= 1e-3 and out.metadata["outputs"] == ["boxes", "scores"]
    else:
        with pytest.raises(CnnkitError, match="cannot be exported"):
            cnnkit.export(str(res.run_dir), format="onnx")


def test_a_detector_on_a_classification_only_data_set_is_one_clear_error(tmp_path):
    with pytest.raises(CnnkitError, match="fashion-mnist has one class label per image only.*boxes"):
        cnnkit.train(model="yolo_n", data="fashion-mnist", project=str(tmp_path), **{k: v for k, v in TINY.items()
                                                                                     if k != "data"})


def test_a_deep_copy_of_a_detector_on_a_backbone_runs_on_its_own_weights():
    """The EMA keeps a deep copy of the model: its Backbone must catch its own stages' outputs."""
    import copy

    import torch

    m = create_model("yolo_n", num_classes=3, image_size=64, backbone="resnet18").eval()
    c = copy.deepcopy(m)
    with torch.no_grad():
        for p in c.parameters():
            p.mul_(0.5)
        x = torch.randn(1, 3, 64, 64)
        assert not torch.allclose(m.forward_export(x)[1], c.forward_export(x)[1])
        assert torch.equal(m.forward_export(x)[1], m.forward_export(x)[1])
