"""Plots written into a run directory: training curves and the confusion matrix."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history: list[dict], path: Path, formats: dict | None = None) -> Path:
    """Loss, then one panel per validation metric (with its training twin where there is one).

    `formats`: metrics.csv column -> display format (`tasks.column_formats`); "pct" columns are drawn in %."""
    formats = formats or {}
    ep = [int(r["epoch"]) for r in history]
    metrics = [k[4:] for k in history[-1] if k.startswith("val_") and k != "val_loss"]
    fig, axes = plt.subplots(1, 1 + len(metrics), figsize=(5 * (1 + len(metrics)), 3.8), squeeze=False)
    panels = [("loss", "loss")] + [(m, m) for m in metrics]
    for ax, (name, title) in zip(axes[0], panels):
        pct = formats.get(f"val_{name}") == "pct"
        for key, label in ((f"train_{name}", "train"), (f"val_{name}", "validation")):
            if all(key in r and r[key] not in ("", None) for r in history):
                ax.plot(ep, [(100 if pct else 1) * float(r[key]) for r in history], marker="o", label=label)
        ax.set(title=f"{title} (%)" if pct else title, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(matrix, classes, path: Path, normalize: bool = True) -> Path:
    m = matrix.float()
    shown = m / m.sum(1, keepdim=True).clamp(min=1) if normalize else m
    k = len(classes)
    size = max(4.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(shown.numpy(), cmap="Blues", vmin=0, vmax=1 if normalize else None)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                v = shown[i, j].item()
                ax.text(j, i, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center", fontsize=7,
                        color="white" if v > 0.5 * (shown.max().item() or 1) else "black")
        ax.set_xticks(range(k), classes, rotation=45, ha="right")
        ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix" + (" (row-normalised)" if normalize else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pr_curves(curves: dict, path: Path) -> Path:
    """Precision against recall per class: `curves` maps a class name to precision at 101 recall points."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4.5))
    recall = np.linspace(0, 1, 101)
    for name, prec in curves.items():
        p = np.asarray(prec, dtype=float)
        ax.plot(recall[: len(p)], p, label=f"{name} (AP50 {p.mean():.2f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall at IoU 0.5")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_roc_curves(curves: dict, path: Path) -> Path:
    """True- against false-positive rate per label: `curves` maps a label to (fpr, tpr, AUROC), the
    binned curves of the evaluation (`tasks.multilabel`: 200 thresholds); a label whose AUROC is NaN
    (no positives or no negatives) is left out."""
    import math

    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4.8))
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="chance (0.50)")
    for name, (fpr, tpr, auc) in curves.items():
        if auc is None or math.isnan(auc):
            continue
        ax.plot(np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float), lw=1.4, label=f"{name} ({auc:.3f})")
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", xlim=(0, 1), ylim=(0, 1.02),
           title="ROC per label (AUROC)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
