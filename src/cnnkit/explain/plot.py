"""PNG figures of the explain methods' tensors (matplotlib's Agg canvas: files only, no display,
and no change to the global pyplot backend). Every function takes tensors as the methods return
them, writes `path` and returns it."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def _figure(rows: int, cols: int, cell: float = 1.6):
    # constrained layout keeps panel titles and a suptitle apart, whatever the grid's shape
    fig = Figure(figsize=(cols * cell, rows * cell + 0.3), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


def _save(fig: Figure, path, suptitle: str | None = None) -> Path:
    """Write the figure (with a `suptitle` above the panels, if given); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def to_display(img: torch.Tensor, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None):
    """(C, H, W) model input -> (H, W, 3) or (H, W) array in [0, 1]: undo mean/std when given, else stretch."""
    img = img.detach().float().cpu()
    if mean is not None and std is not None:
        img = img * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    else:
        img = (img - img.min()) / (img.max() - img.min()).clamp(min=1e-12)
    img = img.clamp(0, 1)
    if img.shape[0] == 1:
        return img[0].numpy()
    if img.shape[0] != 3:
        return img.mean(0).numpy()
    return img.permute(1, 2, 0).numpy()


def _show(ax, arr, title=None):
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    if title:
        ax.set_title(str(title), fontsize=8)


def save_heatmaps(path, images: torch.Tensor, heatmaps: dict | torch.Tensor, mean=None, std=None,
                  titles: Sequence[str] | None = None, alpha: float = 0.5) -> Path:
    """One row per image: the image, then each heat map (B, H, W) laid over it (jet colours).
    `heatmaps` is one tensor or {method name: tensor}; (B, C, H, W) maps (guided backprop) are shown
    as images of their own instead."""
    maps = heatmaps if isinstance(heatmaps, dict) else {"heat map": heatmaps}
    B = images.shape[0]
    fig, axes = _figure(B, 1 + len(maps))
    for i in range(B):
        base = to_display(images[i], mean, std)
        _show(axes[i, 0], base, titles[i] if titles else ("image" if i == 0 else None))
        for j, (name, h) in enumerate(maps.items(), start=1):
            ax = axes[i, j]
            if h.ndim == 4:  # gradients: stretch symmetrically around zero
                g = h[i].detach().float().cpu()
                g = 0.5 + 0.5 * g / g.abs().max().clamp(min=1e-12)
                _show(ax, to_display(g, [0.0] * g.shape[0], [1.0] * g.shape[0]))
            else:
                _show(ax, base)
                ax.imshow(h[i].detach().float().cpu().numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1)
            if i == 0:
                ax.set_title(name, fontsize=8)
    return _save(fig, path)


def save_grid(path, images: torch.Tensor, titles: Sequence[str] | None = None, ncols: int | None = None,
              mean=None, std=None, cell: float = 1.2, suptitle: str | None = None) -> Path:
    """Images (N, C, H, W) in a grid, each stretched to [0, 1] unless mean/std are given."""
    n = images.shape[0]
    ncols = ncols or min(n, 8)
    fig, axes = _figure(math.ceil(n / ncols), ncols, cell)
    for i in range(n):
        _show(axes.flat[i], to_display(images[i], mean, std), titles[i] if titles else None)
    return _save(fig, path, suptitle)


def save_filters(path, kernels: torch.Tensor, title: str | None = None) -> Path:
    """First-layer kernels as `filters` returns them (O, I, kh, kw) in [0, 1]: RGB when I = 3, else the
    mean over input channels in grey."""
    k = kernels if kernels.shape[1] in (1, 3) else kernels.mean(1, keepdim=True)
    return save_grid(path, k, ncols=min(k.shape[0], 16), mean=[0.0] * k.shape[1], std=[1.0] * k.shape[1],
                     cell=0.6, suptitle=title)


def save_feature_maps(path, maps: torch.Tensor, max_maps: int = 64) -> Path:
    """Channels of one image's activations (C, h, w), each stretched, up to `max_maps` of them."""
    maps = maps[:max_maps, None]
    return save_grid(path, maps, titles=[str(i) for i in range(maps.shape[0])], ncols=min(maps.shape[0], 8),
                     cell=0.9)


def save_inversions(path, original: torch.Tensor, results: Sequence[dict], mean=None, std=None,
                    row_titles: Sequence[str] | None = None) -> Path:
    """The images (C, H, W) or (B, C, H, W), one per row, and their reconstructions from `invert_depths`
    side by side, shallow to deep; a result's "title" (default: its layer) heads its column, and each
    panel shows its own pixel error ||x' - x|| / ||x - mean(x)||."""
    original = original[None] if original.ndim == 3 else original
    B = original.shape[0]
    fig, axes = _figure(B, 1 + len(results), 1.8)
    for i in range(B):
        _show(axes[i, 0], to_display(original[i], mean, std),
              row_titles[i] if row_titles else ("input" if i == 0 else None))
        for ax, r in zip(axes[i, 1:], results):
            rec = r["reconstruction"]
            rec = rec[min(i, rec.shape[0] - 1)] if rec.ndim == 4 else rec
            diff, spread = rec.float().cpu() - original[i].float().cpu(), original[i].float().cpu()
            spread = spread - spread.mean((1, 2), keepdim=True)
            err = float(diff.norm() / spread.norm().clamp(min=1e-12))
            head = f"{r.get('title', r['layer'])}\n" if i == 0 else ""
            _show(ax, to_display(rec, mean, std), f"{head}err {err:.2f}")
    return _save(fig, path, "feature inversion: the input rebuilt from each layer's features\n"
                            "err = ||x' - x|| / ||x - mean(x)||")


def _draw_erf(ax, erf: torch.Tensor, box=None, title: str | None = None):
    """The ERF map (H, W) and the analytic box (x0, y0, x1, y1 in pixel edges); where the box reaches past
    the image the axes grow to show it whole, with the image's own border in grey."""
    H, W = erf.shape
    ax.imshow(erf.detach().float().cpu().numpy(), cmap="magma", vmin=0, vmax=1, extent=(-0.5, W - 0.5, H - 0.5, -0.5))
    ax.add_patch(Rectangle((-0.5, -0.5), W, H, fill=False, color="0.6", lw=0.8))
    lo_x, lo_y, hi_x, hi_y = -0.5, -0.5, W - 0.5, H - 0.5
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="cyan", lw=1.5))
        lo_x, lo_y = min(lo_x, x0 - 1.5), min(lo_y, y0 - 1.5)
        hi_x, hi_y = max(hi_x, x1 + 0.5), max(hi_y, y1 + 0.5)
    ax.set_xlim(lo_x, hi_x)
    ax.set_ylim(hi_y, lo_y)
    ax.set_facecolor("white")
    if title:
        ax.set_title(title, fontsize=8)


def save_erf(path, erf: torch.Tensor, box=None, title: str = "effective receptive field") -> Path:
    """The ERF map (H, W) and, when given, the theoretical receptive field box (x0, y0, x1, y1)."""
    fig, axes = _figure(1, 1, 3.0)
    _draw_erf(axes[0, 0], erf, box, title)
    return _save(fig, path)


def save_erfs(path, panels: Sequence[dict], suptitle: str | None = None) -> Path:
    """Several ERFs side by side: each panel a dict with erf (H, W), box (or None) and title."""
    fig, axes = _figure(1, len(panels), 2.6)
    for ax, p in zip(axes[0], panels):
        _draw_erf(ax, p["erf"], p.get("box"), p.get("title"))
    return _save(fig, path, suptitle)


def save_curves(path, result: dict, index: int | None = None) -> Path:
    """Deletion and insertion curves from `deletion_insertion` (mean over images, or image `index`),
    with the random-order baseline dashed and the AUCs in the legend."""
    fig = Figure(figsize=(8, 3.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    frac = result["fraction"].numpy()
    pick = (lambda v: v.mean(0)) if index is None else (lambda v: v[index])
    for ax, kind in zip(axes, ("deletion", "insertion")):
        for prefix, style in (("", "-"), ("random_", "--")):
            if prefix + kind in result:
                auc = float(pick(result[prefix + kind + "_auc"]))
                ax.plot(frac, pick(result[prefix + kind]).numpy(), style,
                        label=f"{prefix.rstrip('_') or 'saliency'} order (AUC {auc:.3f})")
        ax.set(title=kind, xlabel="fraction of pixels", ylabel="class probability", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)
