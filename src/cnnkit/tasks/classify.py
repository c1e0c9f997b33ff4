"""Image classification: the loss, the metrics and the decoding of logits.

The task owns what is specific to classification; the engine owns the loop. Targets are
class indices (B,) or soft targets (B, K) after CutMix / MixUp; multi-label models
(`default_cfg["multi_label"]`, e.g. CheXNet) use a sigmoid per class instead of a softmax.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_confusion_matrix

from ..registry import register_task


@register_task(name="classify")
class ClassificationTask:
    name = "classify"

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, multi_label: bool = False,
                 aux_weight: float = 0.3):
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.multi_label = multi_label
        self.aux_weight = aux_weight  # GoogLeNet: each auxiliary classifier's loss counts 0.3 (the paper)

    @staticmethod
    def logits(outputs) -> torch.Tensor:
        """Models with auxiliary heads return (logits, aux1, ...) in training: the first is the prediction."""
        return outputs[0] if isinstance(outputs, (tuple, list)) else outputs

    def _one(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.multi_label:
            if target.ndim == 1:
                target = F.one_hot(target, self.num_classes)
            return F.binary_cross_entropy_with_logits(logits, target.float())
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    def loss(self, outputs, target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, (tuple, list)):
            main, *aux = outputs
            return self._one(main, target) + self.aux_weight * sum(self._one(a, target) for a in aux)
        return self._one(outputs, target)

    @staticmethod
    def hard_target(target: torch.Tensor) -> torch.Tensor:
        return target.argmax(1) if target.ndim == 2 else target

    def correct(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Number of top-1 hits in the batch, as a device tensor (no host sync)."""
        return (logits.argmax(1) == self.hard_target(target)).sum()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float()) if self.multi_label else logits.float().softmax(1)

    def metrics(self, logits: torch.Tensor, target: torch.Tensor) -> dict:
        """Validation metrics over a whole split: loss, top-1 (and top-5) accuracy, confusion matrix."""
        logits, target = logits.float(), self.hard_target(target)
        out = {"loss": self._one(logits, target).item(), "acc": (logits.argmax(1) == target).float().mean().item()}
        if self.num_classes > 5:
            top5 = logits.topk(5, 1).indices
            out["acc5"] = (top5 == target[:, None]).any(1).float().mean().item()
        out["confusion"] = multiclass_confusion_matrix(logits.argmax(1), target, self.num_classes)
        return out
