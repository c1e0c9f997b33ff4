"""Plots written into a run directory: training curves and the confusion matrix."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history: list[dict], path: Path) -> Path:
    ep = [int(r["epoch"]) for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        a.plot(ep, [float(r[key]) for r in history], marker="o", label=label)
    for key, label in (("train_acc", "train"), ("val_acc", "validation")):
        b.plot(ep, [100 * float(r[key]) for r in history], marker="o", label=label)
    a.set(title="loss", xlabel="epoch")
    b.set(title="accuracy (%)", xlabel="epoch")
    for ax in (a, b):
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
