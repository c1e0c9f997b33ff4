"""Pictures as plain arrays: uint8 (H, W, 3) images, heat maps laid over them, PNG bytes and data URIs.

The HTML report embeds these as `data:image/png;base64,...` and the TensorBoard logger writes the
same arrays, so both show the same pixels. No figure toolkit is needed here except matplotlib's
colour map for the heat maps.
"""
from __future__ import annotations

import base64
import io

import numpy as np
import torch


def to_hwc(img: torch.Tensor) -> np.ndarray:
    """A uint8 image (C, H, W) as stored by the data sets -> (H, W, 3) uint8 (grey repeated to RGB)."""
    img = img.detach().cpu()
    if img.dtype != torch.uint8:  # float in [0, 1]
        img = (img.float().clamp(0, 1) * 255).round().to(torch.uint8)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    elif img.shape[0] != 3:
        img = img.float().mean(0, keepdim=True).round().to(torch.uint8).expand(3, -1, -1)
    return img.permute(1, 2, 0).contiguous().numpy()


def upscale(arr: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> `size` pixels high (width in proportion). Enlarging repeats pixels (nearest),
    so small data-set images stay sharp squares instead of a blur; shrinking averages (box filter)."""
    h, w = arr.shape[:2]
    if h == size:
        return arr
    width = max(1, round(w * size / h))
    if size > h:
        rows, cols = np.arange(size) * h // size, np.arange(width) * w // width
        return arr[rows][:, cols]
    from PIL import Image

    return np.asarray(Image.fromarray(arr).resize((width, size), Image.BOX))


def heat_colors(heat: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 in a matplotlib colour map (jet: blue = 0, red = 1)."""
    import matplotlib

    colors = matplotlib.colormaps[cmap] if hasattr(matplotlib, "colormaps") else matplotlib.cm.get_cmap(cmap)
    return (colors(np.clip(heat, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, heat, size: int | None = None, alpha: float = 0.5) -> np.ndarray:
    """A heat map (h, w) in [0, 1] (tensor or array) laid over an image (H, W, 3) uint8, both shown
    `size` pixels high. The image is enlarged as `upscale` does, the heat map bilinearly: it is a
    smooth field, and a Grad-CAM map often comes from a 4x4 or 8x8 layer. Returns (size, W', 3) uint8."""
    from PIL import Image

    base = upscale(image, size or image.shape[0])
    h, w = base.shape[:2]
    heat = heat.detach().float().cpu().numpy() if torch.is_tensor(heat) else np.asarray(heat, np.float32)
    heat = np.asarray(Image.fromarray(heat.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
    colors = heat_colors(heat).astype(np.float32)
    return (base.astype(np.float32) * (1 - alpha) + colors * alpha).round().clip(0, 255).astype(np.uint8)


def side_by_side(*arrays: np.ndarray, gap: int = 2) -> np.ndarray:
    """Arrays (H, W_i, 3) of one height joined left to right with a white gap."""
    h = arrays[0].shape[0]
    white = np.full((h, gap, 3), 255, np.uint8)
    parts = []
    for a in arrays:
        parts += [a, white]
    return np.concatenate(parts[:-1], axis=1)


def grid(arrays: list[np.ndarray], ncols: int = 8, gap: int = 2) -> np.ndarray:
    """Images (H_i, W_i, 3) in rows of `ncols` on white, each cell the size of the largest: (H, W, 3) uint8."""
    ch = max(a.shape[0] for a in arrays)
    cw = max(a.shape[1] for a in arrays)
    ncols = max(1, min(ncols, len(arrays)))
    nrows = -(-len(arrays) // ncols)
    out = np.full((nrows * ch + (nrows - 1) * gap, ncols * cw + (ncols - 1) * gap, 3), 255, np.uint8)
    for i, a in enumerate(arrays):
        r, c = divmod(i, ncols)
        y, x = r * (ch + gap), c * (cw + gap)
        out[y:y + a.shape[0], x:x + a.shape[1]] = a
    return out


def png_bytes(arr: np.ndarray) -> bytes:
    """(H, W, 3) or (H, W, 4) uint8 -> PNG file bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def png_to_array(data: bytes) -> np.ndarray:
    """PNG bytes -> (H, W, 3) uint8 (alpha dropped): how matplotlib figures reach TensorBoard."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def data_uri(png: bytes | np.ndarray) -> str:
    """PNG bytes (or an array, encoded first) as a `data:` URI for an <img src>: the page needs no files."""
    if isinstance(png, np.ndarray):
        png = png_bytes(png)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_png(plot, *args, **kwargs) -> bytes:
    """PNG bytes of a plot function that writes to a path (`report.plots.plot_curves`, ...): it writes
    into memory instead, since matplotlib's savefig takes a file object as well as a path."""
    buf = io.BytesIO()
    plot(*args, buf, **kwargs)
    return buf.getvalue()
