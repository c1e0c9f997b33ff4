"""`fit`: the training loop, top to bottom in one function (`_fit`).

Flow: data (uint8, on the device) -> batch augmentation -> normalisation -> model under
autocast -> task loss -> backward -> optimizer step -> EMA; once per epoch: evaluate, log a
row to metrics.csv, write last/ (and best/ when the monitored metric improved) atomically.

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
from ..models import create_model
from ..registry import TASKS, CnnkitError
from ..tasks import create_task
from . import checkpoint as ckpt
from . import distributed
from .evaluate import evaluate
from .loggers import log_cam_samples, make_logger
from .optim import EMA, build_optimizer, lr_factor
from .precision import autocast, grad_scaler, resolve_amp
from .progress import Progress
from .run import MetricsLog, environment, new_run_dir, write_config


@dataclass
class RunResult:
    run_dir: Path
    best_metric: float
    best_epoch: int
    monitor: str
    history: list = field(default_factory=list)
    stopped_early: bool = False


def _meta(cfg: TrainConfig, model, bundle, mean, std, epoch: int, metrics: dict, env: dict) -> dict:
    return dict(
        format="cnnkit-checkpoint/1", model=cfg.model, model_args=cfg.model_args, task=cfg.task,
        num_classes=len(bundle.classes), in_chans=bundle.in_chans, classes=list(bundle.classes),
        input_size=[bundle.in_chans, bundle.image_size, bundle.image_size], mean=list(mean), std=list(std),
        tta=cfg.tta, channels_last=cfg.channels_last,  # how this run evaluated: `cnnkit eval` does the same
        multi_label=bool(model.default_cfg.get("multi_label", False)),
        data=dict(name=cfg.data, data_dir=cfg.data_dir, val=cfg.val, image_size=cfg.image_size, channels=cfg.channels,
                  num_train=cfg.num_train, num_val=cfg.num_val, seed=cfg.seed),
        epoch=epoch, metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))}, versions=env,
    )


def _better(monitor: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if monitor == "val_loss" else value > best


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


def _fit(cfg: TrainConfig, dd: distributed.Distributed, resume, stop_after, log) -> RunResult:
    # names first: a typo should cost nothing, not a data load
    from ..data.augment import BatchAugment, parse_augment
    from ..models import MODELS, _load_all

    _load_all()
    if not cfg.model.startswith(("tv:", "timm:")):
        MODELS.get(cfg.model)
    TASKS.get(cfg.task)
    aug_cfg = parse_augment(cfg.augment)
    make_logger(cfg.logger, None)  # a missing tensorboard package fails here, before any work
    device = dd.device  # cfg.device; under torchrun on CUDA, cuda:LOCAL_RANK
    dd.check_batch(cfg.batch_size)  # the global batch must split evenly over the ranks
    amp_dtype = resolve_amp(cfg.amp, device)
    torch.manual_seed(cfg.seed)

    # -- data: uint8 tensors; the training device gets them once
    from ..data.datasets import load_data

    with dd.main_first(cfg.download):  # a download happens once, on rank 0; then the others read the files
        bundle = load_data(cfg.data, data_dir=cfg.data_dir, download=cfg.download,
                           val=cfg.val, image_size=cfg.image_size,
                           seed=cfg.seed, num_train=cfg.num_train, num_val=cfg.num_val,
                           in_chans=cfg.channels)
    num_classes = len(bundle.classes)
    train_loader = make_loader(bundle.train, cfg.batch_size, True, True, device, cfg.seed, cfg.workers,
                               dd.rank, dd.world_size)
    val_loader = make_loader(bundle.val, cfg.batch_size * 2, False, False, device, cfg.seed, cfg.workers,
                             dd.rank, dd.world_size)
    if len(train_loader) == 0:
        raise CnnkitError(f"batch_size {cfg.batch_size} is larger than the training set ({len(bundle.train)} images)")

    # -- model, task, optimiser
    model = create_model(cfg.model, num_classes=num_classes, in_chans=bundle.in_chans, weights=cfg.weights,
                         **cfg.model_args).to(device)
    if cfg.sync_bn:  # BatchNorm statistics over the global batch, not each rank's part (no-op in one process)
        model = dd.sync_batchnorm(model)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    task = create_task(cfg.task, num_classes=num_classes, label_smoothing=cfg.label_smoothing,
                       multi_label=bool(model.default_cfg.get("multi_label", False)))
    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, cfg.momentum)
    scaler = grad_scaler(device, amp_dtype)
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    fwd = dd.wrap(model)  # DDP averages gradients over the ranks; `model` stays the one to save and evaluate
    fwd = torch.compile(fwd) if cfg.compile else fwd

    augment = BatchAugment(aug_cfg, num_classes).to(device)
    mean, std = norm_stats(cfg.normalize, bundle.mean, bundle.std, bundle.in_chans)
    prep = Preprocess(mean, std, device, cfg.channels_last)

    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)

    # -- the run directory (new, or the one being resumed)
    env = environment()
    start_epoch, step, best, best_epoch, bad_epochs = 0, 0, None, -1, 0
    if resume is not None:
        run = Path(resume)
        last = ckpt.resolve_checkpoint(run, prefer="last")
        meta = ckpt.load_meta(last)
        if meta.get("model") != cfg.model:
            raise CnnkitError(f"{last} holds a {meta.get('model')!r} model, not {cfg.model!r}")
        state = ckpt.load_state(last, device)
        ckpt.load_into(model, ckpt.load_weights(last, device), f"checkpoint {last}")
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and "ema" in state:
            ema.module.load_state_dict(state["ema"])
        start_epoch, step = state["epoch"], state["step"]
        best, best_epoch, bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
        if start_epoch >= cfg.epochs:
            raise CnnkitError(f"{run} already finished its {cfg.epochs} epochs; train a new run or raise --epochs")
        log(f"resuming {run} at epoch {start_epoch + 1}/{cfg.epochs}")
    else:  # rank 0 makes the folder (the next free name) and tells the others
        run = dd.broadcast(new_run_dir(cfg.project, cfg.name or f"{cfg.model}-{cfg.data}") if dd.is_main else None)
    metrics_log = None
    if dd.is_main:
        write_config(run, cfg.to_dict(), env)
        metrics_log = MetricsLog(run / "metrics.csv", keep_epochs=start_epoch)
    history = list(metrics_log.rows) if metrics_log else []
    logger = make_logger(cfg.logger if dd.is_main else "csv", run)  # scalars/pictures beside metrics.csv

    progress = Progress(quiet=cfg.quiet or not dd.is_main, log=log)
    ddp = (f" x{dd.world_size} (DDP, {cfg.batch_size // dd.world_size} images per process and step)"
           if dd.enabled else "")
    log(f"{cfg.model} on {cfg.data} ({len(bundle.train):,} train / {len(bundle.val):,} {bundle.val_name} images, "
        f"{bundle.in_chans}x{bundle.image_size}x{bundle.image_size}, {num_classes} classes) | "
        f"{sum(p.numel() for p in model.parameters()):,} parameters | {device.type}{ddp}"
        f"{' ' + str(amp_dtype).replace('torch.', '') if amp_dtype else ' fp32'} | run: {run}")

    stopped_early, epoch = False, start_epoch
    confusion = None
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
            loss_sum = torch.zeros((), device=device)
            hits = torch.zeros((), device=device, dtype=torch.long)
            seen, t0 = 0, time.perf_counter()
            progress.start_epoch(epoch, cfg.epochs, steps_per_epoch)
            log_every = max(1, steps_per_epoch // 20)
            for i, (x, y) in enumerate(train_loader):
                lr = cfg.lr * lr_factor(cfg.schedule, step, total_steps, steps_per_epoch, warmup_steps,
                                        cfg.step_size, cfg.gamma)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x = prep.to_unit(x)                        # (B, C, H, W) float in [0, 1]
                if augment.active:
                    x, y = augment(x, y, gen)              # y becomes (B, K) soft targets under CutMix/MixUp
                x, y = train_loader.local(x, y)            # DDP: this rank's B / world_size rows
                x = prep.normalize(x)
                with autocast(device, amp_dtype):
                    out = fwd(x)
                    loss = task.loss(out, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                if ema is not None:
                    ema.update(model)
                step += 1
                n = len(x)
                loss_sum += loss.detach().float() * n
                hits += task.correct(task.logits(out).detach(), y)
                seen += n
                if (i + 1) % log_every == 0 or i + 1 == steps_per_epoch:
                    # the one host sync per interval; sums over the ranks, so all of them stop on a NaN
                    total_loss, total_hits, total_seen = dd.sum(loss_sum, hits, seen)
                    avg, acc = total_loss / total_seen, total_hits / total_seen
                    if not math.isfinite(avg):
                        kept = (f"the last good checkpoint is {run / 'last'}" if (run / "last").exists()
                                else "no checkpoint was written")
                        raise CnnkitError(
                            f"the loss became {avg} at epoch {epoch + 1}, step {i + 1} (lr {lr:.3g}); {kept}. "
                            f"Try a lower --lr, --grad-clip 1.0 or --amp off")
                    progress.update(i + 1, loss=avg, acc=acc, ips=total_seen / (time.perf_counter() - t0))
            train_time = time.perf_counter() - t0

            eval_model = ema.module if ema is not None else model
            dd.sync_buffers(eval_model)  # BN statistics differ per rank without sync_bn: rank 0's are saved
            res = evaluate(eval_model, val_loader, task, prep, device, amp_dtype, tta=cfg.tta, gather=dd.gather_rows)
            row = dict(epoch=epoch + 1, lr=lr, train_loss=avg, train_acc=acc, val_loss=res["loss"], val_acc=res["acc"])
            if "acc5" in res:
                row["val_acc5"] = res["acc5"]
            row.update(epoch_time=train_time, images_per_s=total_seen / train_time)
            history.append(row)
            progress.end_epoch(row)

            value = row[cfg.monitor]
            improved = _better(cfg.monitor, value, best)
            if improved:
                best, best_epoch, bad_epochs = value, epoch + 1, 0
                confusion = res["confusion"]
            else:
                bad_epochs += 1
            if dd.is_main:  # one writer; every rank holds the same weights and numbers
                metrics_log.append(row)
                meta = _meta(cfg, model, bundle, mean, std, epoch + 1, row, env)
                if improved:
                    ckpt.save_checkpoint(run / "best", eval_model.state_dict(), meta)
                state = dict(optimizer=optimizer.state_dict(), epoch=epoch + 1, step=step, best=best,
                             best_epoch=best_epoch, bad_epochs=bad_epochs)
                if ema is not None:
                    state["ema"] = ema.module.state_dict()
                ckpt.save_checkpoint(run / "last", model.state_dict(), meta, state)
                logger.log_epoch(row, epoch + 1)
                logger.log_confusion(res["confusion"], bundle.classes, epoch + 1)
                log_cam_samples(logger, run, epoch + 1, log=log)  # Grad-CAM of the epoch's last/ weights
            if cfg.early_stop and bad_epochs >= cfg.early_stop:
                log(f"early stop: {cfg.monitor} has not improved for {bad_epochs} epochs (best {best:.4f} "
                    f"at epoch {best_epoch})")
                stopped_early = True
                break
    finally:
        progress.close()
        logger.close()
        if dd.is_main:
            _plots(run, history, confusion, bundle.classes)
    return RunResult(run, best if best is not None else float("nan"), best_epoch, cfg.monitor, history, stopped_early)


def _plots(run: Path, history: list, confusion, classes) -> None:
    from ..report.plots import plot_confusion, plot_curves

    if history:
        plot_curves(history, run / "curves.png")
    if confusion is not None:
        plot_confusion(confusion.cpu(), classes, run / "confusion_matrix.png")
