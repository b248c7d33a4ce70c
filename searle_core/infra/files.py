"""Files written atomically: a temporary file beside the target, renamed over it.

A rename is atomic on POSIX file systems, so a process killed while writing leaves the previous
version or the new one, never half a file. Every file the package writes that another run may read
(caches, run folders, records, tables, downloads) goes through :func:`atomic_write`.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# mkstemp creates files readable by their owner only; run files get the usual umask permissions.
UMASK = os.umask(0)
os.umask(UMASK)


class DiskFull(OSError):
    """A write failed for want of space: the message names the path, the free space and the need."""

    def __str__(self) -> str:
        return str(self.strerror)


def _megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def disk_error(err: BaseException, path: Path, needed: int | None = None) -> DiskFull | None:
    """``err`` as a :class:`DiskFull` naming ``path`` when it means the disk is full, else ``None``.

    torch's writer reports a full disk as ``RuntimeError: [enforce fail at inline_container.cc:672]
    . unexpected pos 128 vs 0`` (no path, no cause); the OS as ``ENOSPC`` or ``EDQUOT``.
    """
    torch_write = isinstance(err, RuntimeError) and any(
        mark in str(err) for mark in ("inline_container", "PytorchStreamWriter", "unexpected pos")
    )
    if not torch_write and not (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)):
        return None
    try:
        free = f"{_megabytes(shutil.disk_usage(path.parent).free)} free"
    except OSError:
        free = "free space unknown"
    need = f", about {_megabytes(needed)} needed" if needed else ""
    cause = "the disk is full (no space left on device" if not torch_write else "the disk is full or failing (torch"
    return DiskFull(
        errno.ENOSPC,
        f"{path}: could not be written: {cause}; {free}{need}); free some space or write elsewhere, "
        "then run again (nothing was half-written)",
    )


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], needed: int | None = None) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it over ``path``.

    Args:
        path: the target (its folder is created).
        write: writes the whole file at the path it is given.
        needed: bytes the file takes, if known (said when the disk is full).

    Returns:
        ``path``. On any error (or interruption) the temporary file is removed and ``path`` is untouched.

    Raises:
        DiskFull: the disk is full (an ``OSError`` naming ``path``, the free space and ``needed``).
    """
    return atomic_write_many({Path(path): write}, needed)[0]


def atomic_write_many(writes: dict[Path, Callable[[str], None]], needed: int | None = None) -> list[Path]:
    """Several files, each written to a temporary name; renamed over their targets only once all
    were written, so a failure (a full disk) leaves every target as it was, never some of them new."""
    done: list[tuple[str, Path]] = []
    try:
        for path, write in writes.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            done.append((tmp, path))
            try:
                write(tmp)
                os.chmod(tmp, 0o666 & ~UMASK)
            except (OSError, RuntimeError) as err:
                full = disk_error(err, path, needed)
                if full is None:
                    raise
                raise full from None
        for tmp, path in done:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in done:
            Path(tmp).unlink(missing_ok=True)
        raise
    return [path for _, path in done]


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp), needed=tensor_bytes(obj))


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj`` (dicts, lists, tuples walked): about what ``torch.save`` writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


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
