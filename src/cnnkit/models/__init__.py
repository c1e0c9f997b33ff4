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


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    _load_all()
    return MODELS.list(pattern)


def create_model(name: str, num_classes: int | None = None, in_chans: int | None = None, **kwargs):
    """Build a registered model by name.

    Every builder takes `num_classes` and `in_chans`; left as None, the builder's own defaults
    apply (1000 ImageNet classes for the classic networks, 10 for the small-image ones).
    """
    _load_all()
    builder = MODELS.get(name)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    try:
        return builder(**kwargs)
    except TypeError as e:  # an unknown keyword reaches the builder
        raise CnnkitError(f"model {name!r}: {e}") from None
