"""The public Python API; `cnnkit.<name>` re-exports these, and each CLI command calls one of them."""
from __future__ import annotations

from .config import TrainConfig, resolve


def train(config: str | None = None, resume: str | None = None, log=print, stop_after: int | None = None, **options):
    """Train with `options` (keys of TrainConfig) over an optional YAML `config`; or `resume` a run.
    `plan="plan.yaml"` (from `cnnkit plan DATA`) trains nnU-Net's configuration of that data set.

    >>> res = train(data="shapes", epochs=1)         # doctest: +SKIP
    >>> res.run_dir, res.best_metric                 # doctest: +SKIP
    """
    from pathlib import Path

    from .engine.loop import fit
    from .registry import CnnkitError

    if resume is not None:
        run = Path(resume)
        if not (run / "config.yaml").is_file():
            raise CnnkitError(f"{run} is not a run folder (no config.yaml); give the folder train created")
        # the run's own settings; only how it is shown and how long it runs may change
        allowed = {"epochs", "quiet", "device", "workers"}
        extra = set(options) - allowed
        if extra:
            raise CnnkitError(f"--resume continues a run with its own settings; only {sorted(allowed)} may change, "
                              f"not {sorted(extra)}")
        cfg = resolve(options, config_file=str(run / "config.yaml"))
        res = fit(cfg, resume=run, stop_after=stop_after, log=log)
    else:
        plan = options.pop("plan", None)
        if plan is not None:  # written by `cnnkit plan`; the options given here go over the plan's
            from .tasks.volume import plan_options

            planned = plan_options(plan)
            args = dict(planned.pop("task_args"), **(options.pop("task_args", None) or {}))
            options = {**planned, **options, "task_args": args}
        cfg = resolve(options, config_file=config)
        res = fit(cfg, stop_after=stop_after, log=log)
    if cfg.report:
        _report_after_training(res.run_dir, cfg.device, log)
    return res


def _report_after_training(run, device: str, log) -> None:
    """RUN/report.html once training ends. The run is already complete on disk: a failure here costs
    one warning line, never the run (`cnnkit report RUN` can try again later)."""
    from .engine.distributed import is_main

    if not is_main():  # torchrun: one report, by the main process
        return
    try:
        from .report.html import write_report

        write_report(run, device=device, log=log)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001
        from .utils import first_line

        log(f"warning: report.html was not written ({first_line(e)}); try `cnnkit report {run}`")


def report(run: str, **kwargs) -> "Path":
    """Write RUN/report.html: one self-contained page with the config, model summary, curves, confusion
    matrix, per-class precision/recall/F1, the most confident mistakes and Grad-CAM samples.

    Keywords: device (where the one evaluation runs, default cpu), max_images (per gallery), log.

    >>> report("runs/fastnet-shapes")                 # doctest: +SKIP
    PosixPath('runs/fastnet-shapes/report.html')
    """
    from .report.html import write_report

    return write_report(run, **kwargs)


def evaluate(run: str, **kwargs) -> dict:
    """Evaluate a run or checkpoint on its validation split; returns loss, acc, confusion, logits, ..."""
    from .engine.inference import evaluate_checkpoint

    return evaluate_checkpoint(run, **kwargs)


def predict(checkpoint: str, images: list, topk: int = 5, device: str = "auto", **options) -> list[dict]:
    """The task's predictions for image files: classification the top-k classes ("top"); detection the
    "boxes", "scores", "labels" (class names) above `conf`, drawn into `out` (default RUN/predict/)."""
    from .engine.inference import predict_images

    return predict_images(checkpoint, images, topk=topk, device=device, **options)


def load_model(checkpoint: str, device: str = "cpu"):
    """(model, meta) rebuilt from a checkpoint, weights loaded, in eval mode."""
    from .engine.inference import load_checkpoint_model

    model, meta, _ = load_checkpoint_model(checkpoint, device)
    return model, meta


def summary(model, input_size=None, num_classes: int | None = None, in_chans: int | None = None, device: str = "cpu",
            **kwargs):
    """Per-layer summary (shapes, parameters, MACs, receptive field) of a model, a model name or a run.

    A name builds the model with `num_classes` (default: the builder's) and `in_chans` (default: the
    channels of `input_size`, else the builder's).
    """
    from pathlib import Path

    from .analysis import summary as _summary
    from .models import create_model

    if isinstance(model, (str, Path)):
        if Path(model).exists():
            model, meta = load_model(str(model))
            input_size = input_size or tuple(meta["input_size"])
        else:
            chans = in_chans or (input_size[0] if isinstance(input_size, tuple) else None)
            model = create_model(str(model), num_classes=num_classes, in_chans=chans)
    if isinstance(input_size, int):
        input_size = (model.default_cfg["input_size"][0] if hasattr(model, "default_cfg") else 3, input_size, input_size)
    return _summary(model, input_size, device=device, **kwargs)


def explain(checkpoint: str, images: list | None = None, method: str = "gradcam", layer: str | None = None,
            target: str | int | None = None, out: str | None = None, steps: int | None = None) -> "Path":
    """Explain a trained model and write a PNG figure (default RUN/explain/METHOD.png); returns its path.

    Methods (`cnnkit.explain.figures.METHODS`; "gradcam++" is gradcam_pp): heat maps (cam, gradcam,
    gradcam_pp, layercam, guided_backprop, guided_gradcam) draw one row per image; featuremaps shows `layer`'s
    activations for the first image; inversion rebuilds the images from each depth's features;
    erf draws each stage's effective receptive field in its analytic box (over the images, or noise
    when there are none); actmax the inputs that drive `layer`'s channels highest; filters the first
    convolution. filters, actmax and erf need no `images`. `layer` defaults to the model's last
    feature stage (`feature_info`); `target` is a class name or index (default: the prediction);
    `steps` is the optimisation length of inversion / actmax. Scores: `evaluate_explanations`.
    """
    from pathlib import Path

    import torch

    from .data.loader import Preprocess
    from .engine.inference import load_checkpoint_model, load_image
    from .explain.figures import IMAGE_FREE, draw, resolve_method
    from .registry import CnnkitError, suggest
    from .utils import class_names

    method = resolve_method(method)
    images = list(images or [])
    if not images and method not in IMAGE_FREE:
        raise CnnkitError(f"explain --method {method} needs at least one IMAGE file; only {', '.join(IMAGE_FREE)} "
                          "(or --evaluate) run without images")
    if steps is not None and steps < 1:
        raise CnnkitError(f"steps must be >= 1, got {steps}")
    model, meta, folder = load_checkpoint_model(checkpoint)
    c, h, w = meta["input_size"]
    classes = class_names(meta)
    if isinstance(target, str) and not target.isdigit():
        if target not in classes:
            raise suggest(target, classes, "class")
        target = classes.index(target)
    elif target is not None:
        target = int(target)
        if not 0 <= target < len(classes):
            raise CnnkitError(f"target class {target} is out of range (0..{len(classes) - 1})")
    batch = torch.stack([load_image(p, c, (h, w)) for p in images]) if images else torch.zeros(0, c, h, w)
    x = Preprocess(meta["mean"], meta["std"], "cpu")(batch)
    run = folder.parent if folder.name in ("best", "last") else folder
    path = Path(out) if out else run / "explain" / f"{method}.png"
    titles = None
    if images:
        with torch.no_grad():
            pred = model(x).argmax(1).tolist()
        titles = [f"{Path(p).name}: {classes[k]}" for p, k in zip(images, pred)]
    return draw(method, model, x, path, layer=layer, target=target, mean=meta["mean"], std=meta["std"],
                titles=titles, classes=classes, steps=steps)


def evaluate_explanations(run: str, methods=("cam", "gradcam", "gradcam_pp", "guided_gradcam"), num: int = 64,
                          layer: str | None = None, curves: bool = True, steps: int = 16, seed: int = 0,
                          outline: int = 1) -> dict:
    """Score heat-map methods of a run trained on `shapes` on `num` single-object shapes images of the
    run's own size and channels, whose object masks are known exactly.

    Per method: pointing game (share of images whose heat-map maximum lies in the object's mask),
    energy in mask (share of the positive heat inside it) and, with `curves`, deletion / insertion
    AUC of the class probability with their random-order baselines (`steps` + 1 points per curve).
    The object is its mask plus an `outline` of pixels; coarse maps (CAM on a 4 x 4 grid) are scored
    on their own grid, next to that grid's chance level.
    Returns {"methods": {name: scores}, "baseline": the centre prior's scores, "n", "size", "channels",
    "outline", "mask_fraction", "accuracy", "checkpoint", ...}; the scores per method are listed in
    `cnnkit.explain.scores.evaluate_methods`.

    >>> res = evaluate_explanations("runs/fastnet-shapes", ["cam", "gradcam"])   # doctest: +SKIP
    >>> res["methods"]["gradcam"]["pointing_game"]                              # doctest: +SKIP
    """
    from .engine.inference import load_checkpoint_model
    from .explain.scores import evaluate_methods
    from .registry import CnnkitError

    model, meta, folder = load_checkpoint_model(run)
    data = (meta.get("data") or {}).get("name")
    if data != "shapes":
        raise CnnkitError(f"explain --evaluate needs a run trained on shapes data (object masks are known there); "
                          f"{folder} was trained on {data or 'unknown data'}")
    res = evaluate_methods(model, methods, n=num, size=int(meta["input_size"][-1]), mean=meta["mean"],
                           std=meta["std"], channels=int(meta["input_size"][0]), layer=layer, outline=outline,
                           curves=curves, steps=steps, seed=seed)
    res["checkpoint"] = str(folder)
    return res


def export(checkpoint: str, format: str = "onnx", output: str | None = None, batch: int | None = None,
           dynamic: bool = True, opset: int | None = None, device: str = "cpu", tolerance: float = 1e-4,
           exporter: str = "auto"):
    """Export a run or checkpoint to ONNX or TorchScript, normalization inside, checked against PyTorch.

    The file takes `images`: float32 (N, C, H, W) in [0, 1] (uint8 pixels / 255 at the run's input
    size) and returns `logits` (N, classes); input size, mean/std, class names and versions travel
    in it and in a sidecar `<output>.json`. It is run (onnxruntime on the CPU, or torch.jit.load) on
    check batches and kept only if it agrees with eager PyTorch within `tolerance`. Returns an
    ExportResult (path, sidecar, metadata, checks, max_abs_diff); see cnnkit.deploy.export.

    >>> res = export("runs/exp1", format="onnx")        # doctest: +SKIP
    >>> res.path, res.max_abs_diff                      # doctest: +SKIP
    """
    from .deploy.export import export_checkpoint

    return export_checkpoint(checkpoint, format=format, output=output, batch=batch, dynamic=dynamic, opset=opset,
                             device=device, tolerance=tolerance, exporter=exporter)


def bench(model: str = "fastnet", task: str | None = None, batch_size: int = 256, input_size=None,
          data: str | None = None, device: str = "auto", amp: str = "auto", channels_last: bool = True,
          compile: bool = False, steps: int = 10, warmup: int = 3, log=None, **kwargs) -> dict:
    """Training and inference images/s on synthetic and real data, the GEMM peak and the share of it
    a training step reaches, and the time split of a step (data, forward, backward, optimizer).

    `input_size`: (C, H, W), a side H, or the text 'C,H,W'; `data`: a data set name, 'synthetic'
    only, or None (fashion-mnist if found, else shapes). More keywords (data_dir, augment,
    optimizer, model_args, seed): see `cnnkit.perf.bench.run_bench`.

    >>> r = bench("fastnet", steps=4)                                      # doctest: +SKIP
    >>> r["train"]["real"]["images_per_s"], r["peak_fraction"], r["split"]  # doctest: +SKIP
    """
    from .perf.bench import run_bench

    return run_bench(model, task=task, batch_size=batch_size, input_size=input_size, data=data, device=device,
                     amp=amp, channels_last=channels_last, compile=compile, steps=steps, warmup=warmup, log=log,
                     **kwargs)


__all__ = ["TrainConfig", "train", "evaluate", "predict", "load_model", "summary", "explain", "evaluate_explanations",
           "report", "export", "bench", "plan"]


def plan(data: str = "shapes-volumes", data_dir: str | None = None, out: str | None = "plan.yaml",
         budget: float | None = None, num_cases: int | None = None, seed: int = 0, log=None):
    """nnU-Net's self-configuration: load volumes, fingerprint them, apply the rules; write the plan YAML
    to `out` (None: don't) and return the `Plan` (`cnnkit.plan.Plan`; `cnnkit train --plan` reads the file).

    data: a volume source (shapes-volumes, shapes-slices, nnunet with data_dir) or an nnU-Net raw folder;
    budget: MB of activation memory for the patch and batch (default `cnnkit.plan.DEFAULT_BUDGET_MB`, a CPU's).

    >>> p = plan("shapes-volumes", out=None)            # doctest: +SKIP
    >>> p.patch_size, p.why["patch_size"]               # doctest: +SKIP
    """
    from pathlib import Path

    from .data.volumes import load_volumes
    from .plan import DEFAULT_BUDGET_MB, fingerprint, make_plan
    from .plan.rules import check_budget
    from .registry import CnnkitError

    budget = check_budget(DEFAULT_BUDGET_MB if budget is None else budget)  # before minutes of loading
    if out is not None and not Path(out).expanduser().resolve().parent.is_dir():
        raise CnnkitError(f"{out}: the folder {Path(out).parent} does not exist")
    vs = load_volumes(data, data_dir=data_dir, num_cases=num_cases, seed=seed)
    if log is not None:
        log(f"{vs.name}: {len(vs.cases)} cases, {vs.dims}-D, channels {', '.join(vs.channels)}, classes "
            f"{', '.join(vs.classes)} ({vs.source})")
    result = make_plan(fingerprint(vs), budget=budget)
    if out is not None:
        result.save(out)
    return result
