"""Time to mIoU of the segmentation families on the built-in shapes scenes (64 px, 1-4 objects,
9 classes with the background).

Each run is `cnnkit train --model M --data shapes` with the segment task's defaults (AdamW, cosine,
flip / zoom / shift / colour) plus the settings printed beside it. Per run it prints, after every
epoch, the cumulative training time, val mIoU, Dice and pixel accuracy, then the time to mIoU
0.80 / 0.85 and where the wall time went (training steps vs validation and the rest).

    python benchmarks/segment.py                                   # unet_small, fcn_resnet18, deeplabv3_resnet18
    python benchmarks/segment.py --runs unet_small --epochs 10
    python benchmarks/segment.py --runs deeplabv3plus_resnet18 --set num_train=4000

Figures are n = 1 per run on a shared CPU; the machine line says how loaded it was.
"""
from __future__ import annotations

import argparse

from cnnkit.config import parse_sets
from cnnkit.perf.machine import machine
from detect import first_at, one  # the same run-and-time helpers as the detection benchmark

# unet_small runs its own recipe (default_cfg["recipe"]); the ResNet-18 FCN and DeepLabv3 get the same batch,
# lr and CE + Dice on 4,000 scenes: with the task's defaults (batch 32, lr 2e-3, CE) FCN stalled at mIoU 0.72.
SMALL_BACKBONE = dict(num_train=4000, batch_size=16, lr=3e-3, task_args={"loss": "ce_dice"})
RUNS = {
    "unet_small": {},
    "fcn_resnet18": SMALL_BACKBONE,
    "deeplabv3_resnet18": SMALL_BACKBONE,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", default=list(RUNS), help="models to run (default: one per family)")
    ap.add_argument("--epochs", type=int, default=None, help="override every run's epochs")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="any config key, e.g. num_train=4000")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    results = []
    for name in args.runs:
        extra = dict(RUNS.get(name, {}), **parse_sets(args.sets))
        if args.epochs:
            extra["epochs"] = args.epochs
        print(f"\n== {name} {extra or ''}", flush=True)
        r = one(name, extra, log=lambda *a: None)
        for row, t in zip(r["history"], r["times"]):
            print(f"epoch {int(row['epoch']):3d}  train {t:7.1f} s  mIoU {row['val_miou']:.3f}  "
                  f"Dice {row['val_dice']:.3f}  pixel acc {row['val_pixel_acc']:.3f}", flush=True)
        results.append(r)

    print("\n| model | epochs | wall | training | validation + rest | best mIoU | final mIoU | final Dice "
          "| to mIoU 0.80 | to mIoU 0.85 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        last = r["history"][-1]
        print(f"| {r['model']} | {len(r['history'])} | {r['wall']:.0f} s | {r['train']:.0f} s | "
              f"{r['wall'] - r['train']:.0f} s | {r['best']:.3f} | {last['val_miou']:.3f} | {last['val_dice']:.3f} | "
              f"{first_at(r['history'], 'val_miou', 0.80, r['times'])} | "
              f"{first_at(r['history'], 'val_miou', 0.85, r['times'])} |")
    print("\ntraining = the training steps (metrics.csv epoch_time); validation + rest = every epoch's "
          "evaluation, scene generation, set-up and checkpoints. n = 1 per run.")


if __name__ == "__main__":
    main()
