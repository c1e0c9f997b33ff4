"""Using a trained checkpoint: rebuild the model from meta.json, evaluate it, predict images."""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.loader import Preprocess, make_loader
from ..models import create_model
from ..registry import CnnkitError
from ..tasks import create_task
from ..utils import class_names, first_line
from . import checkpoint as ckpt
from .evaluate import evaluate
from .precision import resolve_amp, resolve_device


def model_kwargs(meta: dict) -> dict:
    """The builder arguments a checkpoint's model was made with (the task's, then the user's)."""
    kw = dict(meta.get("model_kwargs") or {"num_classes": meta["num_classes"]})
    kw.update(meta.get("model_args") or {})
    return kw


def task_from_meta(meta: dict, model_cfg: dict | None = None):
    """The checkpoint's task, rebuilt from meta.json (older checkpoints: classify, or multilabel)."""
    name = meta.get("task") or "classify"
    if name == "classify" and meta.get("multi_label"):
        name = "multilabel"
    return create_task(name, class_names(meta), model_cfg, **(meta.get("task_options") or {}))


def load_checkpoint_model(path: str | Path, device: str | torch.device = "cpu", prefer: str = "best"):
    """(model in eval mode, meta dict, checkpoint folder) from a run, a checkpoint folder or its weights file."""
    folder = ckpt.resolve_checkpoint(path, prefer=prefer)
    meta = ckpt.load_meta(folder)
    for key in ("model", "num_classes", "in_chans"):
        if key not in meta:
            raise CnnkitError(f"{folder / ckpt.META} lacks {key!r}; is it a cnnkit checkpoint?")
    model = create_model(meta["model"], in_chans=meta["in_chans"], **model_kwargs(meta))
    ckpt.load_into(model, ckpt.load_weights(folder), f"checkpoint {folder}")
    return model.to(device).eval(), meta, folder


def evaluate_checkpoint(path: str | Path, data: str | None = None, data_dir: str | None = None,
                        val: str | None = None, batch_size: int = 512, device: str = "auto",
                        amp: str = "auto", tta: bool | None = None) -> dict:
    """Evaluate a checkpoint on its own validation split (or another data set with the same classes).

    `tta` (test-time augmentation, where the task has one) and `amp="auto"` default to what the run's own
    evaluation did (a run that trained with --amp off is evaluated in fp32).
    Returns the task's metrics (e.g. loss, acc, confusion; map, map50, ...) and what was evaluated.
    """
    dev = resolve_device(device)
    model, meta, folder = load_checkpoint_model(path, dev)
    task = task_from_meta(meta, getattr(model, "default_cfg", None))
    d = dict(meta.get("data", {}))
    name = data or d.get("name")
    c, h = meta["input_size"][0], meta["input_size"][1]
    bundle = type(task).load_data(name, task.options, lambda *a: None, data_dir=data_dir or d.get("data_dir"),
                                  val=val or d.get("val", "test"), image_size=h, in_chans=c, seed=d.get("seed", 0),
                                  num_train=d.get("num_train") if name == d.get("name") else None,
                                  num_val=d.get("num_val") if name == d.get("name") else None)
    if len(bundle.classes) != meta["num_classes"]:
        raise CnnkitError(f"{name} has {len(bundle.classes)} classes but the checkpoint predicts {meta['num_classes']}")
    # the layout the run evaluated in: bf16 results depend (slightly) on the convolution layout
    channels_last = bool(meta.get("channels_last", False))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    prep = Preprocess(meta["mean"], meta["std"], dev, channels_last)
    loader = make_loader(bundle.val, batch_size, False, False, dev, 0)
    tta = meta.get("tta", False) if tta is None else tta
    if amp == "auto" and meta.get("amp") and meta.get("data", {}).get("name") == name:
        amp = meta["amp"]  # the precision the run evaluated in (an fp32 run's numbers come back exactly)
    res = evaluate(model, loader, task, prep, dev, resolve_amp(amp, dev), tta=tta)
    res.update(checkpoint=str(folder), data=name, tta=tta, split=bundle.val_name, images=len(bundle.val),
               classes=meta.get("classes") or bundle.classes, task=task.name)
    res["summary"] = task.eval_summary(res)
    return res


def load_image(path: str | Path, in_chans: int, size: tuple[int, int]) -> torch.Tensor:
    """One image file -> uint8 (C, H, W) with the checkpoint's channels and size, read as training reads
    files (`data.sources.open_image`: EXIF rotation, alpha over white, 16-bit scaling)."""
    from ..data.sources import open_image

    p = Path(path)
    if not p.is_file():
        raise CnnkitError(f"image not found: {p}")
    if size[0] != size[1]:
        raise CnnkitError(f"cnnkit models take square inputs; got {size[0]}x{size[1]}")
    try:
        return torch.from_numpy(open_image(str(p), in_chans, size[0]))
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a file it cannot decode
        raise CnnkitError(f"cannot read image {p}: {first_line(e, with_type=True)}") from None


@torch.no_grad()
def predict_images(path: str | Path, images: list[str | Path], topk: int = 5, device: str = "auto",
                   out: str | Path | None = None, **options) -> list[dict]:
    """The task's decoded predictions for each image file (classification: the top-k classes and their
    probabilities; detection: boxes, scores and classes). Tasks that draw write one PNG per image
    into `out` (default RUN/predict/) and say where in each result's "drawn"."""
    dev = resolve_device(device)
    model, meta, folder = load_checkpoint_model(path, dev)
    task = task_from_meta(meta, getattr(model, "default_cfg", None))
    kind = (meta.get("input_spec") or {}).get("kind", "image")
    if kind != "image":
        raise CnnkitError(f"{folder} takes {kind}s, and `cnnkit predict` reads image files only: evaluate it on its "
                          f"data with `cnnkit eval`")
    c, h, w = meta["input_size"]
    batch = torch.stack([load_image(p, c, (h, w)) for p in images]).to(dev)
    outputs = task.forward_eval(model, Preprocess(meta["mean"], meta["std"], dev)(batch))
    preds = task.decode(outputs, topk=topk, **options)
    run = folder.parent if folder.name in ("best", "last") else folder
    results = []
    for p, img, pred in zip(images, batch.cpu(), preds):
        r = dict(image=str(p), **pred, lines=task.describe(pred))
        drawn = task.save_drawing(img, pred, Path(out) if out else run / "predict", Path(p).stem)
        if drawn is not None:
            r["drawn"] = str(drawn)
        results.append(r)
    task.save_predictions(results, Path(out) if out else run / "predict")
    return results
