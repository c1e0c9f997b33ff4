"""`fit`: the training loop, top to bottom in one function.

Flow: data (uint8, on the device) -> batch augmentation -> normalisation -> model under
autocast -> task loss -> backward -> optimizer step -> EMA; once per epoch: evaluate, log a
row to metrics.csv, write last/ (and best/ when the monitored metric improved) atomically.

Every random draw of an epoch comes from generators seeded by (seed, epoch): the data order,
the augmentations and dropout. Resuming at epoch e therefore replays exactly what an
uninterrupted run would have done, given the weights, optimizer state and step count saved
in last/. The loop never reads a value back to the host per step: loss and hits accumulate
on the device and are read once per logging interval.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import TrainConfig
from ..data.loader import Preprocess, epoch_generator, make_loader, norm_stats
from ..models import create_model
from ..registry import TASKS, CnnkitError
from ..tasks import create_task
from . import checkpoint as ckpt
from .evaluate import evaluate
from .optim import EMA, build_optimizer, lr_factor
from .precision import autocast, grad_scaler, resolve_amp, resolve_device
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
    """
    # names first: a typo should cost nothing, not a data load
    from ..data.augment import BatchAugment, parse_augment
    from ..models import MODELS, _load_all

    _load_all()
    if not cfg.model.startswith(("tv:", "timm:")):
        MODELS.get(cfg.model)
    TASKS.get(cfg.task)
    aug_cfg = parse_augment(cfg.augment)
    device = resolve_device(cfg.device)
    amp_dtype = resolve_amp(cfg.amp, device)
    torch.manual_seed(cfg.seed)

    # -- data: uint8 tensors; the training device gets them once
    from ..data.datasets import load_data

    bundle = load_data(cfg.data, data_dir=cfg.data_dir, download=cfg.download,
                       val=cfg.val, image_size=cfg.image_size,
                       seed=cfg.seed, num_train=cfg.num_train, num_val=cfg.num_val,
                       in_chans=cfg.channels)
    num_classes = len(bundle.classes)
    train_loader = make_loader(bundle.train, cfg.batch_size, True, True, device, cfg.seed, cfg.workers)
    val_loader = make_loader(bundle.val, cfg.batch_size * 2, False, False, device, cfg.seed, cfg.workers)
    if len(train_loader) == 0:
        raise CnnkitError(f"batch_size {cfg.batch_size} is larger than the training set ({len(bundle.train)} images)")

    # -- model, task, optimiser
    model = create_model(cfg.model, num_classes=num_classes, in_chans=bundle.in_chans, weights=cfg.weights,
                         **cfg.model_args).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    task = create_task(cfg.task, num_classes=num_classes, label_smoothing=cfg.label_smoothing,
                       multi_label=bool(model.default_cfg.get("multi_label", False)))
    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, cfg.momentum)
    scaler = grad_scaler(device, amp_dtype)
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    fwd = torch.compile(model) if cfg.compile else model

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
    else:
        run = new_run_dir(cfg.project, cfg.name or f"{cfg.model}-{cfg.data}")
    write_config(run, cfg.to_dict(), env)
    metrics_log = MetricsLog(run / "metrics.csv", keep_epochs=start_epoch)
    history = list(metrics_log.rows)

    progress = Progress(quiet=cfg.quiet, log=log)
    log(f"{cfg.model} on {cfg.data} ({len(bundle.train):,} train / {len(bundle.val):,} {bundle.val_name} images, "
        f"{bundle.in_chans}x{bundle.image_size}x{bundle.image_size}, {num_classes} classes) | "
        f"{sum(p.numel() for p in model.parameters()):,} parameters | {device.type}"
        f"{' ' + str(amp_dtype).replace('torch.', '') if amp_dtype else ' fp32'} | run: {run}")

    stopped_early, epoch = False, start_epoch
    confusion = None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if stop_after is not None and epoch - start_epoch >= stop_after:
                break
            # Everything random in this epoch derives from (seed, epoch): exact resume.
            torch.manual_seed(cfg.seed * 7919 + epoch)
            train_loader.set_epoch(epoch)
            gen = epoch_generator(cfg.seed + 1, epoch, device)
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
                    avg = (loss_sum / seen).item()  # the one host sync per interval
                    if not math.isfinite(avg):
                        kept = (f"the last good checkpoint is {run / 'last'}" if (run / "last").exists()
                                else "no checkpoint was written")
                        raise CnnkitError(
                            f"the loss became {avg} at epoch {epoch + 1}, step {i + 1} (lr {lr:.3g}); {kept}. "
                            f"Try a lower --lr, --grad-clip 1.0 or --amp off")
                    progress.update(i + 1, loss=avg, acc=hits.item() / seen,
                                    ips=seen / (time.perf_counter() - t0))
            train_time = time.perf_counter() - t0

            eval_model = ema.module if ema is not None else model
            res = evaluate(eval_model, val_loader, task, prep, device, amp_dtype, tta=cfg.tta)
            row = dict(epoch=epoch + 1, lr=lr, train_loss=(loss_sum / seen).item(), train_acc=hits.item() / seen,
                       val_loss=res["loss"], val_acc=res["acc"])
            if "acc5" in res:
                row["val_acc5"] = res["acc5"]
            row.update(epoch_time=train_time, images_per_s=seen / train_time)
            metrics_log.append(row)
            history.append(row)
            progress.end_epoch(row)

            value = row[cfg.monitor]
            improved = _better(cfg.monitor, value, best)
            if improved:
                best, best_epoch, bad_epochs = value, epoch + 1, 0
                confusion = res["confusion"]
                ckpt.save_checkpoint(run / "best", eval_model.state_dict(),
                                     _meta(cfg, model, bundle, mean, std, epoch + 1, row, env))
            else:
                bad_epochs += 1
            state = dict(optimizer=optimizer.state_dict(), epoch=epoch + 1, step=step, best=best,
                         best_epoch=best_epoch, bad_epochs=bad_epochs)
            if ema is not None:
                state["ema"] = ema.module.state_dict()
            ckpt.save_checkpoint(run / "last", model.state_dict(),
                                 _meta(cfg, model, bundle, mean, std, epoch + 1, row, env), state)
            if cfg.early_stop and bad_epochs >= cfg.early_stop:
                log(f"early stop: {cfg.monitor} has not improved for {bad_epochs} epochs (best {best:.4f} "
                    f"at epoch {best_epoch})")
                stopped_early = True
                break
    finally:
        progress.close()
        _plots(run, history, confusion, bundle.classes)
    return RunResult(run, best if best is not None else float("nan"), best_epoch, cfg.monitor, history, stopped_early)


def _plots(run: Path, history: list, confusion, classes) -> None:
    from ..report.plots import plot_confusion, plot_curves

    if history:
        plot_curves(history, run / "curves.png")
    if confusion is not None:
        plot_confusion(confusion.cpu(), classes, run / "confusion_matrix.png")
