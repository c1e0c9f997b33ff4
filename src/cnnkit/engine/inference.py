"""Using a trained checkpoint: rebuild the model from meta.json, evaluate it, predict images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.loader import Preprocess, make_loader
from ..models import create_model
from ..registry import CnnkitError
from ..tasks import create_task
from . import checkpoint as ckpt
from .evaluate import evaluate
from .precision import resolve_amp, resolve_device


def load_checkpoint_model(path: str | Path, device: str | torch.device = "cpu", prefer: str = "best"):
    """(model in eval mode, meta dict, checkpoint folder) from a run, a checkpoint folder or its weights file."""
    folder = ckpt.resolve_checkpoint(path, prefer=prefer)
    meta = ckpt.load_meta(folder)
    for key in ("model", "num_classes", "in_chans"):
        if key not in meta:
            raise CnnkitError(f"{folder / ckpt.META} lacks {key!r}; is it a cnnkit checkpoint?")
    model = create_model(meta["model"], num_classes=meta["num_classes"], in_chans=meta["in_chans"],
                         **meta.get("model_args", {}))
    ckpt.load_into(model, ckpt.load_weights(folder), f"checkpoint {folder}")
    return model.to(device).eval(), meta, folder


def evaluate_checkpoint(path: str | Path, data: str | None = None, data_dir: str | None = None,
                        val: str | None = None, batch_size: int = 512, device: str = "auto",
                        amp: str = "auto", tta: bool | None = None) -> dict:
    """Evaluate a checkpoint on its own validation split (or another data set with the same classes).

    `tta` (average with the mirrored image) defaults to what the run's own evaluation did.
    """
    from ..data.datasets import load_data

    dev = resolve_device(device)
    model, meta, folder = load_checkpoint_model(path, dev)
    d = dict(meta.get("data", {}))
    name = data or d.get("name")
    c, h, w = meta["input_size"]
    bundle = load_data(name, data_dir=data_dir or d.get("data_dir"), val=val or d.get("val", "test"),
                       image_size=h, in_chans=c, seed=d.get("seed", 0),
                       num_train=d.get("num_train") if name == d.get("name") else None,
                       num_val=d.get("num_val") if name == d.get("name") else None)
    if len(bundle.classes) != meta["num_classes"]:
        raise CnnkitError(f"{name} has {len(bundle.classes)} classes but the checkpoint predicts {meta['num_classes']}")
    task = create_task(meta.get("task", "classify"), num_classes=meta["num_classes"],
                       multi_label=meta.get("multi_label", False))
    # the layout the run evaluated in: bf16 results depend (slightly) on the convolution layout
    channels_last = bool(meta.get("channels_last", False))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    prep = Preprocess(meta["mean"], meta["std"], dev, channels_last)
    loader = make_loader(bundle.val, batch_size, False, False, dev, 0)
    tta = meta.get("tta", False) if tta is None else tta
    res = evaluate(model, loader, task, prep, dev, resolve_amp(amp, dev), tta=tta)
    res.update(checkpoint=str(folder), data=name, tta=tta, split=bundle.val_name, images=len(bundle.val),
               classes=meta.get("classes") or bundle.classes)
    return res


def load_image(path: str | Path, in_chans: int, size: tuple[int, int]) -> torch.Tensor:
    """One image file -> uint8 (C, H, W) with the checkpoint's channels and size."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise CnnkitError(f"image not found: {p}")
    try:
        with Image.open(p) as im:
            im = im.convert("L" if in_chans == 1 else "RGB")
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise CnnkitError(f"cannot read image {p}: {e}") from None
    t = torch.from_numpy(arr.copy())
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1)


@torch.no_grad()
def predict_images(path: str | Path, images: list[str | Path], topk: int = 5, device: str = "auto") -> list[dict]:
    """Top-k classes with probabilities for each image file."""
    dev = resolve_device(device)
    model, meta, _ = load_checkpoint_model(path, dev)
    c, h, w = meta["input_size"]
    batch = torch.stack([load_image(p, c, (h, w)) for p in images]).to(dev)
    logits = model(Preprocess(meta["mean"], meta["std"], dev)(batch)).float()
    task = create_task(meta.get("task", "classify"), num_classes=meta["num_classes"],
                       multi_label=meta.get("multi_label", False))
    probs = task.probabilities(logits)
    k = min(topk, probs.shape[1])
    top = probs.topk(k, dim=1)
    names = meta.get("classes") or [str(i) for i in range(meta["num_classes"])]
    return [dict(image=str(p), top=[(names[j], float(v)) for v, j in zip(top.values[i].tolist(), top.indices[i].tolist())])
            for i, p in enumerate(images)]
