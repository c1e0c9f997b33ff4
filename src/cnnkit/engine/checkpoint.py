"""Checkpoints: `weights.safetensors` + `meta.json`, plus the training state for exact resume.

A checkpoint is a folder. Loading never unpickles: weights and optimizer tensors are
safetensors, everything else is JSON. Writing is atomic: the new folder is written and fsynced
beside the old one, then swapped in with renames, so a crash at any moment leaves the last good
checkpoint readable (under its own name, or under `.<name>.old` for the instant between the two
renames, which `resolve_checkpoint` also accepts).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
try:
    from safetensors import SafetensorError as SafetensorsError
except ImportError:  # pragma: no cover - older safetensors
    SafetensorsError = Exception
from safetensors.torch import load_file, save_file

from ..registry import CnnkitError

WEIGHTS, META, STATE_T, STATE_J = "weights.safetensors", "meta.json", "state.safetensors", "state.json"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    # safetensors refuses shared or non-contiguous storage: give it plain CPU copies.
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(path))
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts, lists, tensors, scalars) into {path: tensor} and a JSON skeleton."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(o, path):
        if isinstance(o, torch.Tensor):
            tensors[path] = o
            return {"__tensor__": path}
        if isinstance(o, dict):
            return {"__dict__": [[walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")] for i, (k, v) in enumerate(o.items())]}
        if isinstance(o, (list, tuple)):
            return {"__list__" if isinstance(o, list) else "__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(o)]}
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        raise TypeError(f"cannot store {type(o).__name__} in a checkpoint")

    return tensors, walk(obj, prefix or "s")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    def walk(o):
        if isinstance(o, dict):
            if "__tensor__" in o:
                return tensors[o["__tensor__"]]
            if "__dict__" in o:
                return {walk(k): walk(v) for k, v in o["__dict__"]}
            if "__list__" in o:
                return [walk(v) for v in o["__list__"]]
            if "__tuple__" in o:
                return tuple(walk(v) for v in o["__tuple__"])
        return o

    return walk(skeleton)


def save_checkpoint(path: str | Path, weights: dict[str, torch.Tensor], meta: dict, state: dict | None = None) -> Path:
    """Write a checkpoint folder atomically. `state` (optimizer, EMA, counters) enables exact resume."""
    path = Path(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{path.name}.tmp"
    old = parent / f".{path.name}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _save_tensors(tmp / WEIGHTS, weights)
    if state is not None:
        tensors, skeleton = flatten_state(state)
        _save_tensors(tmp / STATE_T, tensors)
        _write_json(tmp / STATE_J, skeleton)
    _write_json(tmp / META, meta)  # meta last: its presence marks a complete folder
    _fsync_dir(tmp)
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync_dir(parent)
    shutil.rmtree(old, ignore_errors=True)
    return path


def resolve_checkpoint(path: str | Path, prefer: str = "best") -> Path:
    """A run folder, a checkpoint folder or a file inside one -> the checkpoint folder.

    In a run folder `prefer` (best or last) is taken first, then the other; each also under its
    `.<name>.old` name, which is all that exists for the instant between save_checkpoint's renames.
    """
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not p.exists() and not (p.parent / f".{p.name}.old").exists():
        raise CnnkitError(f"no run or checkpoint at {p}")
    other = "last" if prefer == "best" else "best"
    candidates = [p, p.parent / f".{p.name}.old"]  # a checkpoint folder itself
    for name in (prefer, other):  # or a run folder
        candidates += [p / name, p / f".{name}.old"]
    for c in candidates:
        if (c / META).is_file() and (c / WEIGHTS).is_file():
            return c
    raise CnnkitError(f"{p} holds no checkpoint (expected {META} and {WEIGHTS}, or best/ and last/ inside a run)")


def load_meta(ckpt: Path) -> dict:
    try:
        return json.loads((ckpt / META).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CnnkitError(f"checkpoint metadata {ckpt / META} is unreadable: {e}") from None


def load_weights(ckpt: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(ckpt / WEIGHTS), device=str(device))
    except (SafetensorsError, OSError, ValueError) as e:
        raise CnnkitError(f"checkpoint weights {ckpt / WEIGHTS} are unreadable or corrupt: {e}") from None


def load_state(ckpt: Path, device: str | torch.device = "cpu") -> dict:
    if not (ckpt / STATE_J).exists():
        raise CnnkitError(f"{ckpt} has no training state to resume from (use the run's last/ checkpoint)")
    try:
        skeleton = json.loads((ckpt / STATE_J).read_text())
        tensors = load_file(str(ckpt / STATE_T), device=str(device))
    except (SafetensorsError, OSError, ValueError) as e:
        raise CnnkitError(f"training state in {ckpt} is unreadable or corrupt: {e}") from None
    return unflatten_state(skeleton, tensors)


def load_into(model: torch.nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    """Load weights, turning a mismatch (another model, other classes) into one readable line."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    bad = [k for k in weights if k in own and weights[k].shape != own[k].shape]
    if missing or unexpected or bad:
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(bad)} of another shape"
                  + (f" (e.g. {bad[0]}: {tuple(weights[bad[0]].shape)} vs {tuple(own[bad[0]].shape)})" if bad else ""))
        raise CnnkitError(f"{what} does not fit this model: {detail}")
    model.load_state_dict(weights)
