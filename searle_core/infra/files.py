"""Reading and writing the project's files safely.

Writes go to a temporary file beside the target, renamed over it (atomic on POSIX), so a process
killed while writing leaves the previous version or the new one, never half a file. Reads of
user-supplied files name the file (and line) when they fail: invalid JSON, non-UTF-8 bytes, a repeated
key or query id, a damaged torch file (never loaded with ``weights_only=False``, which would run
whatever code the file carries).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from searle_core.infra.errors import InputError, first_line

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

    torch's writer says a full disk as ``RuntimeError: [enforce fail at inline_container.cc:672]
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
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it over ``path``; on any
    error the temporary file goes and ``path`` is untouched (a full disk: :class:`DiskFull`, which says
    the ``needed`` bytes)."""
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
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp), needed=tensor_bytes(obj))


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj`` (dicts, lists, tuples walked): about what ``torch.save`` writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        obj = list(obj.values())
    return sum(tensor_bytes(v) for v in obj) if isinstance(obj, (list, tuple)) else 0


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


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


def digest(*parts: Any, length: int = 12) -> str:
    """Short stable hash of JSON-able parts (configs are passed through :func:`jsonable`)."""
    payload = json.dumps([jsonable(p) for p in parts], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in blocks."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def check_writable(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create the folder ``path`` if needed and prove a file can be written there, before long work."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".searle-write-test."):
            pass
    except OSError as err:
        raise InputError(f"{what} {path} is not writable ({err.strerror or err}); nothing was computed") from None
    return path


def no_duplicate_keys(label: str) -> Callable[[list[tuple[str, Any]]], dict]:
    """A ``json`` ``object_pairs_hook`` refusing a repeated key, which ``json`` would silently keep the
    last of (dropping data from a prediction or annotation file); ``label`` names the file."""

    def hook(pairs: list[tuple[str, Any]]) -> dict:
        result = dict(pairs)
        if len(result) != len(pairs):
            counts = Counter(k for k, _ in pairs)
            key = next(k for k, n in counts.items() if n > 1)
            raise InputError(
                f"{label}: key {key!r} appears {counts[key]} times in one JSON object; expected each key once"
            )
        return result

    return hook


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The UTF-8 text of ``path``; non-UTF-8 bytes are an error naming the file and the byte offset."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
            f"expected a UTF-8 {what}"
        ) from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Parse a JSON file; invalid JSON, non-UTF-8 bytes and repeated keys name the file (and line);
    ``what`` says what the file is ("CIRCO annotation file")."""
    path = Path(path)
    text = read_text(path, what)
    try:
        return json.loads(text, object_pairs_hook=no_duplicate_keys(str(path)))
    except json.JSONDecodeError as err:
        raise InputError(
            f"{path}, line {err.lineno} column {err.colno}: not valid JSON ({err.msg}); expected a {what}"
        ) from None


def check_annotations(
    entries: Any, path: str | os.PathLike, fields: Sequence[str], id_field: str | None = None
) -> list[dict]:
    """A JSON list of objects that all have ``fields`` and unique ``id_field`` values (CIRCO ``id``, CIRR
    ``pairid``; ``None``: entries known by position, as FashionIQ's)."""
    if not isinstance(entries, list):
        raise InputError(f"{path}: expected a JSON list of annotations, got a JSON {type(entries).__name__}")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError(f"{path}: annotation #{i} is a JSON {type(entry).__name__}, expected an object")
        missing = [f for f in fields if f not in entry]
        if missing:
            which = f"{id_field} {entry[id_field]!r}" if id_field and id_field in entry else f"#{i}"
            raise InputError(
                f"{path}: annotation {which} has no field {missing[0]!r} (expected fields: {', '.join(fields)})"
            )
    if id_field:
        check_unique((str(e[id_field]) for e in entries), path, id_field)
    return entries


def check_unique(ids: Iterable[str], path: str | os.PathLike, field: str) -> None:
    """Refuse repeated query ids: a later copy would silently replace or shadow the first."""
    counts = Counter(ids)
    repeated = [i for i, n in counts.items() if n > 1]
    if repeated:
        more = f" ({len(repeated)} ids repeat)" if len(repeated) > 1 else ""
        raise InputError(
            f"{path}: {field} {repeated[0]} appears {counts[repeated[0]]} times{more}; expected unique query ids"
        )


def load_torch_file(path: str | os.PathLike, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` whose failures name the file and ``what`` it should be
    ("φ checkpoint"): ``FileNotFoundError``, or :class:`InputError` for a damaged file or one holding
    objects other than tensors and plain containers (refused, never executed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise InputError(
                f"{path}: refused to load this {what}: it holds Python objects other than tensors and "
                "plain containers, which could run code when loaded"
            ) from None
        raise InputError(f"{path}: damaged or not a torch file (expected a {what}): {first_line(err)}") from None
    except FileNotFoundError:
        raise
    except Exception as err:  # torch.load fails in many ways on a damaged file (EOFError, IndexError, ...)
        raise InputError(f"{path}: damaged or not a torch file (expected a {what}): {first_line(err)}") from None
