"""Files written atomically: a temporary file beside the target, renamed over it.

A rename is atomic on POSIX file systems, so a process killed while writing leaves the previous
version or the new one, never half a file. Every file the package writes that another run may read
(caches, run folders, records, tables, downloads) goes through :func:`atomic_write`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# mkstemp creates files readable by their owner only; run files get the usual umask permissions.
UMASK = os.umask(0)
os.umask(UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it over ``path``.

    Args:
        path: the target (its folder is created).
        write: writes the whole file at the path it is given.

    Returns:
        ``path``. On any error (or interruption) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write text atomically (same rule as :func:`atomic_save`)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write_text(json.dumps(jsonable(obj), indent=2, sort_keys=True) + "\n", path)


def jsonable(obj: Any) -> Any:
    """Dataclasses, tuples and paths as plain JSON values (hyper-parameters compare as JSON; cache keys hash it)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write bytes atomically (same rule as :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def digest(*parts: Any, length: int = 12) -> str:
    """Short stable hash of JSON-able parts (configs are passed through :func:`jsonable`)."""
    payload = json.dumps([jsonable(p) for p in parts], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]
