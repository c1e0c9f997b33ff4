"""Image classification: one class per image; softmax cross-entropy; accuracy, top-5, confusion matrix.

Targets are class indices (B,), or soft targets (B, K) after CutMix / MixUp. Models with auxiliary
heads (GoogLeNet) return (logits, aux1, ...) in training; each auxiliary loss counts with the
model's own `default_cfg["aux_loss_weight"]` (GoogLeNet's paper: 0.3).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.googlenet import loss_with_aux, split_aux
from ..registry import register_task
from .base import Evaluator, ExportSpec, MetricSpec, Task


def logits_of(outputs) -> torch.Tensor:
    """The main logits of a model output: a tensor, or a tuple with the logits first."""
    return split_aux(outputs)[0]


def hard_target(target: torch.Tensor) -> torch.Tensor:
    return target.argmax(1) if target.ndim == 2 else target


def tta_logits(model, x: torch.Tensor, tta: bool) -> torch.Tensor:
    """Float logits; with `tta`, averaged with the mirror image's (test-time augmentation)."""
    out = model(x).float()
    return (out + model(x.flip(-1)).float()) / 2 if tta else out


class ClassifyEvaluator(Evaluator):
    """Loss, top-1/top-5 hits and the confusion matrix as running sums, plus three numbers per image
    (target, prediction, its probability) for the report's galleries -- never the (N, K) logits."""

    def __init__(self, task: "ClassificationTask", device):
        self.task, self.k = task, task.num_classes
        self.loss = torch.zeros((), device=device, dtype=torch.float64)
        self.hits = torch.zeros((), device=device, dtype=torch.long)
        self.hits5 = torch.zeros((), device=device, dtype=torch.long)
        self.confusion = torch.zeros(self.k, self.k, device=device, dtype=torch.long)
        self.n = 0
        self.targets, self.preds, self.conf = [], [], []

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits, target = logits.float(), hard_target(target)
        self.loss += self.task.criterion(logits, target, reduction="sum").double()
        pred = logits.argmax(1)
        self.hits += (pred == target).sum()
        if self.k > 5:
            self.hits5 += (logits.topk(5, 1).indices == target[:, None]).any(1).sum()
        self.confusion += torch.bincount(target * self.k + pred, minlength=self.k * self.k).view(self.k, self.k)
        self.n += len(target)
        self.targets.append(target)
        self.preds.append(pred)
        self.conf.append(self.task.probabilities(logits).gather(1, pred[:, None])[:, 0])

    def compute(self, dd=None) -> dict:
        sums = [self.loss, self.hits, self.hits5, self.n]
        loss, hits, hits5, n = dd.sum(*sums) if dd is not None else [float(v) for v in sums]
        confusion = self.confusion
        cat = lambda parts, dtype: torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)  # noqa: E731
        targets, preds, conf = cat(self.targets, torch.long), cat(self.preds, torch.long), cat(self.conf, torch.float)
        if dd is not None and dd.enabled:
            confusion = dd.reduce_tensor(confusion)
            targets, preds, conf = dd.gather_rows(targets), dd.gather_rows(preds), dd.gather_rows(conf)
        n = max(n, 1)
        out = dict(loss=loss / n, acc=hits / n)
        if self.k > 5:
            out["acc5"] = hits5 / n
        out.update(confusion=confusion, targets=targets, preds=preds, conf=conf)
        return out


@register_task(name="classify")
class ClassificationTask(Task):
    name = "classify"
    target_kind = "label"
    train_metrics = (MetricSpec("acc", "pct"),)
    monitor = "val_acc"

    def __init__(self, classes, model_cfg: dict | None = None, label_smoothing: float = 0.0, **options):
        super().__init__(classes, model_cfg, label_smoothing=label_smoothing, **options)
        self.label_smoothing = label_smoothing
        self.aux_weight = float(self.model_cfg.get("aux_loss_weight", 0.3))
        self.metrics = (MetricSpec("loss", "loss", higher_is_better=False), MetricSpec("acc", "pct")) + (
            (MetricSpec("acc5", "pct", bar=False),) if self.num_classes > 5 else ())

    # -- loss
    def criterion(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing, reduction=reduction)

    def loss(self, outputs, target: torch.Tensor) -> torch.Tensor:
        return loss_with_aux(outputs, target, self.criterion, self.aux_weight)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(1)

    # -- the engine's calls
    def batch_augment(self, spec):
        from ..data.augment import BatchAugment, parse_augment

        return BatchAugment(parse_augment(spec), self.num_classes)

    def train_step(self, model, x, y):
        out = model(x)
        loss = self.loss(out, y)
        hits = (logits_of(out).detach().argmax(1) == hard_target(y)).sum()
        return loss, {"acc": hits}

    def forward_eval(self, model, x, tta: bool = False):
        return tta_logits(model, x, tta)

    def evaluator(self, device) -> ClassifyEvaluator:
        return ClassifyEvaluator(self, device)

    # -- predictions
    def decode(self, logits: torch.Tensor, topk: int = 5, **options) -> list[dict]:
        probs = self.probabilities(logits)
        top = probs.topk(min(topk, probs.shape[1]), dim=1)
        return [dict(top=[(self.classes[j], float(v)) for v, j in zip(vs.tolist(), js.tolist())])
                for vs, js in zip(top.values, top.indices)]

    def describe(self, pred: dict) -> list[str]:
        return [", ".join(f"{name} {p:.1%}" for name, p in pred["top"])]

    def eval_summary(self, res: dict) -> dict:
        line = f"loss {res['loss']:.4f}  accuracy {res['acc']:.2%}" + (
            f"  top-5 {res['acc5']:.2%}" if "acc5" in res else "")
        cm = res["confusion"]
        rows = [(c, f"{cm[i, i].item() / max(int(cm[i].sum()), 1):.2%}", f"{int(cm[i].sum()):,}")
                for i, c in enumerate(self.classes)]
        return dict(lines=[line], tables=[("per class", ("class", "accuracy", "images"), rows)])

    def report_sections(self) -> tuple:
        from ..report import classify as sections

        return sections.SECTIONS

    def log_pictures(self, logger, run, epoch: int, res: dict, log=print) -> None:
        from ..engine.loggers import log_cam_samples

        logger.log_confusion(res["confusion"], self.classes, epoch)
        log_cam_samples(logger, run, epoch, log=log)  # Grad-CAM of the epoch's last/ weights

    def export_spec(self, model, mean, std) -> ExportSpec:
        from ..deploy.export import NormalizedModel

        return ExportSpec(NormalizedModel(model, mean, std), ["logits"])
