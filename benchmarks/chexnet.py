"""Time to mean AUROC of CheXNet (multi-label, the paper's weighted BCE) on the shapes scenes: which of
the 8 shape classes are in each 64 px picture of 1-4 objects.

Each run is `cnnkit train --model chexnet --data shapes` with the settings printed beside it.
`chexnet_small` is the same model with a smaller DenseNet-BC (growth 16, blocks 3-6-12-8, 0.6 M
parameters) through its builder arguments; `chexnet` is the paper's DenseNet-121 (7 M), which
trains about 3x slower on a CPU. Per run it prints, after every epoch, the cumulative training
time, val mean AUROC, the loss, the label accuracy and the training speed, then the time to
mean AUROC 0.95 / 0.97 and where the wall time went.

    python benchmarks/chexnet.py                                 # chexnet_small
    python benchmarks/chexnet.py --runs chexnet_small chexnet
    python benchmarks/chexnet.py --runs chexnet_small --set num_train=4000 --epochs 4

Figures are n = 1 per run on a shared CPU; the machine line says how loaded it was.
"""
from __future__ import annotations

import argparse

from cnnkit.config import parse_sets
from cnnkit.perf.machine import machine
from detect import first_at, one  # the same run-and-time helpers as the detection benchmark

SMALL = dict(growth_rate=16, block_config=[3, 6, 12, 8], num_init_features=32)
RECIPE = dict(num_train=6000, num_val=1000, epochs=8, batch_size=128, optimizer="adamw", lr=2e-3,
              weight_decay=5e-4, schedule="onecycle")
RUNS = {
    "chexnet_small": dict(RECIPE, model_args=SMALL),
    "chexnet": dict(RECIPE, num_train=3000, epochs=6),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", default=["chexnet_small"], help=f"of {', '.join(RUNS)}")
    ap.add_argument("--epochs", type=int, default=None, help="override every run's epochs")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="any config key, e.g. num_train=4000")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    results = []
    for name in args.runs:
        extra = dict(RUNS[name], **parse_sets(args.sets))
        if args.epochs:
            extra["epochs"] = args.epochs
        print(f"\n== {name} {extra}", flush=True)
        r = one("chexnet", extra, log=lambda *a: None)
        r["name"] = name
        for row, t in zip(r["history"], r["times"]):
            print(f"epoch {int(row['epoch']):3d}  train {t:7.1f} s  mean AUROC {row['val_auroc']:.4f}  "
                  f"loss {row['val_loss']:.4f}  label acc {row['val_acc']:.4f}  {row['images_per_s']:.0f} img/s",
                  flush=True)
        results.append(r)

    print("\n| run | epochs | wall | training | validation + rest | best AUROC | final AUROC | final label acc "
          "| to AUROC 0.95 | to AUROC 0.97 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        last = r["history"][-1]
        print(f"| {r['name']} | {len(r['history'])} | {r['wall']:.0f} s | {r['train']:.0f} s | "
              f"{r['wall'] - r['train']:.0f} s | {r['best']:.4f} | {last['val_auroc']:.4f} | {last['val_acc']:.4f} | "
              f"{first_at(r['history'], 'val_auroc', 0.95, r['times'])} | "
              f"{first_at(r['history'], 'val_auroc', 0.97, r['times'])} |")
    print("\ntraining = the training steps (metrics.csv epoch_time); validation + rest = every epoch's "
          "evaluation, scene generation, set-up and checkpoints. n = 1 per run.")


if __name__ == "__main__":
    main()
