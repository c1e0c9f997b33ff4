"""The classification tasks' report sections: confusion matrix, per-class precision / recall / F1,
the most confident mistakes and a Grad-CAM gallery (multi-label: per-label AUROC, ROC curves and a
Grad-CAM of each label an image holds). Each takes the report's `_Run` and returns HTML;
`report.html` lays them out.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from . import page
from .images import data_uri, figure_png, heat_colors, to_hwc, upscale
from .page import esc

THUMB = 96  # pixels: height of each gallery picture
MAX_LABELLED_CLASSES = 30  # more classes than this: the confusion matrix as plain coloured cells


def _pct(v) -> str:
    return f"{100 * float(v):.2f}%"


def _confusion_section(run) -> str:
    from .plots import plot_confusion

    ev = run.evaluation()
    line = _evaluated(ev, f"accuracy <b>{_pct(ev['acc'])}</b>" + (f", top-5 {_pct(ev['acc5'])}" if "acc5" in ev else "")
                      + f", loss {ev['loss']:.4f}")
    cm, k = ev["confusion"].cpu(), len(run.classes)
    caption = "rows: true class, columns: predicted; each row sums to 1"
    if k <= MAX_LABELLED_CLASSES:
        uri = data_uri(figure_png(plot_confusion, cm, run.classes))
        return line + page.figure(uri, "confusion matrix", caption, width=min(640, 300 + 40 * k))
    # many classes: one coloured cell per entry (a labelled figure would be thousands of pixels wide)
    rows = (cm.float() / cm.sum(1, keepdim=True).clamp(min=1)).numpy()  # (K, K) row-normalised
    uri = data_uri(upscale(heat_colors(rows, "Blues"), max(k, 512 // k * k)))
    return line + page.figure(uri, "confusion matrix", f"{caption}; classes in the order of the per-class table, "
                              "darker = more", width=512)


def _per_class_section(run) -> str:
    from torchmetrics.classification import MulticlassF1Score, MulticlassPrecision, MulticlassRecall

    ev = run.evaluation()
    k = len(run.classes)
    preds, targets = ev["preds"], ev["targets"]
    p, r, f = (m(num_classes=k, average=None)(preds, targets)
               for m in (MulticlassPrecision, MulticlassRecall, MulticlassF1Score))
    support = torch.bincount(targets, minlength=k)
    rows = [[c, f"{p[i]:.3f}", f"{r[i]:.3f}", f"{f[i]:.3f}", f"{int(support[i]):,}"] for i, c in enumerate(run.classes)]
    rows.append(["macro average", f"{p.mean():.3f}", f"{r.mean():.3f}", f"{f.mean():.3f}", f"{int(support.sum()):,}"])
    table = page.table(["class", "precision", "recall", "F1", "support"], rows, numeric=(1, 2, 3, 4),
                       row_class=[""] * k + ["total"])
    return table + ("<p class='muted'>precision: of the images predicted as the class, how many are; recall: of "
                    "the images of the class, how many are found; F1: their harmonic mean (torchmetrics, "
                    "average=None)</p>")


def _thumb(img_u8: torch.Tensor) -> str:
    return data_uri(upscale(to_hwc(img_u8), THUMB))


def _mistakes_section(run) -> str:
    from .samples import images_at, worst_mistakes

    ev = run.evaluation()
    wrong = int((ev["preds"] != ev["targets"]).sum())
    if wrong == 0:
        return page.note(f"no mistakes on the {ev['images']:,} validation images")
    idx = worst_mistakes(ev["conf"], ev["preds"], ev["targets"], run.max_images)
    if not idx:
        return page.note("max_images is 0: no pictures")
    imgs = images_at(run.split(), idx)
    cells = []
    for j, i in enumerate(idx):
        t, p = int(ev["targets"][i]), int(ev["preds"][i])
        cap = (f"true <b>{esc(run.classes[t])}</b><br>predicted <span class='no'>{esc(run.classes[p])}</span> "
               f"{100 * float(ev['conf'][i]):.0f}%")
        cells.append(f"<figure>{page.img(_thumb(imgs[j]), f'image {i}', pixelated=True)}"
                     f"<figcaption>{cap}</figcaption></figure>")
    return (f"<p class='muted'>{len(idx)} of the {wrong:,} wrong predictions ({_pct(wrong / ev['images'])} of the "
            f"images), the most confident first</p><div class='gallery'>{''.join(cells)}</div>")


def _gradcam_section(run) -> str:
    from .samples import cam_samples, images_at, per_class

    ev = run.evaluation()
    idx = per_class(ev["targets"], run.max_images)
    if not idx:
        return page.note("max_images is 0: no pictures")
    model = run.model()
    samples = cam_samples(model, images_at(run.split(), idx), run.meta["mean"], run.meta["std"], size=THUMB,
                          probabilities=run.task().probabilities)
    stage = (getattr(model, "feature_info", None) or [{}])[-1].get("module", "?")
    cells = []
    for i, s in zip(idx, samples):
        t = int(ev["targets"][i])
        mark = "ok" if s.pred == t else "no"
        cap = (f"true <b>{esc(run.classes[t])}</b> · predicted <span class='{mark}'>{esc(run.classes[s.pred])}</span>"
               f" {100 * s.conf:.0f}%")
        pair = (page.img(data_uri(s.image), f"image {i}", pixelated=True)
                + page.img(data_uri(s.overlay), f"Grad-CAM of image {i}"))
        cells.append(f"<figure><div class='pair'>{pair}</div><figcaption>{cap}</figcaption></figure>")
    return (f"<p class='muted'>Grad-CAM of the predicted class at <code>{esc(stage)}</code>, the last feature "
            "stage: red is where the evidence for that class lies. Validation images, classes in turn.</p>"
            f"<div class='gallery pairs'>{''.join(cells)}</div>")


def _evaluated(ev: dict, what: str) -> str:
    return (f"<p>Fresh evaluation of <code>{esc(Path(ev['checkpoint']).name)}/</code> on the {esc(ev['split'])} "
            f"split of {esc(ev['data'])}: {ev['images']:,} images, {what}"
            + (" (with test-time flip)" if ev.get("tta") else "") + ".</p>")


def _auroc_section(run) -> str:
    ev = run.evaluation()
    line = _evaluated(ev, f"mean AUROC <b>{ev['auroc']:.3f}</b>, label accuracy {_pct(ev['acc'])}, "
                          f"loss {ev['loss']:.4f}")
    pos = ev.get("positives")
    rows = [[c, f"{float(a):.3f}"] + ([f"{int(pos[j]):,}"] if pos is not None else [])
            for j, (c, a) in enumerate(zip(run.classes, ev["auroc_per_label"]))]
    rows.append(["mean", f"{ev['auroc']:.3f}"] + ([f"{int(pos.sum()):,}"] if pos is not None else []))
    head = ["label", "AUROC"] + (["positives"] if pos is not None else [])
    table = page.table(head, rows, numeric=(1, 2), row_class=[""] * len(run.classes) + ["total"])
    return line + table + ("<p class='muted'>one sigmoid per label: AUROC is the chance that an image with the "
                           "label scores above one without it (torchmetrics, 200 thresholds)</p>")


def _roc_section(run) -> str:
    from .plots import plot_roc_curves

    ev = run.evaluation()
    if "roc_fpr" not in ev:
        return page.note("this evaluation kept no ROC curves")
    curves = {c: (ev["roc_fpr"][j], ev["roc_tpr"][j], float(ev["auroc_per_label"][j]))
              for j, c in enumerate(run.classes)}
    uri = data_uri(figure_png(plot_roc_curves, curves))
    left = [c for c, (_, _, a) in curves.items() if math.isnan(a)]
    note = f"; left out (no positives or no negatives in the split): {', '.join(left)}" if left else ""
    return page.figure(uri, "ROC curves", "true- against false-positive rate of each label as its threshold falls "
                       f"from 1 to 0 (the evaluation's 200 binned thresholds); the area under each is its AUROC{note}",
                       width=560)


def _label_cam_section(run) -> str:
    """A few validation images, each with the Grad-CAM of every label it holds (labels taken in turn)."""
    from .samples import cam_samples, images_at, per_class

    ev = run.evaluation()
    targets = ev["targets"]
    if targets.ndim != 2:  # class indices (a single-label data set): one label per image
        targets = torch.nn.functional.one_hot(targets.long(), len(run.classes))
    n = min(run.max_images, max(1, len(run.classes)))
    idx = per_class(targets, n)
    if not idx:
        return page.note("max_images is 0: no pictures" if run.max_images == 0 else "no image holds a label")
    present = [(targets[i] == 1).nonzero()[:, 0].tolist() for i in idx]
    wanted = torch.tensor([k for labels in present for k in labels], dtype=torch.long)
    images = images_at(run.split(), idx)
    reps = torch.repeat_interleave(torch.arange(len(idx)), torch.tensor([len(p) for p in present]))
    model = run.model()
    samples = cam_samples(model, images[reps], run.meta["mean"], run.meta["std"], size=THUMB,
                          probabilities=run.task().probabilities, target=wanted)
    stage = (getattr(model, "feature_info", None) or [{}])[-1].get("module", "?")
    cells, j = [], 0
    for i, labels in zip(idx, present):
        pics = [page.img(data_uri(samples[j].image), f"image {i}", pixelated=True)]
        caps = []
        for k in labels:
            s_ = samples[j]
            mark = "ok" if s_.conf > 0.5 else "no"
            pics.append(page.img(data_uri(s_.overlay), f"Grad-CAM of {run.classes[k]} in image {i}"))
            caps.append(f"<b>{esc(run.classes[k])}</b> <span class='{mark}'>{100 * s_.conf:.0f}%</span>")
            j += 1
        cells.append(f"<figure><div class='pair'>{''.join(pics)}</div><figcaption>image {i}: "
                     f"{' · '.join(caps)}</figcaption></figure>")
    return (f"<p class='muted'>Grad-CAM at <code>{esc(stage)}</code>, the last feature stage, of each label the "
            "image holds, left to right after the image: red is where the evidence for that label lies; the "
            "percentage is the label's sigmoid (green above 50%). Validation images, labels in turn.</p>"
            f"<div class='gallery pairs'>{''.join(cells)}</div>")


SECTIONS = (
    ("confusion", "Confusion matrix", _confusion_section),
    ("per-class", "Per-class precision, recall, F1", _per_class_section),
    ("mistakes", "Most confident mistakes", _mistakes_section),
    ("gradcam", "Grad-CAM gallery", _gradcam_section),
)
MULTILABEL_SECTIONS = (
    ("auroc", "Per-label AUROC", _auroc_section),
    ("roc", "ROC curves", _roc_section),
    ("gradcam", "Grad-CAM of each label", _label_cam_section),
)
