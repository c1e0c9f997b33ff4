"""cnnkit's training loop vs the simplest fast PyTorch loop: same model, data, optimizer and arithmetic.

  cnnkit  `cnnkit.train(...)`, i.e. engine.fit, with augment none and tta off (its images/s per
          epoch come from metrics.csv: the training steps only, evaluation excluded)
  bare    the loop below: the uint8 images on the device, a permutation per epoch, then per batch
          index, normalise, forward, loss, backward, step; nothing else

Both build the model with `cnnkit.create_model` under the same seed, use the same batch, the
same optimizer (cnnkit's factory: nesterov SGD, weight decay on conv/linear weights, foreach),
a constant learning rate, label smoothing 0.1, the same autocast dtype and channels_last.
Runs alternate A B B A A B ... (--runs pairs), so that a drift of a shared machine hits both sides;
epoch 1 of every run is warm-up and is left out: images/s = images / seconds over epochs 2..E.
Printed: each run, the median of each side, the median of the per-pair ratios (target >= 0.97),
the machine and n.

On a machine shared with other jobs wall-clock figures swing by 10-30 % from run to run;
`--clock cpu` times both sides in process CPU seconds instead (fit's epoch timer is pointed at
`time.process_time` for the run), which other jobs barely disturb. Use it with one thread
(OMP_NUM_THREADS=1), since spinning OpenMP threads burn CPU time too.

Measured (2-core AMD EPYC with avx512_bf16 shared with other jobs at load 6-12, torch 2.14, fastnet,
Fashion-MNIST 6,144 images, batch 256, bf16, channels_last): wall-clock ratios swung between
experiments (median pair ratio 0.94, 1.11, 1.22; n = 3-4 pairs each) with the load; CPU-clock,
one thread: 0.95 and 1.03 (n = 3 each); per step, timed at each batch hand-out, one thread:
min 185.2 ms cnnkit vs 186.9 ms bare, median 206 vs 202 ms (96 steps each). The loop's extra
work per step (uint8 -> [0, 1] pass, loss/hit sums, lr) measured alone is ~50 us.

    python benchmarks/loop_vs_bare.py                                 # fashion-mnist (else shapes), 2 epochs, 3 pairs
    python benchmarks/loop_vs_bare.py --num-train 8192 --runs 5
    OMP_WAIT_POLICY=passive python benchmarks/loop_vs_bare.py         # on a machine shared with other jobs
    OMP_NUM_THREADS=1 python benchmarks/loop_vs_bare.py --clock cpu   # the loops' own cost, load or not
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import types

import torch
import torch.nn.functional as F

import cnnkit
from cnnkit.config import FIELD_NAMES, TrainConfig
from cnnkit.data.datasets import load_data
from cnnkit.data.loader import norm_stats
from cnnkit.perf.machine import load_warning, machine_info, machine_line, synchronize
from cnnkit.engine.optim import build_optimizer
from cnnkit.engine.precision import autocast, grad_scaler, resolve_amp, resolve_device


def pick_data(name: str | None) -> str:
    if name:
        return name
    try:
        load_data("fashion-mnist", num_train=1, num_val=1)
        return "fashion-mnist"
    except cnnkit.CnnkitError:
        return "shapes"


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
NO_REPORT = {"report": False} if "report" in FIELD_NAMES else {}  # report.html after training: not timed, slow


@contextlib.contextmanager
def fit_clock(name: str):
    """Point engine.loop's epoch timer at `name`'s clock for the duration (`wall`: unchanged)."""
    import cnnkit.engine.loop as loop

    saved = loop.time
    if name != "wall":
        loop.time = types.SimpleNamespace(perf_counter=CLOCKS[name])
    try:
        yield
    finally:
        loop.time = saved


def cnnkit_run(a, project: str) -> list[tuple[int, float]]:
    """(images, seconds) of each epoch of one `cnnkit.train` run, as its metrics.csv records them."""
    with fit_clock(a.clock):
            res = cnnkit.train(model=a.model, data=a.data, num_train=a.num_train, num_val=a.num_val, epochs=a.epochs,
                           batch_size=a.batch, optimizer=a.optimizer, lr=a.lr, schedule="none", augment="none",
                           tta=False, ema=0.0, label_smoothing=0.1, device=a.device, amp=a.amp,
                           channels_last=a.channels_last, seed=0, project=project, quiet=True,
                           log=lambda *x, **k: None, **NO_REPORT)
    return [(round(float(r["images_per_s"]) * float(r["epoch_time"])), float(r["epoch_time"])) for r in res.history]


def bare_run(a, bundle) -> list[tuple[int, float]]:
    """The simplest fast loop, timed per epoch like engine.fit times its epochs (training steps only)."""
    device = resolve_device(a.device)
    amp_dtype = resolve_amp(a.amp, device)
    torch.manual_seed(0)
    model = cnnkit.create_model(a.model, num_classes=len(bundle.classes), in_chans=bundle.in_chans).to(device)
    memory_format = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = build_optimizer(a.optimizer, model, a.lr, TrainConfig.weight_decay, TrainConfig.momentum)
    scaler = grad_scaler(device, amp_dtype)
    images = bundle.train.images.to(device)            # (N, C, H, W) uint8, on the device once
    labels = bundle.train.targets.to(device)
    m, s = norm_stats("dataset", bundle.mean, bundle.std, bundle.in_chans)
    mean = torch.tensor(m, device=device).view(1, -1, 1, 1) * 255
    inv_std = 1 / (torch.tensor(s, device=device).view(1, -1, 1, 1) * 255)
    n, b = len(labels), a.batch
    clock = CLOCKS[a.clock]
    out = []
    model.train()
    for epoch in range(a.epochs):
        t0 = clock()
        perm = torch.randperm(n, device=device)
        for i in range(n // b):                         # drop_last, as cnnkit's training loader
            j = perm[i * b:(i + 1) * b]
            x = ((images[j].float() - mean) * inv_std).contiguous(memory_format=memory_format)
            with autocast(device, amp_dtype):
                loss = F.cross_entropy(model(x), labels[j], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        synchronize(device)
        out.append((n // b * b, clock() - t0))
    return out


def images_per_s(epochs: list[tuple[int, float]]) -> float:
    """Throughput after the warm-up epoch: images / seconds over epochs 2.. (all epochs if only one)."""
    rest = epochs[1:] or epochs
    return sum(n for n, _ in rest) / sum(t for _, t in rest)


def main() -> None:
    d = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=d.model)
    ap.add_argument("--data", default=None, help="default: fashion-mnist if found, else shapes")
    ap.add_argument("--num-train", type=int, default=None, help="training images (default: the whole set)")
    ap.add_argument("--num-val", type=int, default=512, help="cnnkit's per-epoch evaluation (not timed)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="pairs of runs, interleaved cnnkit bare, bare cnnkit, ...")
    ap.add_argument("--batch", type=int, default=d.batch_size)
    ap.add_argument("--optimizer", default=d.optimizer)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--device", default=d.device)
    ap.add_argument("--amp", default=d.amp)
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=d.channels_last)
    ap.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                    help="wall seconds, or process CPU seconds (steady on a shared machine; use one thread)")
    a = ap.parse_args()
    a.data = pick_data(a.data)

    device = resolve_device(a.device)
    amp_dtype = resolve_amp(a.amp, device)
    info = machine_info(device)
    print(f"machine: {machine_line(info)}")
    if load_warning(info):
        print(load_warning(info))
    bundle = load_data(a.data, num_train=a.num_train, num_val=a.num_val)
    print(f"{a.model} on {a.data} ({len(bundle.train):,} training images, "
          f"{bundle.in_chans}x{bundle.image_size}x{bundle.image_size}), batch {a.batch}, {a.optimizer} lr {a.lr}, "
          f"{device.type} {str(amp_dtype).replace('torch.', '') if amp_dtype else 'fp32'}, "
          f"{'channels_last' if a.channels_last else 'contiguous'}; {a.epochs} epochs per run, epoch 1 left out; "
          f"{a.runs} interleaved pairs; {a.clock} clock\n")

    ips = {"cnnkit": [], "bare": []}
    unit = "img/s" if a.clock == "wall" else "img per CPU-s"
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.runs):
            for side in ("cnnkit", "bare") if r % 2 == 0 else ("bare", "cnnkit"):
                epochs = cnnkit_run(a, tmp) if side == "cnnkit" else bare_run(a, bundle)
                ips[side].append(images_per_s(epochs))
                per_epoch = "  ".join(f"{n / t:,.0f}" for n, t in epochs)
                print(f"run {r + 1} {side:<7} {ips[side][-1]:>9,.0f} {unit}   (per epoch: {per_epoch})", flush=True)
    ratios = [c / b for c, b in zip(ips["cnnkit"], ips["bare"])]
    med = {k: statistics.median(v) for k, v in ips.items()}
    print(f"\nn = {a.runs} pairs; medians: cnnkit {med['cnnkit']:,.0f} {unit}, bare {med['bare']:,.0f} {unit}")
    print(f"cnnkit / bare: median of pair ratios {statistics.median(ratios):.3f}x "
          f"(pairs: {', '.join(f'{x:.3f}' for x in ratios)}); target >= 0.97x")


if __name__ == "__main__":
    main()
