"""The model zoo in numbers: parameters, MACs/FLOPs at each model's native input, inference speed.

For every registered model (or those matching --pattern): parameters, MACs and FLOPs at its
default_cfg input size (counted on the meta device by cnnkit.analysis), and inference
images/s on this machine (batch --batch, median of --runs timed runs after one warm-up).

With --gpu-accuracy (needs a CUDA GPU and Fashion-MNIST): trains each model --epochs epochs on
Fashion-MNIST at 32 px (small-input stems) and prints test accuracy and time, one row per model.

    python benchmarks/zoo.py                          # CPU table, all models (a few minutes)
    python benchmarks/zoo.py --pattern "resnet*" --runs 5
    python benchmarks/zoo.py --gpu-accuracy --epochs 5 --pattern "resnet*"
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import cnnkit
from cnnkit.analysis import summary
from cnnkit.perf.machine import machine



def native_input(name: str) -> tuple:
    with torch.device("meta"):
        return tuple(cnnkit.create_model(name).default_cfg["input_size"])


@torch.no_grad()
def images_per_s(model, size, batch: int, runs: int, device) -> float:
    x = torch.randn(batch, *size, device=device)
    model(x)  # warm-up
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def cpu_table(names, batch: int, runs: int) -> None:
    dev = torch.device("cpu")
    print(f"{'model':<22}{'input':>12}{'params':>14}{'GMACs':>9}{'GFLOPs':>9}{'img/s':>10}")
    for name in names:
        size = native_input(name)
        with torch.device("meta"):
            s = summary(cnnkit.create_model(name).eval(), size, device="meta")
        model = cnnkit.create_model(name).eval()
        ips = images_per_s(model, size, batch, runs, dev)
        print(f"{name:<22}{'x'.join(map(str, size)):>12}{s.total_params:>14,}{s.total_macs / 1e9:>9.3f}"
              f"{s.total_flops / 1e9:>9.3f}{ips:>10.1f}", flush=True)


def gpu_accuracy(names, epochs: int) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--gpu-accuracy needs a CUDA GPU")
    print(f"{'model':<22}{'epochs':>7}{'test acc':>10}{'train s':>9}")
    for name in names:
        size = native_input(name)
        args = {"small_input": True} if size[-1] > 32 else {}
        with tempfile.TemporaryDirectory() as tmp:
            res = cnnkit.train(model=name, data="fashion-mnist", image_size=32, epochs=epochs, model_args=args,
                               project=tmp, quiet=True, device="cuda", log=lambda *a, **k: None)
        t = sum(float(r["epoch_time"]) for r in res.history)
        print(f"{name:<22}{epochs:>7}{res.best_metric:>10.2%}{t:>9.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pattern", default="*")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--gpu-accuracy", action="store_true")
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    names = cnnkit.list_models(args.pattern)
    print(f"machine: {machine()}")
    if args.gpu_accuracy:
        gpu_accuracy(names, args.epochs)
    else:
        print(f"inference: batch {args.batch}, median of {args.runs} runs after a warm-up, fp32, eval mode\n")
        cpu_table(names, args.batch, args.runs)


if __name__ == "__main__":
    main()
