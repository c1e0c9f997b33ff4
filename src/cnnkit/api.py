"""The public Python API; `cnnkit.<name>` re-exports these, and each CLI command calls one of them."""
from __future__ import annotations

from .config import TrainConfig, resolve


def train(config: str | None = None, resume: str | None = None, log=print, stop_after: int | None = None, **options):
    """Train with `options` (keys of TrainConfig) over an optional YAML `config`; or `resume` a run.

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
        return fit(cfg, resume=run, stop_after=stop_after, log=log)
    cfg = resolve(options, config_file=config)
    return fit(cfg, stop_after=stop_after, log=log)


def evaluate(run: str, **kwargs) -> dict:
    """Evaluate a run or checkpoint on its validation split; returns loss, acc, confusion, logits, ..."""
    from .engine.inference import evaluate_checkpoint

    return evaluate_checkpoint(run, **kwargs)


def predict(checkpoint: str, images: list, topk: int = 5, device: str = "auto") -> list[dict]:
    """Top-k predictions for image files."""
    from .engine.inference import predict_images

    return predict_images(checkpoint, images, topk=topk, device=device)


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


EXPLAIN_METHODS = ("cam", "gradcam", "gradcam_pp", "guided_backprop", "guided_gradcam", "featuremaps", "filters")


def explain(checkpoint: str, images: list, method: str = "gradcam", layer: str | None = None,
            target: str | int | None = None, out: str | None = None) -> "Path":
    """Explain a trained model's predictions on image files and write a PNG figure; returns its path.

    Heat-map methods draw one row per image; `featuremaps` shows the layer's activations for the
    first image, `filters` the first convolution's kernels. `target` is a class name or index
    (default: the predicted class).
    """
    from pathlib import Path

    import torch

    import importlib

    from .data.loader import Preprocess
    from .engine.inference import load_checkpoint_model, load_image
    from .explain import plot
    from .registry import CnnkitError, suggest

    ex = importlib.import_module("cnnkit.explain")  # the package: `explain` here is this function

    if method not in EXPLAIN_METHODS:
        raise suggest(method, EXPLAIN_METHODS, "explain method")
    model, meta, folder = load_checkpoint_model(checkpoint)
    c, h, w = meta["input_size"]
    classes = meta.get("classes") or [str(i) for i in range(meta["num_classes"])]
    if isinstance(target, str) and not target.isdigit():
        if target not in classes:
            raise suggest(target, classes, "class")
        target = classes.index(target)
    elif target is not None:
        target = int(target)
        if not 0 <= target < len(classes):
            raise CnnkitError(f"target class {target} is out of range (0..{len(classes) - 1})")
    batch = torch.stack([load_image(p, c, (h, w)) for p in images])
    x = Preprocess(meta["mean"], meta["std"], "cpu")(batch)
    run = folder.parent if folder.name in ("best", "last") else folder
    path = Path(out) if out else run / "explain" / f"{method}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if method == "filters":
        return plot.save_filters(path, ex.filters(model))
    if method == "featuremaps":
        return plot.save_feature_maps(path, ex.feature_maps(model, x[:1], layer=layer))
    fn = getattr(ex, method)
    kwargs = {"layer": layer} if method in ("gradcam", "gradcam_pp", "guided_gradcam") else {}
    maps = fn(model, x, target=target, **kwargs)
    with torch.no_grad():
        pred = model(x).argmax(1).tolist()
    titles = [f"{Path(p).name}: {classes[k]}" for p, k in zip(images, pred)]
    return plot.save_heatmaps(path, x, {method: maps}, mean=meta["mean"], std=meta["std"], titles=titles)


__all__ = ["TrainConfig", "train", "evaluate", "predict", "load_model", "summary", "explain"]
