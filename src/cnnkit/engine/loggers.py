"""Where the loop's numbers and pictures go besides metrics.csv: `make_logger(cfg.logger, run)`.

    logger = make_logger("tensorboard", run)         # "csv": does nothing beyond metrics.csv
    logger.log_epoch(row, epoch)                     # every numeric key of the row as a scalar
    logger.log_confusion(confusion, classes, epoch)  # the confusion matrix as a picture
    log_cam_samples(logger, run, epoch)              # Grad-CAM of a few validation images
    logger.close()

TensorBoard reads RUN/tensorboard/ (`tensorboard --logdir runs`). The tensorboard package is an
extra (`pip install 'cnnkit[tensorboard]'`); the csv logger needs nothing.
"""
from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np
import torch

from ..registry import CnnkitError, suggest
from ..utils import first_line

LOGGERS = ("csv", "tensorboard")


class Logger:
    """The interface, and the "csv" logger: metrics.csv is written by the loop itself, so every
    method here does nothing. `wants_images` tells callers whether pictures are worth making."""

    wants_images = False

    def log_epoch(self, row: dict, epoch: int) -> None:
        pass

    def log_confusion(self, confusion: torch.Tensor, classes, epoch: int) -> None:
        pass

    def log_images(self, tag: str, images, epoch: int) -> None:
        pass

    def close(self) -> None:
        pass


def _as_hwc_list(images) -> list[np.ndarray]:
    """A tensor (N, C, H, W) (uint8, or float in [0, 1]) or a list of (H, W, 3) uint8 arrays -> list of
    (H, W, 3) uint8 arrays."""
    from ..report.images import to_hwc

    if torch.is_tensor(images):
        if images.ndim == 3:
            images = images[None]
        return [to_hwc(img) for img in images]
    out = []
    for img in images:
        a = img.detach().cpu().numpy() if torch.is_tensor(img) else np.asarray(img)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if a.dtype != np.uint8:
            a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
        out.append(a[..., :3])
    return out


class TensorBoardLogger(Logger):
    """Scalars, the confusion matrix and pictures in RUN/tensorboard/, one step per epoch."""

    wants_images = True

    def __init__(self, run_dir):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CnnkitError("the tensorboard logger needs the tensorboard package: "
                              "pip install 'cnnkit[tensorboard]'") from None
        self.log_dir = Path(run_dir) / "tensorboard" if run_dir is not None else None  # None: only checks the import
        self._writer_class = SummaryWriter
        self._writer = None  # opened on first use: a run that logs nothing leaves no folder
        self.cam_images = None  # validation images for log_cam_samples, loaded once
        self.cam_error = None  # why log_cam_samples gave up, if it did

    @property
    def writer(self):
        if self._writer is None:
            self._writer = self._writer_class(log_dir=str(self.log_dir))
        return self._writer

    def log_epoch(self, row: dict, epoch: int) -> None:
        for key, value in row.items():
            if key == "epoch":
                continue
            if torch.is_tensor(value) and value.numel() == 1:
                value = value.item()
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                self.writer.add_scalar(key, float(value), epoch)

    def log_confusion(self, confusion: torch.Tensor, classes, epoch: int) -> None:
        from ..report.images import figure_png, png_to_array
        from ..report.plots import plot_confusion

        png = figure_png(plot_confusion, torch.as_tensor(confusion).detach().cpu(), [str(c) for c in classes])
        self.writer.add_image("confusion_matrix", png_to_array(png), epoch, dataformats="HWC")

    def log_images(self, tag: str, images, epoch: int) -> None:
        from ..report.images import grid

        arrays = _as_hwc_list(images)
        if arrays:
            self.writer.add_image(tag, grid(arrays, ncols=4), epoch, dataformats="HWC")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


def make_logger(kind: str, run_dir) -> Logger:
    """The logger named by the `logger` config key: "csv" (default) or "tensorboard"."""
    if kind == "csv":
        return Logger()
    if kind == "tensorboard":
        return TensorBoardLogger(run_dir)
    raise suggest(str(kind), LOGGERS, "logger")


def log_cam_samples(logger: Logger, run_dir, epoch: int, n: int = 8, prefer: str = "last", log=None) -> None:
    """Grad-CAM of `n` validation images (classes in turn) by the run's `prefer` checkpoint (last/:
    the epoch just saved), each image beside its overlay, as one picture "gradcam" at step `epoch`.

    Nothing happens for a logger that takes no pictures. The images are loaded once per logger.
    Pictures are a nicety: if they cannot be made (a model without `feature_info`, say), `log` gets
    one warning line, later calls do nothing, and training goes on."""
    if not logger.wants_images or n < 1 or getattr(logger, "cam_error", None):
        return
    from ..report.images import side_by_side
    from ..report.samples import cam_samples, images_at, per_class, validation_split
    from .inference import load_checkpoint_model, task_from_meta

    try:
        model, meta, _ = load_checkpoint_model(run_dir, "cpu", prefer=prefer)
        task = task_from_meta(meta, getattr(model, "default_cfg", None))
        if getattr(logger, "cam_images", None) is None:
            split = validation_split(meta)
            logger.cam_images = images_at(split, per_class(split.targets, n))
        samples = cam_samples(model, logger.cam_images, meta["mean"], meta["std"], size=96,
                              probabilities=task.probabilities)
    except Exception as e:  # noqa: BLE001 - never stop a training run for a picture
        logger.cam_error = first_line(e)
        if log is not None:
            log(f"warning: no Grad-CAM pictures for the logger ({logger.cam_error})")
        return
    logger.log_images("gradcam", [side_by_side(s.image, s.overlay) for s in samples], epoch)
