"""The volume task's report sections: the plan's decisions with their reasons, Dice per class and per
case on the original grids, and slices of the best and worst cases (image, ground truth, prediction).
Each takes the report's `_Run`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import page
from .images import data_uri, upscale
from .page import esc

THUMB = 180


def _plan_section(run) -> str:
    plan = run.task().plan
    why = plan.get("why") or {}
    rows = []
    for key, value in plan.items():
        if key in ("why", "fingerprint", "augmentation"):
            continue
        rows.append([key, esc(_short(value)), esc(str(why.get(key, "")))])
    aug = plan.get("augmentation") or {}
    extra = (f"<p class='muted'>augmentation: {esc(', '.join(f'{k} {_short(v)}' for k, v in aug.items()))}</p>"
             if aug else "")
    return page.table(["decision", "value", "why"], rows) + extra


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    return str(v)


def _dice_section(run) -> str:
    ev, task = run.evaluation(), run.task()
    summary = task.eval_summary(ev)
    (_, h1, rows1), (_, h2, rows2) = summary["tables"][:2]
    line = (f"<p>Fresh evaluation of <code>{esc(Path(ev['checkpoint']).name)}/</code> on {ev['images']:,} held-out "
            f"cases of {esc(ev['data'])}, each predicted by a Gaussian-weighted sliding window and scored on its "
            f"original grid: foreground Dice <b>{ev['dice']:.2%}</b>, mean per-case Dice {ev['case_dice']:.2%}, "
            f"IoU {ev['iou']:.2%}.</p>")
    return (line + page.table(list(h1), [list(r) for r in rows1], numeric=(1, 2, 3))
            + page.table(list(h2), [list(r) for r in rows2], numeric=(1,)))


def _slice_pictures(run, which: list[int]) -> str:
    from ..tasks.segment import overlay

    task, model = run.task(), run.model()
    cases = _cases(run)
    dice = run.evaluation()["case_dice_each"]
    cells = []
    for i in which:
        case = cases[i]
        x = torch.from_numpy(case.image)[None]
        with torch.no_grad():
            pred = task.forward_eval(model, x).argmax(1)[0].to(torch.uint8).numpy()
        label = case.label
        z = int(np.argmax((label > 0).reshape(label.shape[0], -1).sum(1))) if label.ndim == 3 else 0
        img = case.image[0, z] if case.image.ndim == 4 else case.image[0]
        lo, hi = np.percentile(img, [0.5, 99.5])
        grey = torch.from_numpy(((np.clip(img, lo, hi) - lo) / max(hi - lo, 1e-6) * 255).astype(np.uint8))[None]
        gt = torch.from_numpy(np.where(label[z] == 255, 0, label[z]).astype(np.uint8))
        pr = torch.from_numpy(pred[z].astype(np.uint8))
        pics = [grey.expand(3, -1, -1), overlay(grey, gt, task.num_classes), overlay(grey, pr, task.num_classes)]
        imgs = "".join(page.img(data_uri(upscale(p.permute(1, 2, 0).numpy(), THUMB)), t, pixelated=True)
                       for p, t in zip(pics, ("image", "ground truth", "prediction")))
        cells.append(f"<figure><div class='pair'>{imgs}</div><figcaption>{esc(case.name)}, slice {z}: Dice "
                     f"{float(dice[i]):.1%}</figcaption></figure>")
    return (f"<p class='muted'>the axial slice with the most foreground, on the preprocessed grid: image, ground "
            f"truth, prediction</p><div class='gallery pairs'>{''.join(cells)}</div>")


def _cases(run):
    def make():
        meta = run.meta
        task = run.task()
        d = dict(meta.get("data") or {})
        bundle = type(task).load_data(d["name"], task.options, lambda *a: None, data_dir=d.get("data_dir"),
                                      val=d.get("val"), seed=d.get("seed") or 0, num_train=d.get("num_train"),
                                      num_val=d.get("num_val"))
        return bundle.val.cases

    return run._once("volume_cases", make)


def _cases_section(run) -> str:
    dice = run.evaluation()["case_dice_each"]
    if len(dice) == 0 or run.max_images == 0:
        return page.note("no cases")
    order = dice.argsort().tolist()
    k = min(3, len(order))
    pick = order[:k] + [i for i in order[::-1][:k] if i not in order[:k]]
    return _slice_pictures(run, pick)


SECTIONS = (
    ("plan", "The plan and its reasons", _plan_section),
    ("dice", "Dice per class and per case", _dice_section),
    ("cases", "Worst and best cases", _cases_section),
)
