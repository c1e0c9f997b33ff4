"""The model zoo: one module per architecture family, each registering its variants.

Every module in this package is imported on first use, so adding a family is adding a file.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..registry import MODELS, CnnkitError

_loaded = False


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Registered model names matching a shell-style pattern, sorted; with `task`, only the models whose
    default_cfg names that task ("classify" for those that name none)."""
    _load_all()
    names = MODELS.list(pattern)
    if task is not None:
        from ..tasks import task_of

        names = [n for n in names if task_of(n) == task]
    return names


def create_model(name: str, num_classes: int | None = None, in_chans: int | None = None,
                 weights: str | None = None, **kwargs):
    """Build a model by name: a registered one, `tv:<torchvision name>` or `timm:<timm name>`.

    Every builder takes `num_classes` and `in_chans`; left as None, the builder's own defaults
    apply (1000 ImageNet classes for the classic networks, 10 for the small-image ones).
    `weights` is a file on disk (a torchvision `.pth` state dict or cnnkit `.safetensors`) of the
    same architecture; the classifier is replaced when `num_classes` differs from it.
    """
    from ._external import PREFIXES, create_external, create_with_weights

    _load_all()
    if name.startswith(PREFIXES):
        def build(nc=num_classes, ic=in_chans):
            return create_external(name, nc, ic, **kwargs)
    else:
        builder = MODELS.get(name)

        def build(nc=num_classes, ic=in_chans):
            kw = dict(kwargs)
            if nc is not None:
                kw["num_classes"] = nc
            if ic is not None:
                kw["in_chans"] = ic
            try:
                return builder(**kw)
            except TypeError as e:  # an unknown keyword reaches the builder
                raise CnnkitError(f"model {name!r}: {e}") from None

    if weights:
        return create_with_weights(lambda: build(None, None), weights, num_classes, in_chans)
    return build()


def load_torchvision_weights(model, state_dict, strict: bool = True):
    """Copy a torchvision state dict into the matching cnnkit model (see models/_tv.py)."""
    from ._tv import load_torchvision_weights as _load

    return _load(model, state_dict, strict)
