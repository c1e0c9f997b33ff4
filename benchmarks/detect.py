"""Time to mAP of the four detector families on the built-in shapes scenes (64 px, 1-4 objects).

Each run is `cnnkit train --model M --data shapes` with the family's own recipe (the detect task's
defaults, then the model's `default_cfg["recipe"]`), plus the settings printed beside it. Per run
it prints, after every epoch, the cumulative training time, val mAP, mAP50 (and mask mAP50 for
Mask R-CNN), then the time to mAP50 0.85 / 0.90 and where the wall time went: training steps,
validation (forward + COCO evaluation), and the rest (scene generation, model set-up, checkpoints).

    python benchmarks/detect.py                          # yolo_n, ssdlite, faster and mask R-CNN
    python benchmarks/detect.py --runs yolo_n --epochs 20
    python benchmarks/detect.py --runs maskrcnn_resnet18_fpn --set num_train=4000

Figures are n = 1 per run on a shared CPU; the machine line says how loaded it was.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import cnnkit
from cnnkit.config import parse_sets
from cnnkit.perf.machine import machine

# the R-CNNs train at 40 (Faster) and 21 (Mask) img/s on 2 CPU cores, a tenth of yolo_n's 650:
# they get fewer scenes so that each run stays within about a quarter of an hour. SSD runs as SSDlite:
# SSD300's VGG-16 trains at 19 img/s (8x slower than SSDlite's 150) and would need hours here.
RUNS = {
    "yolo_n": {},
    "ssdlite320_mobilenet_v3_large": dict(epochs=4),
    "fasterrcnn_resnet18_fpn": dict(num_train=4000, epochs=6),
    "maskrcnn_resnet18_fpn": dict(num_train=3000, epochs=4),
}


def first_at(history: list[dict], key: str, level: float, times: list[float]) -> str:
    for row, t in zip(history, times):
        if row.get(key, 0.0) >= level:
            return f"{t:.0f} s (epoch {int(row['epoch'])})"
    return "-"


def one(model: str, extra: dict, log) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = cnnkit.train(model=model, data="shapes", project=tmp, quiet=True, report=False, log=log, **extra)
        wall = time.perf_counter() - t0
    h = res.history
    train = [float(r["epoch_time"]) for r in h]
    times = [sum(train[:i + 1]) for i in range(len(train))]
    return dict(model=model, history=h, times=times, wall=wall, train=sum(train), best=res.best_metric,
                settings=extra)


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
            mask = f"  mask mAP50 {row['val_mask_map50']:.3f}" if "val_mask_map50" in row else ""
            print(f"epoch {int(row['epoch']):3d}  train {t:7.1f} s  mAP {row['val_map']:.3f}  "
                  f"mAP50 {row['val_map50']:.3f}{mask}", flush=True)
        results.append(r)

    print("\n| model | epochs | wall | training | validation + rest | best mAP | final mAP50 | final mAP "
          "| mask mAP50 | to mAP50 0.85 | to mAP50 0.90 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        last = r["history"][-1]
        mask = f"{last['val_mask_map50']:.3f}" if "val_mask_map50" in last else "-"
        print(f"| {r['model']} | {len(r['history'])} | {r['wall']:.0f} s | {r['train']:.0f} s | "
              f"{r['wall'] - r['train']:.0f} s | {r['best']:.3f} | {last['val_map50']:.3f} | {last['val_map']:.3f} | "
              f"{mask} | {first_at(r['history'], 'val_map50', 0.85, r['times'])} | "
              f"{first_at(r['history'], 'val_map50', 0.90, r['times'])} |")
    print("\ntraining = the training steps (metrics.csv epoch_time); validation + rest = every epoch's "
          "evaluation, scene generation, set-up and checkpoints. n = 1 per run.")


if __name__ == "__main__":
    main()
