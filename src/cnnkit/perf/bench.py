"""`cnnkit bench`: how fast a model trains and infers on this machine, and where a step's time goes.

What is measured, in one process and in this order:

    peak        a square GEMM (n x n) @ (n x n) in the run's dtype (the autocast dtype, else fp32),
                n doubled until one product takes ~20 ms; the best of a few timed rounds, GFLOP/s
    train       images/s of full training steps, each on
                  synthetic  one fixed, normalised batch already on the device: model + loss +
                             backward + optimizer only, the upper bound of the loop
                  real       a data set through the loop's own data path: in-memory gather
                             (TensorLoader) or DataLoader, uint8 -> float, batch augmentation,
                             normalisation, channels_last
    split       a separate instrumented pass over the real data, synchronising the device between
                the phases: data (fetch + augment + normalise), forward (+ loss), backward
                (zero_grad + backward), optimizer (lr, step, scaler, the loop's loss/hit sums).
                The throughput passes never synchronise per step, so they are not slowed by it.
    infer       images/s of eval-mode forward passes under no_grad, on the same two sources

A step mirrors `engine.loop.fit` (same Preprocess, BatchAugment, task loss, optimizer factory,
autocast and grad scaler), so the real-data figure is what `cnnkit train` can reach with those
settings, evaluation excluded.

FLOPs come from `cnnkit.analysis.count_macs` (convolutions and matrix products only; FLOPs =
2 x MACs); a training step is counted as 3 x the forward FLOPs (backward ~ 2 x forward: one
product for the input gradient and one for the weight gradient). On a GPU fp32 convolutions may
run in TF32 while the fp32 GEMM does not, so the fraction can pass 1 there.

Figures on a shared machine are noisy: torch's OpenMP threads spin-wait for work, and two
processes sharing the cores slow each other far more than 2x. A warning is printed when the
1-minute load average exceeds the core count.
"""
from __future__ import annotations

import statistics
import time

import torch

from ..registry import CnnkitError, suggest
from ..utils import parse_input_size
from .machine import load_warning, machine, machine_info, machine_line, synchronize  # noqa: F401 - machine: API

SYNTHETIC = "synthetic"
PHASES = ("data", "forward", "backward", "optimizer")
FLOP_RULE = ("FLOPs = 2 x MACs counted by cnnkit.analysis (convolutions and matrix products); "
             "training step = 3 x forward")


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, budget_s: float = 0.5,
                max_n: int | None = None) -> dict:
    """Best measured GFLOP/s of a square matrix product in `dtype` on `device`.

    n starts at a size where BLAS libraries run near their speed (1024 on a CPU, 4096 on a GPU) and
    doubles while one product takes under ~20 ms; then rounds of products, each ~50 ms, for
    `budget_s`; the fastest round counts (the slower ones were disturbed by something else).
    """
    gpu = device.type != "cpu"
    n, max_n = (4096, max_n or 16384) if gpu else (1024, max_n or 4096)
    n = min(n, max_n)

    def once(a, b, k=1) -> float:
        synchronize(device)
        t = time.perf_counter()
        for _ in range(k):
            torch.mm(a, b)
        synchronize(device)
        return time.perf_counter() - t

    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        once(a, b)  # warm-up: library initialisation, kernel selection
        t = min(once(a, b), once(a, b))
        if t >= 0.02 or n >= max_n:
            break
        n *= 2
    k = max(1, int(0.05 / max(t, 1e-6)))
    best, end = t, time.perf_counter() + budget_s
    while time.perf_counter() < end:
        best = min(best, once(a, b, k) / k)
    return dict(gflops=2 * n ** 3 / best / 1e9, n=n, dtype=str(dtype).replace("torch.", ""))


# ----------------------------------------------------------------------------------------------
# inputs


def parse_input(text) -> tuple | int | None:
    """'CxHxW' / 'C,H,W' -> (C, H, W); 'H' -> H (square, channels from the data or model); None -> None."""
    return parse_input_size(text)


def _check_names(model: str, task: str, data: str | None) -> None:
    """Unknown names fail here, before anything is built or loaded."""
    from ..data.datasets import list_datasets
    from ..models import MODELS, _load_all
    from ..tasks import task_class

    _load_all()
    if not model.startswith(("tv:", "timm:")):
        MODELS.get(model)
    if task is not None:
        task_class(task)
    if data is not None and data != SYNTHETIC and data not in list_datasets():
        raise suggest(data, list_datasets() + [SYNTHETIC], "data set")


def _load_real(data: str | None, data_dir, in_chans, size, images: int, seed: int, log, targets: str = "label"):
    """The real data set's bundle, with about `images` training images; None for data='synthetic'.

    data=None: fashion-mnist where its files are found, else the built-in shapes.
    """
    from ..data.datasets import dataset_info, load_data

    if data == SYNTHETIC:
        return None
    names = [data] if data is not None else (["fashion-mnist", "shapes"] if targets == "label" else ["shapes"])
    for name in names:
        # a data set without an official test split (an image folder) holds out a tenth instead
        val = "test" if dataset_info(name)["test"] else "0.1"
        try:
            return load_data(name, data_dir=data_dir, val=val, in_chans=in_chans, image_size=size, seed=seed,
                             num_train=images, num_val=1, targets=targets, log=log)
        except CnnkitError as e:
            if data is not None:
                raise
            log(f"{name} not available ({str(e).split(';')[0]}); using the next data set")
    raise AssertionError("shapes is built in and always loads")


def _macs(model_name: str, task_kwargs: dict, in_chans: int, model_args: dict, size: tuple, model) -> dict:
    """Forward MACs per image in train and eval mode, counted on the meta device (no arithmetic)."""
    from ..analysis import count_macs
    from ..models import create_model

    out = {}
    try:
        with torch.device("meta"):
            m = create_model(model_name, in_chans=in_chans, **task_kwargs, **model_args)
            x = torch.empty(1, *size)
        for mode in ("train", "eval"):
            m.train(mode == "train")
            out[mode] = count_macs(m, x)
    except Exception:  # an op without a meta kernel: count on the real model, eval mode for both
        was = model.training
        model.eval()
        p = next(model.parameters())
        out["train"] = out["eval"] = count_macs(model, torch.zeros(1, *size, device=p.device))
        model.train(was)
    return out


# ----------------------------------------------------------------------------------------------
# the timed passes


def _forever(loader):
    """Batches of `loader`, epoch after epoch, as the training loop would see them."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        for batch in loader:
            yield batch
        epoch += 1


class _Step:
    """The loop's training step (`engine.step.TrainStep`) with the data phase in front, at a fixed lr."""

    def __init__(self, step: TrainStep, prep, augment, gen, lr: float):
        self.step, self.model, self.prep, self.augment, self.gen = step, step.model, prep, augment, gen
        for group in step.optimizer.param_groups:
            group["lr"] = lr

    def data(self, batch):
        x, y = batch
        x = self.prep.to_unit(x)                     # (B, C, H, W) float in [0, 1]
        if self.augment.active:
            x, y = self.augment(x, y, self.gen)
        return self.prep.normalize(x), y

    def forward(self, x, y):
        return self.step.forward(x, y)

    def backward(self, loss):
        self.step.backward(loss)

    def update(self, loss, stats, n):
        self.step.update(loss, stats, n)

    def __call__(self, x, y):
        self.step(x, y)


def _time_train(step: _Step, next_xy, steps: int, warmup: int, device) -> float:
    """Seconds per training step over `steps` steps after `warmup`; no per-step synchronisation."""
    step.model.train()
    for _ in range(warmup):
        step(*next_xy())
    synchronize(device)
    t = time.perf_counter()
    for _ in range(steps):
        step(*next_xy())
    synchronize(device)
    return (time.perf_counter() - t) / steps


def _time_split(step: _Step, batches, steps: int, device) -> dict:
    """Milliseconds of each phase (median over `steps` steps), the device synchronised between phases.

    Medians, because on a shared machine a single step is now and then several times slower.
    """
    step.model.train()
    times = {k: [] for k in PHASES}
    for _ in range(steps):
        synchronize(device)
        t0 = time.perf_counter()
        x, y = step.data(next(batches))
        synchronize(device)
        t1 = time.perf_counter()
        loss, stats = step.forward(x, y)
        synchronize(device)
        t2 = time.perf_counter()
        step.backward(loss)
        synchronize(device)
        t3 = time.perf_counter()
        step.update(loss, stats, len(x))
        synchronize(device)
        t4 = time.perf_counter()
        for k, a, b in zip(PHASES, (t0, t1, t2, t3), (t1, t2, t3, t4)):
            times[k].append(1e3 * (b - a))
    split = {k: statistics.median(v) for k, v in times.items()}
    split["total"] = sum(split.values())
    return split


@torch.no_grad()
def _time_infer(task, fwd, model, next_x, steps: int, warmup: int, device, amp_dtype) -> float:
    from ..engine.precision import autocast

    model.eval()
    with autocast(device, amp_dtype):
        for _ in range(warmup):
            task.forward_eval(fwd, next_x())
        synchronize(device)
        t = time.perf_counter()
        for _ in range(steps):
            task.forward_eval(fwd, next_x())
        synchronize(device)
    model.train()
    return (time.perf_counter() - t) / steps


# ----------------------------------------------------------------------------------------------
# bench


def run_bench(model: str = "fastnet", task: str | None = None, batch_size: int = 256, input_size=None,
              data: str | None = None, data_dir: str | None = None, device: str = "auto", amp: str = "auto",
              channels_last: bool = True, compile: bool = False, steps: int = 10, warmup: int = 3,
              augment: str | None = None, optimizer: str = "nesterov", model_args: dict | None = None,
              seed: int = 0, peak_budget_s: float = 0.5, log=None) -> dict:
    """Measure training and inference speed of `model`; see the module docstring for what and how.

    Returns a dict: settings, `machine`, `warnings`, `flops` (per image), `peak` (GEMM GFLOP/s),
    `train` / `infer` ({"synthetic": ..., "real": ...} each with images_per_s, step_ms, gflops,
    peak_fraction), `split` (ms per phase of a training step on the real data, and their total)
    and `peak_fraction` (the real-data training step's share of the GEMM peak).
    """
    from ..config import CHOICES
    from ..data.loader import Preprocess, TensorLoader, epoch_generator, make_loader, norm_stats
    from ..engine.optim import build_optimizer
    from ..engine.precision import grad_scaler, resolve_amp, resolve_device
    from ..engine.step import TrainStep
    from ..models import create_model
    from ..tasks import create_task, model_cfg, task_class

    log = log or (lambda *a, **k: None)
    model_args = dict(model_args or {})
    _check_names(model, task, data)
    for key, v, low in (("batch", batch_size, 1), ("steps", steps, 1), ("warmup", warmup, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise CnnkitError(f"--{key} must be a whole number >= {low}, got {v!r}")
    if amp not in CHOICES["amp"]:
        raise suggest(str(amp), CHOICES["amp"], "amp mode")
    size = parse_input(input_size)
    dev = resolve_device(device)
    amp_dtype = resolve_amp(amp, dev)
    info = machine_info(dev)
    warnings = [w for w in (load_warning(info),) if w]
    torch.manual_seed(seed)

    # -- the real data (decides channels, size and classes unless --input says otherwise)
    in_chans = size[0] if isinstance(size, tuple) else None
    side = size if isinstance(size, int) else (size[1] if isinstance(size, tuple) else None)
    if isinstance(size, tuple) and size[1] != size[2] and data != SYNTHETIC:
        raise CnnkitError(f"data sets are resized to squares; --input {size[1]}x{size[2]} needs --data synthetic")
    split_steps = max(3, steps // 2)
    mcfg = model_cfg(model, in_chans=in_chans, **model_args)
    task_cls = task_class(task or mcfg.get("task") or "classify")
    task = task_cls.name
    if augment is None:  # the task's own training augmentation (classification: train's default)
        augment = getattr(task_cls, "defaults", {}).get("augment", "crop=2,hflip=0.5")
    bundle = _load_real(data, data_dir, in_chans, side, batch_size * (warmup + steps), seed, log,
                        task_cls.target_kind)
    if bundle is not None:
        in_chans, classes = bundle.in_chans, bundle.classes
        shape = (bundle.in_chans, bundle.image_size, bundle.image_size)
    else:
        c, h, w = mcfg.get("input_size", (3, 224, 224))
        classes = [str(i) for i in range(mcfg.get("num_classes") or 1000)]
        shape = size if isinstance(size, tuple) else (c, side or h, side or w)
        in_chans = shape[0]
    num_classes = len(classes)

    # -- model, task, optimiser and the loop's own training step, as engine.loop.fit builds them
    task_obj = create_task(task, classes, mcfg, label_smoothing=0.1)
    net = create_model(model, in_chans=in_chans, **task_obj.model_kwargs(shape[1]), **model_args).to(dev)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    fwd = torch.compile(net) if compile else net
    lr = 1e-3  # speed does not depend on it; small, so random data cannot drive the weights to inf
    opt = build_optimizer(optimizer, net, lr, 5e-4)
    mean, std = (norm_stats("dataset", bundle.mean, bundle.std, in_chans) if bundle is not None
                 else ((0.5,) * in_chans, (0.25,) * in_chans))
    prep = Preprocess(mean, std, dev, channels_last)
    augment_mod = task_obj.batch_augment(augment).to(dev)
    train_step = TrainStep(net, fwd, task_obj, opt, grad_scaler(dev, amp_dtype), dev, amp_dtype)
    step = _Step(train_step, prep, augment_mod, epoch_generator(seed + 1, 0, dev), lr)
    amp_name = str(amp_dtype).replace("torch.", "") if amp_dtype is not None else "fp32"

    res = dict(model=model, task=task, batch_size=batch_size, input_size=list(shape), num_classes=num_classes,
               data=bundle.name if bundle is not None else None, device=str(dev), amp=amp_name,
               channels_last=channels_last, compile=compile, augment=augment, optimizer=optimizer, steps=steps,
               warmup=warmup, machine=info, warnings=warnings)

    # -- FLOPs per image and the machine's GEMM peak in the run's dtype
    log("counting FLOPs ...")
    macs = _macs(model, task_obj.model_kwargs(shape[1]), in_chans, model_args, shape, net)
    flops = dict(forward_macs=macs["train"], forward_flops=2 * macs["train"], train_flops=6 * macs["train"],
                 infer_flops=2 * macs["eval"], rule=FLOP_RULE)
    res["flops"] = flops
    log(f"timing the {amp_name} matrix-product peak ...")
    peak = matmul_peak(dev, amp_dtype or torch.float32, budget_s=peak_budget_s)
    res["peak"] = peak

    def figures(sec_per_step: float, flops_per_image: int) -> dict:
        ips = batch_size / sec_per_step
        gf = flops_per_image * ips / 1e9
        return dict(images_per_s=ips, step_ms=1e3 * sec_per_step, gflops=gf, peak_fraction=gf / peak["gflops"])

    # -- sources of batches: a fixed synthetic batch, and the real data through the loop's loader
    gx = torch.Generator(device="cpu").manual_seed(seed)
    syn_u8 = torch.randint(0, 256, (2 * batch_size, *shape), generator=gx, dtype=torch.uint8)
    syn_t = task_obj.synthetic_targets(2 * batch_size, shape[1:], gx)
    syn_x, syn_y = prep(syn_u8[:batch_size].to(dev)), syn_t[:batch_size].to(dev)
    sources = {SYNTHETIC: None}
    if bundle is not None:
        train_loader = make_loader(bundle.train, batch_size, True, True, dev, seed)
        if len(train_loader) == 0:
            raise CnnkitError(f"--batch {batch_size} is larger than the {len(bundle.train)} images of "
                              f"{bundle.name}; use a smaller batch")
        sources["real"] = train_loader

    res["train"], res["infer"] = {}, {}
    for kind, loader in sources.items():
        label = bundle.name if kind == "real" else kind
        log(f"timing training steps on {label} data ...")
        if loader is None:
            sec = _time_train(step, lambda: (syn_x, syn_y), steps, warmup, dev)
        else:
            batches = _forever(loader)
            sec = _time_train(step, lambda: step.data(next(batches)), steps, warmup, dev)
        res["train"][kind] = figures(sec, flops["train_flops"])

    # -- the phases, on the real data (or synthetic uint8 images through the same loader)
    log("timing the phases of a training step ...")
    split_loader = sources.get("real") or TensorLoader(syn_u8, syn_t, batch_size, True, True, dev, seed)
    res["split"] = dict(_time_split(step, _forever(split_loader), split_steps, dev), steps=split_steps,
                        source=bundle.name if bundle is not None else SYNTHETIC)

    for kind, loader in sources.items():
        label = bundle.name if kind == "real" else kind
        log(f"timing inference on {label} data ...")
        if loader is None:
            sec = _time_infer(task_obj, fwd, net, lambda: syn_x, steps, warmup, dev, amp_dtype)
        else:
            batches = _forever(loader)  # the order does not matter here
            sec = _time_infer(task_obj, fwd, net, lambda: prep(next(batches)[0]), steps, warmup, dev, amp_dtype)
        res["infer"][kind] = figures(sec, flops["infer_flops"])
    main = res["train"].get("real", res["train"][SYNTHETIC])
    res["peak_fraction"] = main["peak_fraction"]
    return res


# ----------------------------------------------------------------------------------------------
# the report


def render(res: dict) -> list:
    """Rich renderables for `res`: the machine, the throughput table, the FLOP basis, the split."""
    from rich.table import Table
    from rich.text import Text

    out = [Text(f"machine: {machine_line(res['machine'])}")]
    out += [Text(w, style="yellow") for w in res["warnings"]]
    c, h, w = res["input_size"]
    setting = (f"{res['model']} ({res['task']}), batch {res['batch_size']}, input {c}x{h}x{w}, {res['device']} "
               f"{res['amp']}, {'channels_last' if res['channels_last'] else 'contiguous'}"
               f"{', compiled' if res['compile'] else ''}, augment {res['augment']}, optimizer {res['optimizer']}; "
               f"{res['steps']} timed steps after {res['warmup']} warm-up")
    peak = res["peak"]
    out.append(Text(setting))
    table = Table("pass", "data", "images/s", "ms/step", "GFLOP/s", "of peak")
    for what, key in (("training", "train"), ("inference", "infer")):
        for kind, fig in res[key].items():
            data = res["data"] if kind == "real" else "synthetic (fixed batch)"
            table.add_row(what, data, f"{fig['images_per_s']:,.0f}", f"{fig['step_ms']:.1f}", f"{fig['gflops']:.1f}",
                          f"{fig['peak_fraction']:.1%}")
    out.append(table)
    f = res["flops"]
    out.append(Text(f"peak: {peak['n']}x{peak['n']} {peak['dtype']} matrix product, {peak['gflops']:.1f} GFLOP/s "
                    f"(measured in this run). Per image: forward {f['forward_flops'] / 1e6:,.1f} MFLOPs, "
                    f"training {f['train_flops'] / 1e6:,.1f} MFLOPs. {f['rule']}."))
    sp = res["split"]
    out.append(Text(f"time split of a training step ({sp['source']}; median of {sp['steps']} steps, the device "
                    f"synchronised between phases):"))
    split = Table("phase", "ms/step", "share")
    what = dict(data="fetch + augment + normalise", forward="forward + loss", backward="zero_grad + backward",
                optimizer="lr, step, loss/accuracy sums")
    for k in PHASES:
        split.add_row(f"{k} ({what[k]})", f"{sp[k]:.1f}", f"{sp[k] / sp['total']:.0%}")
    split.add_row("total", f"{sp['total']:.1f}", "100%")
    ref = res["train"].get("real", res["train"][SYNTHETIC])
    split.add_row("throughput pass, unsynchronised", f"{ref['step_ms']:.1f}", "")
    out.append(split)
    return out
