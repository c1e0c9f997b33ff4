"""Small helpers every part of cnnkit shares, each written once.

- `atomic_write_text` / `atomic_write_bytes`: write beside the target, fsync, rename -- a reader (or
  a crash) never sees half a file.
- `first_line(e)`: the one line of an exception a user is shown.
- `class_names(meta)`: a checkpoint's class names, or "0", "1", ... when it has none.
- `parse_input_size(text)`: one syntax for input sizes everywhere: "3x224x224", "3,224,224", "224".
- `CnnkitWarning`: warnings printed as one plain line ("warning: ..."), not Python's file:line form.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from .registry import CnnkitError


def _fsync_and_replace(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    try:  # the rename itself reaches the disk with the folder's fsync
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some file systems refuse fsync on folders; the rename is still atomic
        pass


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _fsync_and_replace(tmp, path)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def first_line(e: BaseException, with_type: bool = False) -> str:
    """The first line of `e`'s message (its type name when it has none); `with_type` prefixes the
    type for errors that are not cnnkit's own (a user error reads better without it)."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    if with_type and text and not isinstance(e, CnnkitError):
        return f"{type(e).__name__}: {line}"
    return line


def class_names(meta: dict) -> list[str]:
    return [str(c) for c in (meta.get("classes") or range(int(meta.get("num_classes", 0))))]


def parse_input_size(text, what: str = "--input") -> tuple | int | None:
    """'CxHxW' or 'C,H,W' -> (C, H, W); 'H' -> H (square; channels from the data or the model); a tuple,
    list or int passes through checked; None -> None."""
    if text is None:
        return None
    if isinstance(text, (tuple, list, int)) and not isinstance(text, bool):
        parts = (text,) if isinstance(text, int) else tuple(text)
    else:
        try:
            parts = tuple(int(v) for v in str(text).lower().replace(",", "x").split("x"))
        except ValueError:
            parts = ()
    if len(parts) not in (1, 3) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in parts):
        raise CnnkitError(f"{what} expects CxHxW such as 3x224x224 (or 3,224,224, or one size such as 224), "
                          f"got {text!r}")
    return parts[0] if len(parts) == 1 else parts


class CnnkitWarning(UserWarning):
    """Something the user should know that does not stop the work (skipped files, clipped boxes)."""


def warn(message: str) -> None:
    warnings.warn(message, CnnkitWarning, stacklevel=2)


_format = warnings.formatwarning


def _plain(message, category, filename, lineno, line=None):
    if isinstance(category, type) and issubclass(category, CnnkitWarning):
        return f"warning: {message}\n"
    return _format(message, category, filename, lineno, line)


warnings.formatwarning = _plain
