"""From a method name to a PNG: what `cnnkit explain RUN IMAGE... --method M` draws.

`resolve_method` turns a user's name (aliases such as "gradcam++" included) into one of `METHODS`;
`draw` runs the method on a model and writes the figure. Methods that need no image (`filters`,
`actmax`, `erf`) accept an empty batch. Everything goes through the model interface, so the same
figure works for any registered model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from ..registry import CnnkitError, suggest
from . import plot
from ._core import input_size, resolve_layer
from .cam import cam, gradcam, gradcam_pp, guided_backprop, guided_gradcam, layercam
from .erf import effective_receptive_field, erf_extent, receptive_field_table
from .features import activation_maximization, feature_maps, filters
from .inversion import invert_depths

METHODS: Dict[str, str] = {
    "cam": "class activation map (global-average-pool -> linear heads)",
    "gradcam": "Grad-CAM heat map at --layer",
    "gradcam_pp": "Grad-CAM++ heat map at --layer",
    "layercam": "LayerCAM heat map at --layer (sharp at earlier, finer layers)",
    "guided_backprop": "guided backpropagation (input gradients)",
    "guided_gradcam": "guided backprop times Grad-CAM",
    "featuremaps": "activations of --layer for the first image",
    "filters": "the first convolution's kernels",
    "inversion": "the image reconstructed from the features at each depth (TV prior)",
    "erf": "effective receptive field of a central unit, with the analytic receptive field box",
    "actmax": "inputs that maximise channels of --layer (activation maximisation)",
}
ALIASES = {"gradcam++": "gradcam_pp", "grad-cam": "gradcam", "grad_cam": "gradcam", "grad-cam++": "gradcam_pp",
           "feature_maps": "featuremaps", "activation_maximization": "actmax", "activation_maximisation": "actmax",
           "receptive_field": "erf", "guided": "guided_backprop"}
IMAGE_FREE = ("filters", "actmax", "erf")  # methods that run without an input image
HEATMAPS = ("cam", "gradcam", "gradcam_pp", "layercam", "guided_backprop", "guided_gradcam")
_LAYERED = {"gradcam": gradcam, "gradcam_pp": gradcam_pp, "layercam": layercam, "guided_gradcam": guided_gradcam}
_LABELS = {"cam": "CAM", "gradcam": "Grad-CAM", "gradcam_pp": "Grad-CAM++", "layercam": "LayerCAM",
           "guided_backprop": "guided backprop", "guided_gradcam": "guided Grad-CAM"}


def resolve_method(name: str) -> str:
    """The canonical method name for `name` (case and aliases forgiven); unknown names raise with a suggestion."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in METHODS:
        raise suggest(str(name), list(METHODS) + ["gradcam++"], "explain method")
    return key


def _stages(model: nn.Module, layer: Optional[str]) -> list:
    """[(module name, reduction or None)]: `layer` alone, or every feature_info stage from shallow to deep."""
    if layer is not None:
        name, _ = resolve_layer(model, layer)
        info = {d["module"]: d.get("reduction") for d in getattr(model, "feature_info", None) or []}
        return [(name, info.get(name))]
    info = getattr(model, "feature_info", None) or []
    if not info:
        name, _ = resolve_layer(model, None)  # raises the "no feature_info" error
    return [(d["module"], d.get("reduction")) for d in info]


def _stage_title(name: str, reduction) -> str:
    return f"{name} (stride {reduction})" if reduction else name


def draw(method: str, model: nn.Module, x: torch.Tensor, path, layer: Optional[str] = None, target=None,
         mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         titles: Sequence[str] | None = None, classes: Sequence[str] | None = None,
         steps: Optional[int] = None) -> Path:
    """Run `method` on `model` and write its PNG to `path`; returns the path.

    x (B, C, H, W) is the normalised input (B may be 0 for `IMAGE_FREE` methods); mean/std undo the
    normalisation for display; `titles` label the image rows; `classes` name the classifier's
    outputs; `steps` sets the optimisation length of `inversion` (default 200) and `actmax` (128)."""
    method = resolve_method(method)
    if x.shape[0] == 0 and method not in IMAGE_FREE:
        raise CnnkitError(f"explain method {method!r} needs at least one IMAGE; only {', '.join(IMAGE_FREE)} "
                          "run without one")
    if method == "filters":
        k = filters(model)  # (O, I, kh, kw)
        return plot.save_filters(path, k, title=f"{k.shape[0]} first-layer kernels {k.shape[2]}x{k.shape[3]} "
                                                f"({model.default_cfg['first_conv']}), each stretched to [0, 1]")
    if method == "featuremaps":
        return plot.save_feature_maps(path, feature_maps(model, x[:1], layer=layer))
    if method == "inversion":
        return _inversion(model, x, path, layer, mean, std, titles, steps or 200)
    if method == "erf":
        return _erf(model, x, path, layer)
    if method == "actmax":
        return _actmax(model, path, layer, mean, std, classes, steps or 128)
    label = _LABELS[method]
    if method in _LAYERED:
        maps = _LAYERED[method](model, x, target=target, layer=layer)
        label += f" @ {resolve_layer(model, layer)[0]}"
    elif method == "cam":
        maps = cam(model, x, target=target)
    else:
        maps = guided_backprop(model, x, target=target)
    return plot.save_heatmaps(path, x, {label: maps}, mean=mean, std=std, titles=titles)


def _inversion(model, x, path, layer, mean, std, titles, steps) -> Path:
    x = x[:4]  # the first four images: each costs one optimisation per depth
    stages = _stages(model, layer)
    results = invert_depths(model, x, [name for name, _ in stages], steps=steps)
    for r, (name, red) in zip(results, stages):
        r["title"] = _stage_title(name, red)
    return plot.save_inversions(path, x, results, mean=mean, std=std, row_titles=titles)


def _erf(model, x, path, layer) -> Path:
    panels = []
    shape = tuple(x.shape[1:]) if x.shape[0] else tuple(model.default_cfg["input_size"])
    rf = receptive_field_table(model, shape)  # one trace for all the stages
    for name, red in _stages(model, layer):
        if x.shape[0]:
            erf, box = effective_receptive_field(model, layer=name, x=x, rf=rf)
        else:
            erf, box = effective_receptive_field(model, shape, layer=name, n=16, rf=rf)
        size = f"RF {box[2] - box[0]:.0f} px" if box is not None else "RF ?"
        panels.append(dict(erf=erf, box=box, title=f"{_stage_title(name, red)}\n{size}, 95 % of ERF in "
                                                   f"{erf_extent(erf)} px"))
    n = x.shape[0]
    source = f"over {n} image{'s' if n > 1 else ''}" if n else "over 16 noise inputs"
    return plot.save_erfs(path, panels, suptitle=f"effective receptive field of the central unit ({source}); "
                                                 "box: analytic receptive field")


def _actmax(model, path, layer, mean, std, classes, steps) -> Path:
    name, _ = resolve_layer(model, layer)
    chans = feature_maps(model, torch.zeros((1,) + input_size(model)), layer=name).shape[1]  # (1, K, h, w)
    fc = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(fc, nn.Linear) and fc.in_features == chans and classes:
        # the last stage feeds the classifier: show, per class, the channel with the largest weight
        picks = fc.weight.detach().argmax(1).tolist()[:16]
        labels = [f"ch {k} -> {classes[i]}" for i, k in enumerate(picks)]
    else:
        picks = list(range(min(chans, 16)))
        labels = [f"ch {k}" for k in picks]
    # tv 2: the default 0.05 leaves pixel-level stripes on a trained net; 2 keeps ~85 % of the objective
    # (measured, fastnet on shapes) and shows the pattern's orientation and scale plainly
    imgs, hist = activation_maximization(model, name, channel=picks, steps=steps, tv_weight=2.0)
    labels = [f"{t}\nact {float(a):.1f}" for t, a in zip(labels, hist[-1])]
    return plot.save_grid(path, imgs, titles=labels, ncols=min(len(picks), 8), mean=mean, std=std, cell=1.4,
                          suptitle=f"activation maximisation: inputs that drive channels of {name} highest "
                                   "(mean activation)")
