"""Time to foreground Dice of nnU-Net's self-configuration on the built-in shapes-volumes: `cnnkit plan`,
then `cnnkit train --plan`.

The plan is made by the rules from the data's fingerprint (`--budget` MB of activation memory: a
CPU's by default); the run trains it with the volume task's defaults (SGD with Nesterov momentum
0.99, lr 0.01, poly decay, Dice + CE with deep supervision, the plan's augmentation), validating
each epoch by a Gaussian-weighted sliding window over the held-out cases, scored on their
original grids. It prints the plan's main decisions, then per epoch the cumulative training time,
val foreground Dice and per-case Dice, then the time to Dice 0.80 / 0.85 and where the wall time
went.

    python benchmarks/plan.py                               # 60 cases, the default budget
    python benchmarks/plan.py --budget 150 --epochs 12 --set task_args='{patches_per_epoch: 160}'

Figures are n = 1 on a shared CPU; the machine line says how loaded it was.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cnnkit
from cnnkit.api import plan as make_plan
from cnnkit.config import parse_sets
from cnnkit.perf.machine import machine
from detect import first_at  # the same helper as the detection benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=60, help="shapes-volumes cases to generate (20%% validate)")
    ap.add_argument("--budget", type=float, default=None, help="the planner's memory budget in MB")
    ap.add_argument("--epochs", type=int, default=None, help="epochs (default: the volume task's)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="any config key, e.g. lr=0.02")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        p = make_plan("shapes-volumes", out=str(Path(tmp) / "plan.yaml"), budget=args.budget, num_cases=args.cases)
        t_plan = time.perf_counter() - t0
        print(f"plan ({t_plan:.1f} s): {p.dims}-D, spacing {p.target_spacing}, patch {p.patch_size}, batch "
              f"{p.batch_size}, strides {p.strides}, features {p.features}, ~{p.memory_mb:g} MB of activations")
        extra = parse_sets(args.sets)
        if args.epochs:
            extra["epochs"] = args.epochs
        print(f"training with {extra or 'the defaults'}", flush=True)
        t1 = time.perf_counter()
        res = cnnkit.train(plan=str(Path(tmp) / "plan.yaml"), project=tmp, quiet=True, report=False,
                           log=lambda *a: None, **extra)
        wall = time.perf_counter() - t1
    h = res.history
    train = [float(r["epoch_time"]) for r in h]
    times = [sum(train[:i + 1]) for i in range(len(train))]
    for row, t in zip(h, times):
        print(f"epoch {int(row['epoch']):3d}  train {t:7.1f} s  Dice {row['val_dice']:.3f}  per-case Dice "
              f"{row['val_case_dice']:.3f}  loss {row['train_loss']:.3f}", flush=True)
    print("\n| data | patch | batch | epochs | plan | wall | training | validation + rest | best Dice | final Dice "
          "| to Dice 0.80 | to Dice 0.85 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| shapes-volumes ({args.cases} cases) | {'x'.join(map(str, p.patch_size))} | {p.batch_size} | "
          f"{len(h)} | "
          f"{t_plan:.0f} s | {wall:.0f} s | {sum(train):.0f} s | {wall - sum(train):.0f} s | {res.best_metric:.3f} | "
          f"{h[-1]['val_dice']:.3f} | {first_at(h, 'val_dice', 0.80, times)} | {first_at(h, 'val_dice', 0.85, times)} |")
    print("\ntraining = the training steps (metrics.csv epoch_time, cumulative in the times above); validation + "
          "rest = the sliding-window validation, preprocessing, set-up and checkpoints. n = 1.")


if __name__ == "__main__":
    main()
