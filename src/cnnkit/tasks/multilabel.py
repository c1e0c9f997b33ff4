"""Multi-label classification (CheXNet): any number of labels per image, one sigmoid per label.

Targets are multi-hot (B, K) vectors, or class indices (B,) that stand for one-hot vectors (a
single-label data set trains a multi-label model too). The loss is the mean binary cross-entropy
over labels; the metrics are the per-label AUROC (torchmetrics, binned on 200 thresholds so
evaluation streams in constant memory; `val_auroc` is their mean and the monitor), the mean
binary cross-entropy and the per-label accuracy at a 0.5 threshold.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register_task
from .base import Evaluator, MetricSpec
from .classify import ClassificationTask, logits_of

AUROC_THRESHOLDS = 200


def multi_hot(target: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(target, k).float() if target.ndim == 1 else target.float()


class MultiLabelEvaluator(Evaluator):
    def __init__(self, task: "MultiLabelTask", device):
        from torchmetrics.classification import MultilabelAUROC

        self.task, self.k = task, task.num_classes
        self.auroc = MultilabelAUROC(num_labels=self.k, average=None, thresholds=AUROC_THRESHOLDS).to(device)
        self.loss = torch.zeros((), device=device, dtype=torch.float64)
        self.right = torch.zeros((), device=device, dtype=torch.float64)
        self.n = 0
        self.targets, self.preds, self.conf = [], [], []

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.float()
        t = multi_hot(target, self.k)
        probs = torch.sigmoid(logits)
        self.loss += F.binary_cross_entropy_with_logits(logits, t, reduction="sum").double() / self.k
        self.right += ((probs > 0.5) == (t > 0.5)).float().sum().double() / self.k
        self.auroc.update(probs, t.long())
        self.n += len(t)
        pred = probs.argmax(1)  # for the galleries: the most probable label and its probability
        self.targets.append(t.argmax(1))
        self.preds.append(pred)
        self.conf.append(probs.gather(1, pred[:, None])[:, 0])

    def compute(self, dd=None) -> dict:
        loss, right, n = dd.sum(self.loss, self.right, self.n) if dd is not None else (
            float(self.loss), float(self.right), self.n)
        per_label = self.auroc.compute()  # torchmetrics gathers the binned counts across ranks itself
        targets, preds, conf = (torch.cat(v) if v else torch.zeros(0) for v in (self.targets, self.preds, self.conf))
        if dd is not None and dd.enabled:
            targets, preds, conf = dd.gather_rows(targets), dd.gather_rows(preds), dd.gather_rows(conf)
        n = max(n, 1)
        valid = per_label[~torch.isnan(per_label)] if per_label.numel() else per_label
        return dict(loss=loss / n, auroc=float(valid.mean()) if valid.numel() else float("nan"), acc=right / n,
                    auroc_per_label=per_label.cpu(), targets=targets, preds=preds, conf=conf)


@register_task(name="multilabel")
class MultiLabelTask(ClassificationTask):
    name = "multilabel"
    train_metrics = ()
    monitor = "val_auroc"

    def __init__(self, classes, model_cfg: dict | None = None, **options):
        options.pop("label_smoothing", None)  # a softmax option: nothing to smooth between independent labels
        super().__init__(classes, model_cfg, **options)
        self.metrics = (MetricSpec("loss", "loss", higher_is_better=False), MetricSpec("auroc", "ap"),
                        MetricSpec("acc", "pct"))

    def criterion(self, logits, target, reduction: str = "mean"):
        return F.binary_cross_entropy_with_logits(logits.float(), multi_hot(target, logits.shape[1]),
                                                  reduction=reduction)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())

    def train_step(self, model, x, y):
        return self.loss(model(x), y), {}

    def evaluator(self, device) -> MultiLabelEvaluator:
        return MultiLabelEvaluator(self, device)

    def decode(self, logits: torch.Tensor, topk: int = 5, **options) -> list[dict]:
        probs = self.probabilities(logits)
        out = []
        for p in probs:
            order = p.argsort(descending=True)[:topk]
            out.append(dict(top=[(self.classes[j], float(p[j])) for j in order.tolist()],
                            labels=[self.classes[j] for j in (p > 0.5).nonzero()[:, 0].tolist()]))
        return out

    def describe(self, pred: dict) -> list[str]:
        return [", ".join(f"{name} {p:.1%}" for name, p in pred["top"]),
                f"labels above 50%: {', '.join(pred['labels']) or 'none'}"]

    def eval_summary(self, res: dict) -> dict:
        line = f"loss {res['loss']:.4f}  mean AUROC {res['auroc']:.3f}  label accuracy {res['acc']:.2%}"
        rows = [(c, f"{float(a):.3f}") for c, a in zip(self.classes, res["auroc_per_label"])]
        return dict(lines=[line], tables=[("per label", ("label", "AUROC"), rows)])

    def log_pictures(self, logger, run, epoch: int, res: dict, log=print) -> None:
        from ..engine.loggers import log_cam_samples

        log_cam_samples(logger, run, epoch, log=log)  # no confusion matrix: labels are not exclusive

    def report_sections(self) -> tuple:
        from ..report import classify as sections

        return sections.MULTILABEL_SECTIONS


__all__ = ["MultiLabelTask", "logits_of"]
