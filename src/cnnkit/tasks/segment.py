"""Semantic segmentation (the guide's §6.3): one class per pixel.

- Targets: uint8 class maps (B, H, W) from `load_data(targets="mask")` (`data/segmentation.py`);
  `IGNORE` (255) marks pixels that count for nothing, in the loss and in every metric.
- Models (`models/segment/`): `forward(x)` -> logits (B, K, H, W) at the input size; in training,
  models with an auxiliary head give `(logits, aux)`, and the aux loss counts with the model's
  `default_cfg["aux_loss_weight"]` (torchvision's recipe: 0.5).
- Losses (`task_args: {loss: ...}`):
    ce       cross-entropy over the labelled pixels (the default)
    dice     1 - soft Dice, per class over the whole batch (as nnU-Net), averaged over the classes
             present in the batch's labels or predictions
    ce_dice  ce + dice: nnU-Net's loss
    focal    softmax focal loss, -(1 - p_t)^gamma log p_t (Lin et al. 2017), `focal_gamma` 2
- Evaluation streams a K x K confusion matrix of the labelled pixels (torchmetrics'
  `multiclass_confusion_matrix`, summed over batches and ranks): never the split's logits. From it,
  per class IoU = TP / (TP + FP + FN) and Dice = 2 TP / (2 TP + FP + FN); mIoU and mean Dice
  average the classes that occur (in the labels or the predictions) -- torchmetrics'
  `MulticlassJaccardIndex` with `average="macro"` over those classes; pixel accuracy = TP / labelled
  pixels. metrics.csv: `val_loss`, `val_miou` (the monitor), `val_dice`, `val_pixel_acc`.
- Predict writes a colour overlay PNG and the raw label PNG (palette mode: the pixel values are the
  class ids, the palette Pascal VOC's) per image, and predictions.json with each class's share.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.googlenet import split_aux
from ..registry import CnnkitError, register_task, suggest
from .base import Evaluator, ExportSpec, MetricSpec, Task

IGNORE = 255
LOSSES = ("ce", "dice", "ce_dice", "focal")


# ------------------------------------------------------------------ losses


def _valid(target: torch.Tensor) -> torch.Tensor:
    return target != IGNORE


def ce_loss(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over the labelled pixels; "sum" adds each image's mean (for the evaluator)."""
    t = target.long()
    if reduction == "sum":
        per = F.cross_entropy(logits.float(), t, ignore_index=IGNORE, reduction="none")  # (B, H, W), 0 where ignored
        counts = _valid(target).flatten(1).sum(1).clamp(min=1)
        return (per.flatten(1).sum(1) / counts).sum()
    if not bool(_valid(target).any()):
        return logits.sum() * 0.0  # nothing labelled: no gradient, but a finite loss
    return F.cross_entropy(logits.float(), t, ignore_index=IGNORE)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5,
              include_background: bool = True) -> torch.Tensor:
    """1 - soft Dice: per class c, 2 sum(p_c t_c) / (sum p_c + sum t_c) over the batch's labelled pixels
    (or voxels: any number of spatial axes), averaged over the classes present in the labels.
    `include_background=False` leaves class 0 out of the average, as nnU-Net's Dice does."""
    k = logits.shape[1]
    valid = _valid(target)
    p = logits.float().softmax(1) * valid[:, None]
    t = F.one_hot(torch.where(valid, target.long(), 0), k).movedim(-1, 1).float() * valid[:, None]
    axes = (0, *range(2, logits.ndim))
    inter = (p * t).sum(axes)
    denom = p.sum(axes) + t.sum(axes)
    present = t.sum(axes) > 0
    if not include_background:
        present[0] = False
    dice = (2 * inter + eps) / (denom + eps)
    if not bool(present.any()):
        return logits.sum() * 0.0
    return 1 - dice[present].mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Softmax focal loss over the labelled pixels: mean of -(1 - p_t)^gamma log p_t (gamma 0: cross-entropy)."""
    valid = _valid(target)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    logp = logits.float().log_softmax(1)
    lp = logp.gather(1, torch.where(valid, target.long(), 0)[:, None])[:, 0]
    fl = -((1 - lp.exp()) ** gamma) * lp
    return fl[valid].mean()


# ------------------------------------------------------------------ metrics


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """(K, K) int64 counts of (label row, prediction column) over the labelled pixels (torchmetrics)."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    return multiclass_confusion_matrix(pred.flatten(), target.long().flatten(), k, ignore_index=IGNORE,
                                       validate_args=False).long()


def scores_from_confusion(cm: torch.Tensor) -> dict:
    """IoU and Dice per class, their means over the classes that occur, and pixel accuracy."""
    cm = cm.double()
    tp = cm.diag()
    fn, fp = cm.sum(1) - tp, cm.sum(0) - tp
    occurs = (tp + fn + fp) > 0
    iou = torch.where(occurs, tp / (tp + fp + fn).clamp(min=1), torch.nan)
    dice = torch.where(occurs, 2 * tp / (2 * tp + fp + fn).clamp(min=1), torch.nan)
    total = cm.sum()
    return dict(miou=float(iou[occurs].mean()) if occurs.any() else 0.0,
                dice=float(dice[occurs].mean()) if occurs.any() else 0.0,
                pixel_acc=float(tp.sum() / total) if total > 0 else 0.0, iou=iou, dice_per_class=dice)


class SegmentEvaluator(Evaluator):
    """The loss and the confusion matrix as running sums, plus one number per image (its own mIoU) for the
    report's worst images."""

    def __init__(self, task: "SegmentationTask", device):
        self.task, self.k = task, task.num_classes
        self.cm = torch.zeros(self.k, self.k, dtype=torch.long, device=device)
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.n = 0
        self.image_iou: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.float()
        target = target.to(logits.device)
        self.loss += ce_loss(logits, target, reduction="sum").double()
        pred = logits.argmax(1)
        self.cm += confusion_matrix(pred, target, self.k)
        self.n += len(target)
        self.image_iou.append(per_image_miou(pred, target, self.k))

    def compute(self, dd=None) -> dict:
        loss, n = (dd.sum(self.loss, self.n) if dd is not None else (float(self.loss), self.n))
        cm = self.cm
        image_iou = torch.cat(self.image_iou) if self.image_iou else torch.zeros(0)
        if dd is not None and dd.enabled:
            cm = dd.reduce_tensor(cm)
            image_iou = dd.gather_rows(image_iou)
        s = scores_from_confusion(cm)
        per_class = {c: float(v) for c, v in zip(self.task.classes, s["iou"].tolist())}
        dice_class = {c: float(v) for c, v in zip(self.task.classes, s["dice_per_class"].tolist())}
        return dict(loss=loss / max(n, 1), miou=s["miou"], dice=s["dice"], pixel_acc=s["pixel_acc"],
                    iou_per_class=per_class, dice_per_class=dice_class, confusion=cm.cpu(),
                    image_iou=image_iou.cpu())


def per_image_miou(pred: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) mean IoU of each image over the classes that occur in it (labels or prediction); 1 for an
    image with no labelled pixels."""
    valid = _valid(target)
    t = torch.where(valid, target.long(), 0)
    p = F.one_hot(pred, k).bool() & valid[..., None]
    g = F.one_hot(t, k).bool() & valid[..., None]
    inter = (p & g).flatten(1, 2).sum(1).double()  # (B, K)
    union = (p | g).flatten(1, 2).sum(1).double()
    occurs = union > 0
    iou = torch.where(occurs, inter / union.clamp(min=1), 0.0).sum(1) / occurs.sum(1).clamp(min=1)
    return torch.where(occurs.any(1), iou, 1.0).float()


def class_rows(classes, confusion: torch.Tensor, *scores: dict) -> list[tuple]:
    """Table rows (class, each score as a percentage or n/a, labelled pixels) for `cnnkit eval`."""
    def pct(v):
        return "n/a" if v != v else f"{v:.2%}"

    return [(c, *(pct(d[c]) for d in scores), f"{int(confusion[i].sum()):,}") for i, c in enumerate(classes)]


# ------------------------------------------------------------------ drawing


def palette(k: int) -> list[tuple[int, int, int]]:
    from ..data.segmentation import voc_colormap

    return [tuple(int(v) for v in c) for c in voc_colormap(max(k, 1))]


def colourise(mask: torch.Tensor, k: int) -> torch.Tensor:
    """(H, W) class ids -> (3, H, W) uint8 in the palette; ignored pixels white."""
    pal = torch.tensor(palette(256), dtype=torch.uint8)
    pal[IGNORE] = torch.tensor([255, 255, 255], dtype=torch.uint8)
    return pal[mask.long()].permute(2, 0, 1).contiguous()


def overlay(image: torch.Tensor, mask: torch.Tensor, k: int, alpha: float = 0.5) -> torch.Tensor:
    """The image (C, H, W) uint8 with the non-background classes painted over it at `alpha`."""
    img = (image if image.shape[0] == 3 else image.expand(3, -1, -1)).float()
    col = colourise(mask, k).float()
    paint = ((mask > 0) & (mask != IGNORE))[None]
    out = torch.where(paint, (1 - alpha) * img + alpha * col, img)
    return out.round().clamp(0, 255).to(torch.uint8)


@register_task(name="segment")
class SegmentationTask(Task):
    name = "segment"
    target_kind = "mask"
    monitor = "val_miou"
    train_metrics = (MetricSpec("pixel_acc", "pct"),)
    defaults = dict(optimizer="adamw", lr=2e-3, weight_decay=1e-4, schedule="cosine", warmup_epochs=1.0,
                    epochs=10, batch_size=32, label_smoothing=0.0, tta=False, grad_clip=0.0,
                    augment="hflip=0.5,scale=0.2,translate=0.1,color=0.2")

    def __init__(self, classes, model_cfg: dict | None = None, loss: str = "ce", focal_gamma: float = 2.0,
                 **options):
        options.pop("label_smoothing", None)  # a classification option
        if options:
            raise suggest(next(iter(options)), ["loss", "focal_gamma"], "segmentation task option (task_args)")
        if loss not in LOSSES:
            raise suggest(loss, list(LOSSES), "segmentation loss")
        super().__init__(classes, model_cfg, loss=loss, focal_gamma=focal_gamma)
        if self.num_classes < 2:
            raise CnnkitError(f"segmentation needs at least 2 classes (background and one more), got {self.classes}")
        self.loss_name, self.focal_gamma = loss, float(focal_gamma)
        self.aux_weight = float(self.model_cfg.get("aux_loss_weight", 0.5))
        self.metrics = (MetricSpec("loss", "loss", higher_is_better=False), MetricSpec("miou", "pct"),
                        MetricSpec("dice", "pct"), MetricSpec("pixel_acc", "pct", bar=False))

    # -- loss
    def criterion(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "ce":
            return ce_loss(logits, target)
        if self.loss_name == "dice":
            return dice_loss(logits, target)
        if self.loss_name == "ce_dice":
            return ce_loss(logits, target) + dice_loss(logits, target)
        return focal_loss(logits, target, self.focal_gamma)

    def _check(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if logits.ndim != 4 or logits.shape[-2:] != target.shape[-2:]:
            raise CnnkitError(f"a segmentation model must return (B, K, H, W) logits at the mask's size "
                              f"{tuple(target.shape[-2:])}, got {tuple(logits.shape)}")
        if logits.shape[1] != self.num_classes:
            raise CnnkitError(f"the model gives {logits.shape[1]} class maps but the data has {self.num_classes} "
                              f"classes ({', '.join(self.classes[:5])}{', ...' if self.num_classes > 5 else ''})")

    # -- the engine's calls
    def batch_augment(self, spec):
        from ..data.mask_augment import mask_augment

        return mask_augment(spec)

    def synthetic_targets(self, n: int, size, generator: torch.Generator):
        h, w = size
        y = torch.zeros(n, h, w, dtype=torch.uint8)
        for i in range(n):  # one labelled rectangle per image over the background
            x0, y0 = (int(v) for v in torch.randint(0, max(1, min(h, w) // 2), (2,), generator=generator))
            y[i, y0:y0 + h // 2, x0:x0 + w // 2] = int(torch.randint(1, self.num_classes, (1,), generator=generator))
        return y

    def train_step(self, model, x, y):
        logits, aux = split_aux(model(x))
        self._check(logits, y)
        loss = self.criterion(logits, y)
        for a in aux:
            loss = loss + self.aux_weight * self.criterion(a, y)
        with torch.no_grad():
            valid = _valid(y)
            hit = ((logits.argmax(1) == y.long()) & valid).flatten(1).sum(1).float()
            acc = (hit / valid.flatten(1).sum(1).clamp(min=1)).sum()
        return loss, {"pixel_acc": acc}

    def forward_eval(self, model, x, tta: bool = False):
        out = model(x).float()
        return (out + model(x.flip(-1)).float().flip(-1)) / 2 if tta else out

    def evaluator(self, device) -> SegmentEvaluator:
        return SegmentEvaluator(self, device)

    # -- predictions
    def decode(self, logits: torch.Tensor, **options) -> list[dict]:
        probs = logits.float().softmax(1)
        conf, pred = probs.max(1)
        out = []
        for m, c in zip(pred, conf):
            m = m.to(torch.uint8).cpu()
            counts = torch.bincount(m.flatten().long(), minlength=self.num_classes)
            share = {self.classes[i]: round(float(v) / m.numel(), 4) for i, v in enumerate(counts.tolist()) if v}
            out.append(dict(mask=m, shares=share, confidence=round(float(c.mean()), 4)))
        return out

    def describe(self, pred: dict) -> list[str]:
        shares = sorted(pred["shares"].items(), key=lambda kv: -kv[1])
        return [", ".join(f"{name} {v:.1%}" for name, v in shares) + f"  (mean confidence {pred['confidence']:.1%})"]

    def draw(self, image: torch.Tensor, pred: dict) -> torch.Tensor:
        return overlay(image.to(torch.uint8), pred["mask"], self.num_classes)

    def save_drawing(self, image, pred, folder, stem: str):
        """FOLDER/STEM.png: the overlay (enlarged to at least 256 px); FOLDER/STEM_mask.png: the raw class
        ids at the model's resolution, as a palette PNG."""
        from PIL import Image

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        drawn = self.draw(image, pred)
        scale = max(1, 256 // max(drawn.shape[-2:]))
        pil = Image.fromarray(drawn.permute(1, 2, 0).numpy())
        if scale > 1:
            pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
        path = folder / f"{stem}.png"
        pil.save(path)
        raw = Image.fromarray(pred["mask"].numpy(), "P")
        raw.putpalette([v for c in palette(256) for v in c])
        raw.save(folder / f"{stem}_mask.png")
        return path

    def save_predictions(self, results: list[dict], folder) -> None:
        from ..utils import atomic_write_text

        def mask_png(r):
            return str(Path(r["drawn"]).with_name(Path(r["drawn"]).stem + "_mask.png")) if "drawn" in r else None

        rows = [dict(image=r["image"], mask_png=mask_png(r), shares=r["shares"], confidence=r["confidence"])
                for r in results]
        for r in results:
            r.pop("mask", None)  # written as PNGs; not JSON
        Path(folder).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(folder) / "predictions.json",
                          json.dumps(dict(classes=self.classes, images=rows), indent=1))

    def eval_summary(self, res: dict) -> dict:
        line = (f"loss {res['loss']:.4f}  mIoU {res['miou']:.2%}  Dice {res['dice']:.2%}  "
                f"pixel accuracy {res['pixel_acc']:.2%}")
        rows = class_rows(self.classes, res["confusion"], res["iou_per_class"], res["dice_per_class"])
        return dict(lines=[line], tables=[("per class", ("class", "IoU", "Dice", "pixels"), rows)])

    def report_sections(self) -> tuple:
        from ..report import segment as sections

        return sections.SECTIONS

    def export_spec(self, model, mean, std) -> ExportSpec:
        from ..deploy.export import NormalizedModel

        return ExportSpec(NormalizedModel(model, mean, std), ["logits"],
                          shape=lambda b, x: (b, self.num_classes, *x.shape[-2:]),
                          notes=["logits (N, classes, H, W) at the input size; argmax over dim 1 gives the class map"])


__all__ = ["SegmentationTask", "ce_loss", "dice_loss", "focal_loss", "scores_from_confusion"]
