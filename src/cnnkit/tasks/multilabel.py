"""Multi-label classification (CheXNet): any number of labels per image, one sigmoid per label.

Targets (`target_kind` "labels", `data/multilabel.py`) are uint8 multi-hot rows (B, K): 1 present,
0 absent, 255 ignored, 254 uncertain (CheXpert), which the `uncertain` option turns into 1, 0 or
ignored (U-Ones, U-Zeros, U-Ignore). Class indices (B,) of a single-label data set stand for
one-hot rows, so such a data set trains a multi-label model too.

Options (`task_args`):
- `loss`: `bce`, the mean binary cross-entropy over the labels, or `weighted_bce`, CheXNet's
  per-label weighting: w+ = |N| / (|P| + |N|) on positives and w- = |P| / (|P| + |N|) on
  negatives, from the label counts of the training split (`prepare`, which the engine calls once
  with its targets), so a rare finding's few positives weigh as much as its many negatives. The
  default is the model's `default_cfg["loss"]` when that names `weighted_bce` (chexnet), else `bce`.
- `label_weights`: the (w+, w-) pair of each label, given, or filled in by `prepare`; it is kept
  in the task state and in meta.json's task options, so resume and `cnnkit eval` use the weights
  the run trained with.
- `uncertain`: `ones` (default), `zeros` or `ignore`.

Metrics: the per-label AUROC from torchmetrics' binned ROC curves (200 thresholds, so evaluation
streams in constant memory; `val_auroc` is their mean over the labels that have positives and
negatives, and the monitor), the loss over the counted entries and the per-label accuracy at 0.5.
The same binned state gives the report its ROC curves.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.multilabel import IGNORE, POLICIES, resolve_uncertain
from ..registry import CnnkitError, register_task, suggest
from .base import Evaluator, MetricSpec
from .classify import ClassificationTask, logits_of

AUROC_THRESHOLDS = 200
LOSSES = ("bce", "weighted_bce")
OPTIONS = ("loss", "label_weights", "uncertain")


def multi_hot(target: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(target, k).float() if target.ndim == 1 else target.float()


def label_weights(targets: torch.Tensor, k: int, uncertain: str = "ones") -> torch.Tensor:
    """CheXNet's (w+, w-) per label, (K, 2) float32, from a split's targets: w+ = |N| / (|P| + |N|),
    w- = |P| / (|P| + |N|) over the entries that count; a label with none counted gets (0.5, 0.5)."""
    t, valid = binary_targets(targets, k, uncertain)
    pos = (t * valid).sum(0).double()
    neg = ((1 - t) * valid).sum(0).double()
    total = pos + neg
    w = torch.stack([neg, pos], 1) / total.clamp(min=1)[:, None]
    w[total == 0] = 0.5
    return w.float()


def binary_targets(target: torch.Tensor, k: int, uncertain: str = "ones") -> tuple[torch.Tensor, torch.Tensor]:
    """(targets in [0, 1], 1 where the entry counts), both float (B, K), from any multilabel target."""
    if target.ndim == 1:
        t = F.one_hot(target.long(), k).float()
        return t, torch.ones_like(t)
    if target.dtype == torch.uint8:
        target = resolve_uncertain(target, uncertain)
        valid = target != IGNORE
        return (target == 1).float(), valid.float()
    t = target.float()
    return t, torch.ones_like(t)


class MultiLabelEvaluator(Evaluator):
    def __init__(self, task: "MultiLabelTask", device):
        from torchmetrics.classification import MultilabelROC

        self.task, self.k = task, task.num_classes
        self.roc = MultilabelROC(num_labels=self.k, thresholds=AUROC_THRESHOLDS, ignore_index=IGNORE).to(device)
        self.loss = torch.zeros((), device=device, dtype=torch.float64)
        self.right = torch.zeros((), device=device, dtype=torch.float64)
        self.counted = torch.zeros((), device=device, dtype=torch.float64)
        self.pos = torch.zeros(self.k, device=device, dtype=torch.float64)
        self.neg = torch.zeros(self.k, device=device, dtype=torch.float64)
        self.n = 0
        self.targets, self.preds, self.conf = [], [], []

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.float()
        t, valid = binary_targets(target, self.k, self.task.uncertain)
        probs = torch.sigmoid(logits)
        self.loss += self.task.entry_losses(logits, t, valid).sum().double()
        self.right += (((probs > 0.5) == (t > 0.5)).float() * valid).sum().double()
        self.counted += valid.sum().double()
        self.pos += (t * valid).sum(0).double()
        self.neg += ((1 - t) * valid).sum(0).double()
        hard = torch.where(valid > 0, (t > 0.5).long(), torch.full_like(t, IGNORE, dtype=torch.long))
        self.roc.update(probs, hard)
        self.n += len(t)
        pred = probs.argmax(1)  # for the galleries: the targets as given, the most probable label and its probability
        self.targets.append(target)
        self.preds.append(pred)
        self.conf.append(probs.gather(1, pred[:, None])[:, 0])

    def compute(self, dd=None) -> dict:
        sums = [self.loss, self.right, self.counted]
        loss, right, counted = dd.sum(*sums) if dd is not None else [float(v) for v in sums]
        pos, neg = self.pos, self.neg
        fpr, tpr, _ = self.roc.compute()  # (K, T) each; torchmetrics sums the binned counts across ranks itself
        targets, preds, conf = (torch.cat(v) if v else torch.zeros(0) for v in (self.targets, self.preds, self.conf))
        if dd is not None and dd.enabled:
            pos, neg = dd.reduce_tensor(pos), dd.reduce_tensor(neg)
            targets, preds, conf = dd.gather_rows(targets), dd.gather_rows(preds), dd.gather_rows(conf)
        per_label = torch.trapz(tpr, fpr, dim=1).float()
        per_label[(pos == 0) | (neg == 0)] = float("nan")  # no positives or no negatives: no ranking to score
        valid = per_label[~torch.isnan(per_label)]
        counted = max(counted, 1.0)
        return dict(loss=loss / counted, auroc=float(valid.mean()) if valid.numel() else float("nan"),
                    acc=right / counted, auroc_per_label=per_label.cpu(), roc_fpr=fpr.cpu(), roc_tpr=tpr.cpu(),
                    positives=pos.cpu(), negatives=neg.cpu(), targets=targets, preds=preds, conf=conf)


@register_task(name="multilabel")
class MultiLabelTask(ClassificationTask):
    name = "multilabel"
    target_kind = "labels"
    train_metrics = ()
    monitor = "val_auroc"

    def __init__(self, classes, model_cfg: dict | None = None, loss: str | None = None,
                 label_weights=None, uncertain: str = "ones", **options):
        options.pop("label_smoothing", None)  # a softmax option: nothing to smooth between independent labels
        if options:
            raise suggest(next(iter(options)), OPTIONS, "multilabel task option (task_args)")
        cfg = dict(model_cfg or {})
        loss = loss or ("weighted_bce" if cfg.get("loss") == "weighted_bce" else "bce")
        if loss not in LOSSES:
            raise suggest(str(loss), LOSSES, "multilabel loss")
        if uncertain not in POLICIES:
            raise suggest(str(uncertain), POLICIES, "uncertain-label policy")
        super().__init__(classes, model_cfg, loss=loss, uncertain=uncertain)
        self.options.pop("label_smoothing", None)
        self.loss_name, self.uncertain = loss, uncertain
        self.weights: torch.Tensor | None = None
        if label_weights is not None:
            self._set_weights(label_weights)
        self.metrics = (MetricSpec("loss", "loss", higher_is_better=False), MetricSpec("auroc", "ap"),
                        MetricSpec("acc", "pct"))

    # -- the weights of the weighted loss
    def _set_weights(self, w) -> None:
        w = torch.as_tensor(w, dtype=torch.float32).cpu()
        if w.shape != (self.num_classes, 2) or not torch.isfinite(w).all() or (w < 0).any():
            raise CnnkitError(f"label_weights must be {self.num_classes} pairs [w+, w-] of numbers >= 0 "
                              f"(one per label), got shape {tuple(w.shape)}")
        self.weights = w
        self.options["label_weights"] = w.tolist()

    def prepare(self, train_targets) -> None:
        """The weighted loss's (w+, w-) per label from the training split's label counts, unless given."""
        if self.loss_name == "weighted_bce" and self.weights is None and isinstance(train_targets, torch.Tensor):
            self._set_weights(label_weights(train_targets.cpu(), self.num_classes, self.uncertain))

    def state_dict(self) -> dict:
        return {"label_weights": self.weights.clone()} if self.weights is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if state.get("label_weights") is not None:
            self._set_weights(state["label_weights"])

    # -- loss
    def entry_losses(self, logits: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, K) loss of each entry (0 where it does not count): plain or CheXNet-weighted BCE."""
        if self.loss_name == "bce":
            return F.binary_cross_entropy_with_logits(logits, t, reduction="none") * valid
        w = self.weights if self.weights is not None else torch.full((logits.shape[1], 2), 0.5)
        w = w.to(logits.device)
        # -(w+ y log p + w- (1 - y) log(1 - p)), with log p = logsigmoid(x), log(1 - p) = logsigmoid(-x)
        out = -(w[:, 0] * t * F.logsigmoid(logits) + w[:, 1] * (1 - t) * F.logsigmoid(-logits))
        return out * valid

    def criterion(self, logits, target, reduction: str = "mean"):
        logits = logits.float()
        t, valid = binary_targets(target, logits.shape[1], self.uncertain)
        losses = self.entry_losses(logits, t, valid)
        if reduction == "sum":
            return losses.sum()
        return losses.sum() / valid.sum().clamp(min=1)

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
        rows = [(c, f"{float(a):.3f}", f"{int(p):,}")
                for c, a, p in zip(self.classes, res["auroc_per_label"], res["positives"])]
        return dict(lines=[line], tables=[("per label", ("label", "AUROC", "positives"), rows)])

    def log_pictures(self, logger, run, epoch: int, res: dict, log=print) -> None:
        from ..engine.loggers import log_cam_samples

        log_cam_samples(logger, run, epoch, log=log)  # no confusion matrix: labels are not exclusive

    def report_sections(self) -> tuple:
        from ..report import classify as sections

        return sections.MULTILABEL_SECTIONS


__all__ = ["MultiLabelTask", "label_weights", "logits_of"]
