"""How fast `cnnkit.data.scenes.make_scene_batch` generates detection scenes on one thread.

Generates --runs batches of --n scenes (64 px, 3 channels, 1-4 objects by default; each run a
new offset, so new scenes) after one warm-up batch, and prints each run's scenes/s, the median,
the mean objects per scene and the machine line. Generation runs on one intra-op thread
whatever torch's setting (the generator pins it); use DataLoader workers to spread it over cores.

    python benchmarks/scenes.py
    python benchmarks/scenes.py --size 128 --n 1024 --runs 3
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from cnnkit.data.scenes import make_scene_batch
from cnnkit.perf.machine import machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=4096, help="scenes per timed run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=3, choices=(1, 3))
    ap.add_argument("--max-objects", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    kw = dict(size=args.size, channels=args.channels, num_objects=(1, args.max_objects))
    make_scene_batch(256, seed=1, **kw)  # warm-up
    rates, objects = [], 0
    for r in range(args.runs):
        t0 = time.perf_counter()
        _, targets = make_scene_batch(args.n, seed=0, offset=r * args.n, **kw)
        rates.append(args.n / (time.perf_counter() - t0))
        objects += int(targets.starts[-1])
        print(f"run {r + 1}: {rates[-1]:,.0f} scenes/s")
    print(f"make_scene_batch {args.size} px, {args.channels} channels, 1-{args.max_objects} objects, "
          f"1 thread: median {statistics.median(rates):,.0f} scenes/s over {args.runs} runs of {args.n} "
          f"({objects / (args.runs * args.n):.2f} objects per scene)")
    print(machine())


if __name__ == "__main__":
    main()
