"""Which validation images to show, and their Grad-CAM overlays: shared by the HTML report and the
TensorBoard logger (`engine.loggers.log_cam_samples`).

The evaluation (`engine.inference.evaluate_checkpoint`) returns logits and targets in the order of
the validation split but not the images; `validation_split` loads that split again the way the
evaluation did, and checks the targets agree, so index i here is row i of the logits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..registry import CnnkitError
from .images import overlay, to_hwc, upscale


def validation_split(meta: dict, targets: torch.Tensor | None = None):
    """The validation `ImageSplit` a checkpoint was evaluated on, rebuilt from its meta.json.

    The official test split does not depend on the training subset, so for val="test" only one
    training image is loaded (for shapes: generated) first; `targets`, when given, must then match
    the evaluated ones, else the split is loaded in full, exactly as the evaluation did."""
    from ..data.datasets import load_data
    from ..engine.inference import task_from_meta

    d = dict(meta.get("data") or {})
    kind = task_from_meta(meta).target_kind
    if not d.get("name"):
        raise CnnkitError("the checkpoint's meta.json does not name its data set")
    c, h, _ = meta["input_size"]
    kw = dict(data_dir=d.get("data_dir"), val=d.get("val") or "test", image_size=h, in_chans=c,
              seed=d.get("seed") or 0, num_val=d.get("num_val"))
    tries = [1, d.get("num_train")] if str(kw["val"]) == "test" else [d.get("num_train")]
    for num_train in tries:
        split = load_data(d["name"], num_train=num_train, targets=kind, log=lambda *a: None, **kw).val
        if targets is None or not isinstance(split.targets, torch.Tensor) or (
                split.targets.shape == targets.shape and torch.equal(split.targets, targets.detach().cpu())):
            return split
    raise CnnkitError(f"the validation images of {d['name']} differ from the ones evaluated; "
                      "were the data files changed after training?")


def images_at(split, indices) -> torch.Tensor:
    """uint8 images (N, C, H, W) of a split at `indices` (in memory or streamed from files)."""
    idx = [int(i) for i in indices]
    if split.images is not None:
        return split.images[torch.tensor(idx, dtype=torch.long)]
    return torch.stack([split.dataset[i][0] for i in idx])


def per_class(targets: torch.Tensor, n: int) -> list[int]:
    """Up to `n` indices taking classes in turn (first image of each class, then the second, ...).

    Multi-hot targets (N, K): labels in turn, each giving its next image that holds it and is not picked yet."""
    t = targets.cpu().numpy()
    if t.ndim == 2:
        queues = [list(np.flatnonzero(t[:, k] == 1)) for k in range(t.shape[1])]
    else:
        queues = [list(np.flatnonzero(t == k)) for k in np.unique(t)]
    picked: list[int] = []
    seen: set[int] = set()
    while len(picked) < n and any(queues):
        for q in queues:
            while q and q[0] in seen:
                q.pop(0)
            if q and len(picked) < n:
                i = int(q.pop(0))
                picked.append(i)
                seen.add(i)
    return picked


def worst_mistakes(conf: torch.Tensor, pred: torch.Tensor, targets: torch.Tensor, n: int) -> list[int]:
    """Indices of up to `n` wrong predictions, the most confident first. conf: the probability of the
    prediction (N,), pred and targets (N,) class indices."""
    wrong = torch.nonzero(pred != targets).flatten()
    order = conf[wrong].argsort(descending=True)
    return wrong[order][:n].tolist()


@dataclass
class CamSample:
    image: np.ndarray    # (S, S, 3) uint8, the input enlarged to the display size
    overlay: np.ndarray  # (S, S, 3) uint8, Grad-CAM of the predicted class laid over it
    pred: int
    conf: float


def cam_samples(model: torch.nn.Module, images: torch.Tensor, mean, std, size: int = 96,
                layer: str | None = None, probabilities=None, target: torch.Tensor | None = None) -> list[CamSample]:
    """Grad-CAM overlays of uint8 images (N, C, H, W) for the class the model predicts, `size` pixels high.

    The layer is the model's last feature stage (`feature_info[-1]`), found through the model
    interface as `cnnkit.explain` does; `mean`/`std` are the checkpoint's normalisation; `probabilities`
    turns logits into the shown confidence (the task's: softmax, or a sigmoid per label). `target`
    (N,): explain these classes instead (each sample's `pred` is then its target, `conf` its probability)."""
    from ..data.loader import Preprocess
    from ..explain import gradcam
    from ..explain._core import explaining, model_device

    dev = model_device(model)
    x = Preprocess(mean, std, dev)(images.to(dev))  # (N, C, H, W) normalised
    with explaining(model), torch.no_grad():
        logits = model(x)
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits  # auxiliary heads
        probs = probabilities(logits) if probabilities is not None else logits.float().softmax(1)  # (N, K)
    conf, pred = probs.max(1)
    if target is not None:
        pred = target.to(dev).long()
        conf = probs.gather(1, pred[:, None])[:, 0]
    maps = gradcam(model, x, target=pred, layer=layer)  # (N, H, W), each peak 1
    samples = []
    for i in range(len(images)):
        img = to_hwc(images[i])
        samples.append(CamSample(upscale(img, size), overlay(img, maps[i], size), int(pred[i]), float(conf[i])))
    return samples
