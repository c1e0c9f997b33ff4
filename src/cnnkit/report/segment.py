"""The segmentation task's report sections: the per-class IoU table, overlays beside the ground truth,
and the worst images (lowest per-image mIoU). Each takes the report's `_Run`."""
from __future__ import annotations

from pathlib import Path

import torch

from . import page
from .images import data_uri, to_hwc, upscale
from .page import esc

THUMB = 160


def _evaluation_section(run) -> str:
    ev, task = run.evaluation(), run.task()
    summary = task.eval_summary(ev)
    _, headers, rows = summary["tables"][0]
    line = (f"<p>Fresh evaluation of <code>{esc(Path(ev['checkpoint']).name)}/</code> on the {esc(ev['split'])} "
            f"split of {esc(ev['data'])}: {ev['images']:,} images, mIoU <b>{ev['miou']:.2%}</b>, Dice "
            f"{ev['dice']:.2%}, pixel accuracy {ev['pixel_acc']:.2%} (pixels labelled 255 are left out).</p>")
    return line + page.table(list(headers), [list(r) for r in rows], numeric=(1, 2, 3)) + (
        "<p class='muted'>IoU = TP / (TP + FP + FN) and Dice = 2 TP / (2 TP + FP + FN) over the split's pixels of "
        "the class; mIoU and mean Dice average the classes that occur</p>")


def _pairs(run, idx: list[int]) -> str:
    from ..data.loader import Preprocess
    from .samples import images_at

    task, model, split = run.task(), run.model(), run.split()
    imgs = images_at(split, idx)
    prep = Preprocess(run.meta["mean"], run.meta["std"], "cpu")
    with torch.no_grad():
        logits = task.forward_eval(model, prep(imgs))
    preds = task.decode(logits)
    truth = split.targets[torch.tensor(idx)]
    iou = run.evaluation()["image_iou"]
    cells = []
    for i, img, pred, gt in zip(idx, imgs, preds, truth):
        a = upscale(to_hwc(task.draw(img, dict(mask=gt))), THUMB)
        b = upscale(to_hwc(task.draw(img, pred)), THUMB)
        pair = page.img(data_uri(a), f"ground truth {i}", pixelated=True) + page.img(data_uri(b), f"prediction {i}",
                                                                                     pixelated=True)
        score = f"mIoU {float(iou[i]):.1%}" if i < len(iou) else ""
        cells.append(f"<figure><div class='pair'>{pair}</div><figcaption>image {i}: {esc(score)}</figcaption></figure>")
    return f"<div class='gallery pairs'>{''.join(cells)}</div>"


def _legend(run) -> str:
    from ..tasks.segment import palette

    task = run.task()
    pal = palette(task.num_classes)
    items = "".join(f"<span style='display:inline-block;margin-right:1em'><span style='display:inline-block;width:1em;"
                    f"height:1em;background:rgb{pal[k]};vertical-align:middle'></span> {esc(c)}</span>"
                    for k, c in enumerate(task.classes) if k > 0)
    return f"<p class='muted'>{items} (class 0, {esc(task.classes[0])}, is left unpainted)</p>"


def _predictions_section(run) -> str:
    n = min(run.max_images, run.evaluation()["images"])
    if n == 0:
        return page.note("max_images is 0: no pictures")
    return "<p class='muted'>left: the ground truth; right: the prediction</p>" + _legend(run) + _pairs(
        run, list(range(n)))


def _worst_section(run) -> str:
    iou = run.evaluation()["image_iou"]
    if len(iou) == 0 or run.max_images == 0:
        return page.note("no images")
    order = iou.argsort()[: min(run.max_images, 8)].tolist()
    return (f"<p class='muted'>the {len(order)} validation images with the lowest mIoU of their own (mean over "
            f"the split {float(iou.mean()):.1%})</p>" + _pairs(run, order))


SECTIONS = (
    ("per-class-iou", "Per-class IoU", _evaluation_section),
    ("overlays", "Predictions beside the ground truth", _predictions_section),
    ("worst", "Worst images", _worst_section),
)
