"""The loop's loggers: csv does nothing beyond metrics.csv; tensorboard writes event files that
TensorBoard's own reader (EventAccumulator) reads back with the same scalars and pixels."""
import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.config import resolve
from cnnkit.engine.loggers import Logger, TensorBoardLogger, log_cam_samples, make_logger
from cnnkit.registry import CnnkitError

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _read(log_dir):
    ea = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    return ea


def _pixels(event) -> np.ndarray:
    with Image.open(io.BytesIO(event.encoded_image_string)) as im:
        return np.asarray(im.convert("RGB"))


def test_csv_logger_writes_nothing(tmp_path):
    logger = make_logger("csv", tmp_path)
    assert type(logger) is Logger and not logger.wants_images
    logger.log_epoch({"epoch": 1, "val_acc": 0.5}, 1)
    logger.log_confusion(torch.eye(2, dtype=torch.long), ["a", "b"], 1)
    logger.log_images("x", torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 1)
    log_cam_samples(logger, tmp_path / "no-run-needed", 1)  # a csv logger takes no pictures: no work
    logger.close()
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_scalars_confusion_and_images_read_back(tmp_path):
    logger = make_logger("tensorboard", tmp_path)
    rows = [dict(epoch=1, lr=0.1, train_loss=2.0, val_acc=0.25, note="text", flag=True),
            dict(epoch=2, lr=0.05, train_loss=1.5, val_acc=torch.tensor(0.75))]
    for row in rows:
        logger.log_epoch(row, row["epoch"])
    logger.log_confusion(torch.tensor([[5, 1], [2, 7]]), ["cat", "dog"], 2)
    batch = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)   # (N, C, H, W)
    logger.log_images("batch", batch, 2)
    grey = [np.full((8, 8), 0.5, np.float32), np.zeros((10, 12, 3), np.uint8)]  # sizes may differ
    logger.log_images("list", grey, 3)
    logger.close()

    ea = _read(tmp_path / "tensorboard")
    assert set(ea.Tags()["scalars"]) == {"lr", "train_loss", "val_acc"}  # numbers only; not epoch, text, bool
    val = ea.Scalars("val_acc")
    assert [e.step for e in val] == [1, 2]
    assert [e.value for e in val] == pytest.approx([0.25, 0.75])
    assert [e.value for e in ea.Scalars("train_loss")] == pytest.approx([2.0, 1.5])
    assert set(ea.Tags()["images"]) == {"confusion_matrix", "batch", "list"}
    (cm,) = ea.Images("confusion_matrix")
    assert cm.step == 2 and cm.width > 200 and cm.height > 200
    assert _pixels(cm).std() > 10  # a drawn figure, not an empty canvas
    (b,) = ea.Images("batch")
    px = _pixels(b)  # PNG is lossless: the three images side by side with 2-pixel white gaps
    assert px.shape == (16, 3 * 16 + 2 * 2, 3)
    for i in range(3):
        np.testing.assert_array_equal(px[:, i * 18:i * 18 + 16], batch[i].permute(1, 2, 0).numpy())
    assert (px[:, 16:18] == 255).all()
    (lst,) = ea.Images("list")
    px = _pixels(lst)
    assert px.shape == (10, 12 + 2 + 12, 3) and lst.step == 3
    assert (px[:8, :8] == 128).all() and (px[:10, 14:26] == 0).all()  # 0.5 grey -> 128; black stays 0


def test_tensorboard_logger_opens_nothing_until_used(tmp_path):
    TensorBoardLogger(tmp_path).close()
    assert not (tmp_path / "tensorboard").exists()


def test_missing_package_and_unknown_names_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(CnnkitError, match=r"pip install 'cnnkit\[tensorboard\]'"):
        make_logger("tensorboard", tmp_path)
    with pytest.raises(CnnkitError, match="tensorboard"):
        make_logger("tensorbord", tmp_path)
    with pytest.raises(CnnkitError, match="tensorboard"):
        resolve({"logger": "tensorbord"})
    assert resolve({"logger": "tensorboard"}).logger == "tensorboard" and resolve({}).logger == "csv"


def test_log_cam_samples_draws_gradcam_of_validation_images(trained_run, tmp_path):
    logger = make_logger("tensorboard", tmp_path)
    log_cam_samples(logger, trained_run.run_dir, 1, n=4)
    first = logger.cam_images
    log_cam_samples(logger, trained_run.run_dir, 2, n=4)
    assert logger.cam_images is first and first.shape == (4, 3, 16, 16)  # loaded once, per class in turn
    logger.close()
    ea = _read(tmp_path / "tensorboard")
    events = ea.Images("gradcam")
    assert [e.step for e in events] == [1, 2]
    px = _pixels(events[0])
    # one row of four (image | overlay) pairs, each picture 96 pixels high, 2-pixel gaps
    assert px.shape == (96, 4 * (96 + 2 + 96) + 3 * 2, 3)
    img = px[:96, :96].astype(int)
    heat = px[:96, 98:194].astype(int)
    assert np.abs(heat - img).mean() > 10  # the overlay is coloured by the heat map
    ref = first[0].permute(1, 2, 0).numpy()  # (16, 16, 3): enlarged 6x, nearest
    np.testing.assert_array_equal(img[::6, ::6], ref)


def test_log_cam_samples_failure_is_one_warning_then_nothing(tmp_path):
    logger = make_logger("tensorboard", tmp_path)
    logs = []
    for epoch in (1, 2):  # no checkpoint there: the pictures cannot be made, training must go on
        log_cam_samples(logger, tmp_path / "no-run", epoch, log=logs.append)
    logger.close()
    assert len(logs) == 1 and logs[0].startswith("warning: no Grad-CAM pictures") and logger.cam_error
    assert not (tmp_path / "tensorboard").exists()


def test_training_with_the_tensorboard_logger_writes_events(tiny):
    """`--set logger=tensorboard` through the loop: one scalar per epoch and metric, the confusion matrix
    and the Grad-CAM pictures, read back from the event files."""
    import cnnkit
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = cnnkit.train(**dict(tiny, logger="tensorboard", report=False), log=lambda *a, **k: None)
    acc = EventAccumulator(str(res.run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    val = acc.Scalars("val_acc")
    assert [e.step for e in val] == [1, 2]
    assert [round(e.value, 6) for e in val] == [round(r["val_acc"], 6) for r in res.history]
    images = acc.Tags()["images"]
    assert any("confusion" in t for t in images) and any("gradcam" in t for t in images)
