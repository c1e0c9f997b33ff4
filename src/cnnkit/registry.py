"""Name -> builder registries for models, datasets and tasks.

A registry is a dict filled by a decorator. Duplicate names raise; unknown names raise a
`CnnkitError` that suggests the closest known names. Listing uses shell-style patterns
(`list_models("resnet*")`), so the CLI, the tests and the tools never keep lists by hand.
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Dict, Iterable, List


class CnnkitError(Exception):
    """A user error: the CLI prints its message on one line and exits non-zero."""


def suggest(name: str, choices: Iterable[str], what: str) -> CnnkitError:
    """An error for an unknown `name` of kind `what`, naming the closest `choices`."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    known = ", ".join(choices) if len(choices) <= 12 else ", ".join(choices[:12]) + ", ..."
    return CnnkitError(f"unknown {what} {name!r}.{hint} Known: {known}")


class Registry:
    def __init__(self, what: str):
        self.what = what
        self._items: Dict[str, Callable] = {}

    def register(self, fn: Callable | None = None, *, name: str | None = None):
        def deco(f: Callable) -> Callable:
            key = name or f.__name__
            if key in self._items:
                raise ValueError(f"{self.what} {key!r} is registered twice")
            self._items[key] = f
            return f

        return deco(fn) if fn is not None else deco

    def get(self, name: str) -> Callable:
        if name not in self._items:
            raise suggest(name, self._items, self.what)
        return self._items[name]

    def list(self, pattern: str = "*") -> List[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)


MODELS = Registry("model")
DATASETS = Registry("dataset")
TASKS = Registry("task")

register_model = MODELS.register
register_dataset = DATASETS.register
register_task = TASKS.register
