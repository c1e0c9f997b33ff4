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

import os
import platform
import statistics
import time

import torch

from ..registry import CnnkitError, suggest

SYNTHETIC = "synthetic"
PHASES = ("data", "forward", "backward", "optimizer")
FLOP_RULE = ("FLOPs = 2 x MACs counted by cnnkit.analysis (convolutions and matrix products); "
             "training step = 3 x forward")


# ----------------------------------------------------------------------------------------------
# machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str = "cpu") -> dict:
    """What a figure depends on: CPU, cores, threads, load, versions, accelerator."""
    device = torch.device(device)
    cores = os.cpu_count() or 1
    info = dict(cpu=cpu_model(), cores=cores, torch=torch.__version__, python=platform.python_version(),
                threads=torch.get_num_threads(), device=device.type, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"))
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        info["usable_cores"] = cores
    try:
        info["load_avg_1min"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        info["load_avg_1min"] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def machine_line(info: dict) -> str:
    gpu = f", {info['gpu']} (CUDA {info['cuda']})" if "gpu" in info else ""
    omp = f", OMP_WAIT_POLICY={info['omp_wait_policy']}" if info.get("omp_wait_policy") else ""
    return (f"{info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), torch {info['torch']} "
            f"with {info['threads']} threads{omp}, python {info['python']}, device {info['device']}{gpu}, "
            f"load average {info['load_avg_1min']}")


def machine(device: torch.device | str | None = None) -> str:
    """`machine_line` of this process's machine (the first GPU when there is one): what every benchmark prints."""
    return machine_line(machine_info(device or ("cuda" if torch.cuda.is_available() else "cpu")))


def load_warning(info: dict) -> str | None:
    """A line when other processes hold the cores: the figures will be low and noisy.

    Why OMP_WAIT_POLICY: torch's OpenMP threads busy-wait between parallel regions; when more
    threads than free cores exist, a spinning thread holds the core that the thread it waits for
    needs. On a 2-core machine at load 9 a fastnet step took 6.5 s with the default policy,
    0.35 s with OMP_WAIT_POLICY=passive and 0.28 s with one thread.
    """
    load = info.get("load_avg_1min")
    if load is None or load <= info["cores"]:
        return None
    line = (f"warning: the 1-minute load average ({load:.1f}) exceeds the {info['cores']} cores: other processes "
            f"compete for the CPU, so these figures are low and noisy.")
    if str(info.get("omp_wait_policy") or "").lower() != "passive":
        line += (" torch's OpenMP threads spin while they wait for a core, which can slow a step many times over; "
                 "start Python with OMP_WAIT_POLICY=passive (or fewer threads: OMP_NUM_THREADS=1).")
    return line


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work: timings of a GPU are otherwise only launch times."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


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
    """'C,H,W' / 'CxHxW' -> (C, H, W); 'H' -> H (square, channels from the data or model); None -> None."""
    if text is None or isinstance(text, (tuple, list, int)):
        dims = text if not isinstance(text, list) else tuple(text)
    else:
        try:
            dims = tuple(int(v) for v in str(text).lower().replace("x", ",").split(","))
        except ValueError:
            dims = ()
        dims = dims[0] if len(dims) == 1 else dims
    if dims is None:
        return None
    parts = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(parts) not in (1, 3) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in parts):
        raise CnnkitError(f"--input expects C,H,W such as 3,32,32 (or one size such as 32), got {text!r}")
    return parts[0] if len(parts) == 1 else parts


def _check_names(model: str, task: str, data: str | None) -> None:
    """Unknown names fail here, before anything is built or loaded."""
    from ..data.datasets import list_datasets
    from ..models import MODELS, _load_all
    from ..registry import TASKS

    _load_all()
    if not model.startswith(("tv:", "timm:")):
        MODELS.get(model)
    TASKS.get(task)
    if data is not None and data != SYNTHETIC and data not in list_datasets():
        raise suggest(data, list_datasets() + [SYNTHETIC], "data set")


def _load_real(data: str | None, data_dir, in_chans, size, images: int, seed: int, log):
    """The real data set's bundle, with about `images` training images; None for data='synthetic'.

    data=None: fashion-mnist where its files are found, else the built-in shapes.
    """
    from ..data.datasets import dataset_info, load_data

    if data == SYNTHETIC:
        return None
    names = [data] if data is not None else ["fashion-mnist", "shapes"]
    for name in names:
        # a data set without an official test split (an image folder) holds out a tenth instead
        val = "test" if dataset_info(name)["test"] else "0.1"
        try:
            return load_data(name, data_dir=data_dir, val=val, in_chans=in_chans, image_size=size, seed=seed,
                             num_train=images, num_val=1)
        except CnnkitError as e:
            if data is not None:
                raise
            log(f"{name} not available ({str(e).split(';')[0]}); using the next data set")
    raise AssertionError("shapes is built in and always loads")


def _macs(model_name: str, num_classes: int, in_chans: int, model_args: dict, size: tuple, model) -> dict:
    """Forward MACs per image in train and eval mode, counted on the meta device (no arithmetic)."""
    from ..analysis import count_macs
    from ..models import create_model

    out = {}
    try:
        with torch.device("meta"):
            m = create_model(model_name, num_classes=num_classes, in_chans=in_chans, **model_args)
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
    """One training step of `engine.loop.fit` in one process, cut into its four phases."""

    def __init__(self, model, fwd, task, optimizer, scaler, prep, augment, gen, device, amp_dtype, lr):
        self.model, self.fwd, self.task, self.optimizer, self.scaler = model, fwd, task, optimizer, scaler
        self.prep, self.augment, self.gen, self.device, self.amp_dtype, self.lr = (
            prep, augment, gen, device, amp_dtype, lr)
        self.loss_sum = torch.zeros((), device=device)
        self.hits = torch.zeros((), device=device, dtype=torch.long)

    def data(self, batch):
        x, y = batch
        x = self.prep.to_unit(x)                     # (B, C, H, W) float in [0, 1]
        if self.augment.active:
            x, y = self.augment(x, y, self.gen)
        return self.prep.normalize(x), y

    def forward(self, x, y):
        from .precision import autocast

        with autocast(self.device, self.amp_dtype):
            out = self.fwd(x)
            loss = self.task.loss(out, y)
        return out, loss

    def backward(self, loss):
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()

    def update(self, out, loss, y):
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.loss_sum += loss.detach().float() * len(y)
        self.hits += self.task.correct(self.task.logits(out).detach(), y)

    def __call__(self, x, y):
        out, loss = self.forward(x, y)
        self.backward(loss)
        self.update(out, loss, y)


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
        out, loss = step.forward(x, y)
        synchronize(device)
        t2 = time.perf_counter()
        step.backward(loss)
        synchronize(device)
        t3 = time.perf_counter()
        step.update(out, loss, y)
        synchronize(device)
        t4 = time.perf_counter()
        for k, a, b in zip(PHASES, (t0, t1, t2, t3), (t1, t2, t3, t4)):
            times[k].append(1e3 * (b - a))
    split = {k: statistics.median(v) for k, v in times.items()}
    split["total"] = sum(split.values())
    return split


@torch.no_grad()
def _time_infer(fwd, model, next_x, steps: int, warmup: int, device, amp_dtype) -> float:
    from .precision import autocast

    model.eval()
    with autocast(device, amp_dtype):
        for _ in range(warmup):
            fwd(next_x())
        synchronize(device)
        t = time.perf_counter()
        for _ in range(steps):
            fwd(next_x())
        synchronize(device)
    model.train()
    return (time.perf_counter() - t) / steps


# ----------------------------------------------------------------------------------------------
# bench


def run_bench(model: str = "fastnet", task: str = "classify", batch_size: int = 256, input_size=None,
              data: str | None = None, data_dir: str | None = None, device: str = "auto", amp: str = "auto",
              channels_last: bool = True, compile: bool = False, steps: int = 10, warmup: int = 3,
              augment: str = "crop=2,hflip=0.5", optimizer: str = "nesterov", model_args: dict | None = None,
              seed: int = 0, peak_budget_s: float = 0.5, log=None) -> dict:
    """Measure training and inference speed of `model`; see the module docstring for what and how.

    Returns a dict: settings, `machine`, `warnings`, `flops` (per image), `peak` (GEMM GFLOP/s),
    `train` / `infer` ({"synthetic": ..., "real": ...} each with images_per_s, step_ms, gflops,
    peak_fraction), `split` (ms per phase of a training step on the real data, and their total)
    and `peak_fraction` (the real-data training step's share of the GEMM peak).
    """
    from ..config import CHOICES
    from ..data.augment import BatchAugment, parse_augment
    from ..data.loader import Preprocess, TensorLoader, epoch_generator, make_loader, norm_stats
    from ..models import create_model
    from ..tasks import create_task
    from .optim import build_optimizer
    from .precision import grad_scaler, resolve_amp, resolve_device

    log = log or (lambda *a, **k: None)
    model_args = dict(model_args or {})
    _check_names(model, task, data)
    for key, v, low in (("batch", batch_size, 1), ("steps", steps, 1), ("warmup", warmup, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise CnnkitError(f"--{key} must be a whole number >= {low}, got {v!r}")
    if amp not in CHOICES["amp"]:
        raise suggest(str(amp), CHOICES["amp"], "amp mode")
    size = parse_input(input_size)
    aug_cfg = parse_augment(augment)
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
    bundle = _load_real(data, data_dir, in_chans, side, batch_size * (warmup + steps), seed, log)
    if bundle is not None:
        in_chans, num_classes = bundle.in_chans, len(bundle.classes)
        shape = (bundle.in_chans, bundle.image_size, bundle.image_size)
    else:
        with torch.device("meta"):
            ref = create_model(model, in_chans=in_chans, **model_args)
        c, h, w = ref.default_cfg["input_size"] if hasattr(ref, "default_cfg") else (3, 224, 224)
        num_classes = getattr(ref, "num_classes", None) or 1000
        shape = size if isinstance(size, tuple) else (c, side or h, side or w)
        in_chans = shape[0]

    # -- model, task, optimiser: as engine.loop.fit builds them
    net = create_model(model, num_classes=num_classes, in_chans=in_chans, **model_args).to(dev)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    fwd = torch.compile(net) if compile else net
    multi_label = bool(getattr(net, "default_cfg", {}).get("multi_label", False))
    task_obj = create_task(task, num_classes=num_classes, label_smoothing=0.1, multi_label=multi_label)
    lr = 1e-3  # speed does not depend on it; small, so random data cannot drive the weights to inf
    opt = build_optimizer(optimizer, net, lr, 5e-4)
    scaler = grad_scaler(dev, amp_dtype)
    mean, std = (norm_stats("dataset", bundle.mean, bundle.std, in_chans) if bundle is not None
                 else ((0.5,) * in_chans, (0.25,) * in_chans))
    prep = Preprocess(mean, std, dev, channels_last)
    augment_mod = BatchAugment(aug_cfg, num_classes).to(dev)
    step = _Step(net, fwd, task_obj, opt, scaler, prep, augment_mod, epoch_generator(seed + 1, 0, dev), dev,
                 amp_dtype, lr)
    amp_name = str(amp_dtype).replace("torch.", "") if amp_dtype is not None else "fp32"

    res = dict(model=model, task=task, batch_size=batch_size, input_size=list(shape), num_classes=num_classes,
               data=bundle.name if bundle is not None else None, device=str(dev), amp=amp_name,
               channels_last=channels_last, compile=compile, augment=augment, optimizer=optimizer, steps=steps,
               warmup=warmup, machine=info, warnings=warnings)

    # -- FLOPs per image and the machine's GEMM peak in the run's dtype
    log("counting FLOPs ...")
    macs = _macs(model, num_classes, in_chans, model_args, shape, net)
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
    syn_t = torch.randint(0, num_classes, (2 * batch_size,), generator=gx)
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
            sec = _time_infer(fwd, net, lambda: syn_x, steps, warmup, dev, amp_dtype)
        else:
            batches = _forever(loader)  # the order does not matter here
            sec = _time_infer(fwd, net, lambda: prep(next(batches)[0]), steps, warmup, dev, amp_dtype)
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
