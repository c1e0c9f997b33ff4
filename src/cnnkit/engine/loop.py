"""`fit`: the training loop, top to bottom in one function (`_fit`).

Flow: data (uint8, on the device) -> the task's batch augmentation (targets move with the pixels)
-> normalisation -> the training step (`engine/step.py`: the task's loss under autocast ->
backward -> optimizer step -> EMA); once per epoch: the task's streaming evaluation, a row to
metrics.csv, last/ (and best/ when the monitored metric improved) written atomically. The loop
knows no task: it calls only the task contract (`tasks/base.py`).

Every random draw of an epoch comes from generators seeded by (seed, epoch): the data order,
the augmentations and dropout. Resuming at epoch e therefore replays exactly what an
uninterrupted run would have done, given the weights, optimizer state and step count saved
in last/. The loop never reads a value back to the host per step: loss and hits accumulate
on the device and are read once per logging interval.

Under torchrun every process runs this same loop as one rank of a DDP group (engine/distributed.py,
`dd` below): the global batch is split over the ranks, metrics are summed over them, and rank 0
alone logs and writes the run folder. Run as one process, `dd` is a group of one.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import TrainConfig
from ..data.loader import Preprocess, make_loader, norm_stats
from ..registry import CnnkitError
from ..tasks import column_formats, create_task, model_cfg, task_class
from . import checkpoint as ckpt
from . import distributed
from .evaluate import evaluate
from .loggers import make_logger
from .optim import EMA, build_optimizer, lr_factor
from .precision import grad_scaler, resolve_amp
from .progress import Progress
from .run import MetricsLog, environment, new_run_dir, write_config
from .step import TrainStep


@dataclass
class RunResult:
    run_dir: Path
    best_metric: float
    best_epoch: int
    monitor: str
    history: list = field(default_factory=list)
    stopped_early: bool = False
    monitor_format: str = "loss"  # how to show best_metric (tasks.format_value)


def _meta(cfg: TrainConfig, task, bundle, mean, std, epoch: int, metrics: dict, env: dict) -> dict:
    shape = list(bundle.input_shape or (bundle.in_chans, bundle.image_size, bundle.image_size))
    return dict(
        format="cnnkit-checkpoint/1", model=cfg.model, model_args=cfg.model_args,
        model_kwargs=task.model_kwargs(bundle.image_size),
        num_classes=len(bundle.classes), in_chans=bundle.in_chans, classes=list(bundle.classes),
        input_size=shape, input_spec=dict(kind=bundle.input_kind, shape=shape), mean=list(mean), std=list(std),
        tta=cfg.tta, channels_last=cfg.channels_last,  # how this run evaluated: `cnnkit eval` does the same
        amp=cfg.amp,
        **task.meta(),
        data=dict(name=cfg.data, data_dir=cfg.data_dir, val=cfg.val, image_size=cfg.image_size, channels=cfg.channels,
                  num_train=cfg.num_train, num_val=cfg.num_val, seed=cfg.seed),
        epoch=epoch, metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))}, versions=env,
    )


@dataclass
class _Progress:
    """What the loop carries from epoch to epoch, saved in last/ so that --resume continues it."""

    epoch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0


def fit(cfg: TrainConfig, resume: str | Path | None = None, stop_after: int | None = None,
        log=print) -> RunResult:
    """Train `cfg` in a new run directory, or continue the run at `resume` (its last/ checkpoint).

    `stop_after` ends this call after that many epochs, as an interruption would (tests use it).
    Under torchrun this process joins the group for the run and leaves it at the end, error or not.
    """
    with distributed.session(cfg.device) as dd:
        return _fit(cfg, dd, resume, stop_after, log if dd.is_main else _silent)


def _silent(*args, **kwargs) -> None:
    """The log of ranks other than 0."""


def _clamp_batch(cfg: TrainConfig, n_train: int, dd, log) -> int:
    """The global batch, no larger than the training set (a multiple of the ranks under DDP)."""
    if cfg.batch_size <= n_train:
        return cfg.batch_size
    batch = max(dd.world_size, n_train // dd.world_size * dd.world_size)
    if n_train < dd.world_size:
        raise CnnkitError(f"{n_train} training images cannot be split over {dd.world_size} processes")
    log(f"batch_size {cfg.batch_size} is larger than the {n_train} training images: using {batch}")
    return batch


def _resume(run: Path, cfg: TrainConfig, model, optimizer, ema, task, device, log) -> _Progress:
    """Load last/ of `run` into the model, optimizer, EMA and task; where the loop stood."""
    last = ckpt.resolve_checkpoint(run, prefer="last")
    meta = ckpt.load_meta(last)
    if meta.get("model") != cfg.model:
        raise CnnkitError(f"{last} holds a {meta.get('model')!r} model, not {cfg.model!r}")
    state = ckpt.load_state(last, device)
    ckpt.load_into(model, ckpt.load_weights(last, device), f"checkpoint {last}")
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None and "ema" in state:
        ema.module.load_state_dict(state["ema"])
    if "task" in state:
        task.load_state_dict(state["task"])
    p = _Progress(state["epoch"], state["step"], state["best"], state["best_epoch"], state["bad_epochs"])
    if p.epoch >= cfg.epochs:
        raise CnnkitError(f"{run} already finished its {cfg.epochs} epochs; train a new run or raise --epochs")
    log(f"resuming {run} at epoch {p.epoch + 1}/{cfg.epochs}")
    return p


def _save(run: Path, model, eval_model, optimizer, ema, task, p: _Progress, meta: dict, improved: bool) -> None:
    """best/ when the monitored metric improved, and always last/ with what resume needs."""
    if improved:
        ckpt.save_checkpoint(run / "best", eval_model.state_dict(), meta)
    state = dict(optimizer=optimizer.state_dict(), epoch=p.epoch, step=p.step, best=p.best,
                 best_epoch=p.best_epoch, bad_epochs=p.bad_epochs)
    if ema is not None:
        state["ema"] = ema.module.state_dict()
    if task.state_dict():
        state["task"] = task.state_dict()
    ckpt.save_checkpoint(run / "last", model.state_dict(), meta, state)


def _check_finite(avg: float, run: Path, epoch: int, i: int, lr: float) -> None:
    if not math.isfinite(avg):
        kept = (f"the last good checkpoint is {run / 'last'}" if (run / "last").exists()
                else "no checkpoint was written")
        raise CnnkitError(f"the loss became {avg} at epoch {epoch + 1}, step {i + 1} (lr {lr:.3g}); {kept}. "
                          f"Try a lower --lr, --grad-clip 1.0 or --amp off")


def _fit(cfg: TrainConfig, dd: distributed.Distributed, resume, stop_after, log) -> RunResult:
    # names first: a typo should cost nothing, not a data load
    from ..models import create_model

    mcfg = model_cfg(cfg.model, **cfg.model_args)  # also fails now on an unknown model name
    task_cls = task_class(cfg.task or mcfg.get("task") or "classify")
    make_logger(cfg.logger, None)  # a missing tensorboard package fails here, before any work
    device = dd.device  # cfg.device; under torchrun on CUDA, cuda:LOCAL_RANK
    dd.check_batch(cfg.batch_size)  # the global batch must split evenly over the ranks
    amp_dtype = resolve_amp(cfg.amp, device)
    torch.manual_seed(cfg.seed)

    # -- data: uint8 tensors with the task's kind of targets; the training device gets them once
    with dd.main_first(cfg.download):  # a download happens once, on rank 0; then the others read the files
        bundle = task_cls.load_data(cfg.data, cfg.task_args, log, data_dir=cfg.data_dir, download=cfg.download,
                                    val=cfg.val, image_size=cfg.image_size,
                                    seed=cfg.seed, num_train=cfg.num_train, num_val=cfg.num_val,
                                    in_chans=cfg.channels)
    task = create_task(task_cls.name, bundle.classes, mcfg, label_smoothing=cfg.label_smoothing, **cfg.task_args)
    task.prepare(bundle.train.targets)  # e.g. label frequencies; on resume, last/'s task state replaces them
    monitor = cfg.monitor or task.monitor
    task.check_monitor(monitor)
    batch_size = _clamp_batch(cfg, len(bundle.train), dd, log)
    train_loader = make_loader(bundle.train, batch_size, True, True, device, cfg.seed, cfg.workers,
                               dd.rank, dd.world_size)
    val_loader = make_loader(bundle.val, batch_size * 2, False, False, device, cfg.seed, cfg.workers,
                             dd.rank, dd.world_size)

    # -- model, optimiser, the training step
    model = create_model(cfg.model, in_chans=bundle.in_chans, weights=cfg.weights,
                         **{**task.model_kwargs(bundle.image_size), **cfg.model_args}).to(device)
    if cfg.sync_bn:  # BatchNorm statistics over the global batch, not each rank's part (no-op in one process)
        model = dd.sync_batchnorm(model)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, cfg.momentum)
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    fwd = dd.wrap(model)  # DDP averages gradients over the ranks; `model` stays the one to save and evaluate
    fwd = torch.compile(fwd) if cfg.compile else fwd
    train_step = TrainStep(model, fwd, task, optimizer, grad_scaler(device, amp_dtype), device, amp_dtype,
                           cfg.grad_clip, ema)

    augment = task.batch_augment(cfg.augment).to(device)
    mean, std = norm_stats(cfg.normalize, bundle.mean, bundle.std, bundle.in_chans)
    prep = Preprocess(mean, std, device, cfg.channels_last)

    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)

    # -- the run directory (new, or the one being resumed)
    env = environment()
    if resume is not None:
        run = Path(resume)
        p = _resume(run, cfg, model, optimizer, ema, task, device, log)
    else:  # rank 0 makes the folder (the next free name) and tells the others
        run = dd.broadcast(new_run_dir(cfg.project, cfg.name or f"{cfg.model}-{cfg.data}") if dd.is_main else None)
        p = _Progress()
    start_epoch = p.epoch
    metrics_log = None
    if dd.is_main:
        write_config(run, cfg.to_dict(), env)
        metrics_log = MetricsLog(run / "metrics.csv", keep_epochs=start_epoch)
    history = list(metrics_log.rows) if metrics_log else []
    logger = make_logger(cfg.logger if dd.is_main else "csv", run)  # scalars/pictures beside metrics.csv

    progress = Progress(task, quiet=cfg.quiet or not dd.is_main, log=log)
    ddp = (f" x{dd.world_size} (DDP, {batch_size // dd.world_size} images per process and step)"
           if dd.enabled else "")
    log(f"{cfg.model} ({task.name}) on {cfg.data} ({len(bundle.train):,} train / {len(bundle.val):,} "
        f"{bundle.val_name} {bundle.unit}, "
        f"{'x'.join(map(str, bundle.input_shape or (bundle.in_chans, bundle.image_size, bundle.image_size)))}, "
        f"{task.num_classes} classes) | {sum(q.numel() for q in model.parameters()):,} parameters | "
        f"{device.type}{ddp}{' ' + str(amp_dtype).replace('torch.', '') if amp_dtype else ' fp32'} | run: {run}")

    stopped_early, epoch, best_res = False, start_epoch, None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if stop_after is not None and epoch - start_epoch >= stop_after:
                break
            # Everything random in this epoch derives from (seed, epoch): exact resume. Dropout masks
            # also differ per rank (rank 0's are a single process's).
            torch.manual_seed(cfg.seed * 7919 + epoch + 104_729 * dd.rank)
            train_loader.set_epoch(epoch)
            gen = train_loader.generator(cfg.seed + 1)  # augmentation draws (see data/loader.py under DDP)
            model.train()
            train_step.reset()
            t0 = time.perf_counter()
            progress.start_epoch(epoch, cfg.epochs, steps_per_epoch)
            log_every = max(1, steps_per_epoch // 20)
            for i, (x, y) in enumerate(train_loader):
                lr = cfg.lr * lr_factor(cfg.schedule, p.step, total_steps, steps_per_epoch, warmup_steps,
                                        cfg.step_size, cfg.gamma)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x = prep.to_unit(x)                        # (B, C, H, W) float in [0, 1]
                if augment.active:
                    x, y = augment(x, y, gen)              # moves the targets with the pixels
                x, y = train_loader.local(x, y)            # DDP: this rank's B / world_size rows
                train_step(prep.normalize(x), y)
                p.step += 1
                if (i + 1) % log_every == 0 or i + 1 == steps_per_epoch:
                    # the one host sync per interval; sums over the ranks, so all of them stop on a NaN
                    avg, stats, seen = train_step.averages(dd)
                    _check_finite(avg, run, epoch, i, lr)
                    progress.update(i + 1, avg, stats, seen / (time.perf_counter() - t0))
            train_time = time.perf_counter() - t0

            eval_model = ema.module if ema is not None else model
            dd.sync_buffers(eval_model)  # BN statistics differ per rank without sync_bn: rank 0's are saved
            res = evaluate(eval_model, val_loader, task, prep, device, amp_dtype, tta=cfg.tta, dd=dd)
            row = dict(epoch=epoch + 1, lr=lr, train_loss=avg, **{f"train_{k}": v for k, v in stats.items()})
            row.update({f"val_{s.name}": res[s.name] for s in task.metrics if s.name in res})
            row.update(epoch_time=train_time, images_per_s=seen / train_time)
            history.append(row)
            progress.end_epoch(row)

            improved = task.better(monitor, row[monitor], p.best)
            p.epoch = epoch + 1
            if improved:
                p.best, p.best_epoch, p.bad_epochs, best_res = row[monitor], epoch + 1, 0, res
            else:
                p.bad_epochs += 1
            if dd.is_main:  # one writer; every rank holds the same weights and numbers
                metrics_log.append(row)
                meta = _meta(cfg, task, bundle, mean, std, epoch + 1, row, env)
                _save(run, model, eval_model, optimizer, ema, task, p, meta, improved)
                logger.log_epoch(row, epoch + 1)
                task.log_pictures(logger, run, epoch + 1, res, log)  # e.g. confusion matrix, Grad-CAM of last/
            if cfg.early_stop and p.bad_epochs >= cfg.early_stop:
                log(f"early stop: {monitor} has not improved for {p.bad_epochs} epochs (best {p.best:.4f} "
                    f"at epoch {p.best_epoch})")
                stopped_early = True
                break
    finally:
        progress.close()
        logger.close()
        if dd.is_main:
            _plots(run, history, best_res, bundle.classes, task)
    return RunResult(run, p.best if p.best is not None else float("nan"), p.best_epoch, monitor, history,
                     stopped_early, task.spec(monitor).fmt)


def _plots(run: Path, history: list, best_res: dict | None, classes, task) -> None:
    from ..report.plots import plot_confusion, plot_curves

    if history:
        plot_curves(history, run / "curves.png", column_formats(task))
    if best_res is not None and "confusion" in best_res:
        plot_confusion(best_res["confusion"].cpu(), classes, run / "confusion_matrix.png")
