"""The detection task's report sections: the COCO table, per-class AP, predictions beside the ground
truth and the worst images (lowest per-image F1 at IoU 0.5). Each takes the report's `_Run`."""
from __future__ import annotations

from pathlib import Path

import torch

from . import page
from .images import data_uri, to_hwc, upscale
from .page import esc

THUMB = 160


def _evaluation_section(run) -> str:
    ev = run.evaluation()
    task = run.task()
    summary = task.eval_summary(ev)
    title, headers, rows = summary["tables"][0]
    line = (f"<p>Fresh evaluation of <code>{esc(Path(ev['checkpoint']).name)}/</code> on the {esc(ev['split'])} "
            f"split of {esc(ev['data'])}: {ev['images']:,} images, mAP <b>{ev['map']:.3f}</b>, "
            f"mAP50 {ev['map50']:.3f}, mAP75 {ev['map75']:.3f} (COCO evaluation through torchmetrics).</p>")
    return line + page.table(list(headers), [list(r) for r in rows], numeric=(2,))


def _per_class_section(run) -> str:
    ev = run.evaluation()
    rows = [[c, f"{v:.3f}"] for c, v in ev["ap_per_class"].items()]
    return page.table(["class", "AP @[.50:.95]"], rows, numeric=(1,)) + (
        "<p class='muted'>AP: the area under the precision-recall curve of the class, averaged over IoU "
        "thresholds 0.50, 0.55, ..., 0.95 (COCO)</p>")


def _pr_section(run) -> str:
    from .images import figure_png
    from .plots import plot_pr_curves

    pr = run.evaluation().get("pr50")
    if not pr:
        return page.note("no precision-recall arrays in this evaluation")
    uri = data_uri(figure_png(plot_pr_curves, pr))
    return page.figure(uri, "precision-recall curves", "per class at IoU 0.5 (COCO's 101 recall points, all "
                       "areas, 100 detections per image); the area under each curve is the class's AP50")


def _pairs(run, idx: list[int]) -> str:
    from .samples import images_at

    task, model = run.task(), run.model()
    split = run.split()
    imgs = images_at(split, idx)
    from ..data.loader import Preprocess

    prep = Preprocess(run.meta["mean"], run.meta["std"], "cpu")
    with torch.no_grad():
        outs = task.forward_eval(model, prep(imgs))
    preds = task.decode(outs, conf=0.3)
    gts = split.targets[torch.tensor(idx)].per_image()
    cells = []
    for i, img, pred, gt in zip(idx, imgs, preds, gts):
        truth = dict(boxes=gt["boxes"].tolist(), scores=None,
                     label_ids=gt["labels"].tolist(), labels=[task.classes[k] for k in gt["labels"].tolist()])
        if "masks" in gt and task.masks:
            truth["masks"] = gt["masks"].bool()
        a = upscale(to_hwc(task.draw(img, truth)), THUMB)
        b = upscale(to_hwc(task.draw(img, pred)), THUMB)
        pair = page.img(data_uri(a), f"ground truth {i}", pixelated=True) + page.img(data_uri(b), f"prediction {i}",
                                                                                     pixelated=True)
        cap = f"image {i}: {len(gt['labels'])} objects, {len(pred['labels'])} detected (score >= 0.3)"
        cells.append(f"<figure><div class='pair'>{pair}</div><figcaption>{esc(cap)}</figcaption></figure>")
    return f"<div class='gallery pairs'>{''.join(cells)}</div>"


def _predictions_section(run) -> str:
    n = min(run.max_images, run.evaluation()["images"])
    if n == 0:
        return page.note("max_images is 0: no pictures")
    return ("<p class='muted'>left: the ground truth; right: the detections scoring at least 0.3</p>"
            + _pairs(run, list(range(n))))


def _worst_section(run) -> str:
    f1 = run.evaluation()["image_f1"]
    if len(f1) == 0 or run.max_images == 0:
        return page.note("no images")
    order = f1.argsort()[: min(run.max_images, 8)].tolist()
    return (f"<p class='muted'>the {len(order)} validation images with the lowest F1 of the detections at IoU 0.5 "
            f"(mean over the split {float(f1.mean()):.3f})</p>" + _pairs(run, order))


SECTIONS = (
    ("coco", "COCO evaluation", _evaluation_section),
    ("per-class-ap", "Per-class AP", _per_class_section),
    ("pr-curves", "Precision-recall curves", _pr_section),
    ("predictions", "Predictions beside the ground truth", _predictions_section),
    ("worst", "Worst images", _worst_section),
)
