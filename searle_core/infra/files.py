"""Reading and writing the project's files safely (JSON, YAML, torch files), and the on-disk tensor caches. Writes
go to a temporary file renamed over the target, so a killed process never leaves half a file; read errors name the
file (and line); torch files are never loaded with ``weights_only=False`` (it runs code)."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import pickle
import shutil
import stat
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from searle_core.infra.errors import InputError, first_line
from searle_core.infra.paths import cache_dir, data_dir

# mkstemp creates files readable by their owner only; run files get the usual umask permissions.
UMASK = os.umask(0)
os.umask(UMASK)


class DiskFull(OSError):
    """A write failed for want of space; the message names the path, the free space and the need."""

    def __str__(self) -> str:
        return str(self.strerror)


def _megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def disk_error(err: BaseException, path: Path, needed: int | None = None) -> DiskFull | None:
    """``err`` as a :class:`DiskFull` naming ``path`` when it means the disk is full, else ``None``. torch's
    writer says it as ``RuntimeError: ... unexpected pos 128 vs 0`` (no path, no cause), the OS as ENOSPC/EDQUOT."""
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
    """``write(tmp)`` on a temporary path beside ``path``, renamed over it; on any error ``path`` is untouched."""
    return atomic_write_many({Path(path): write}, needed)[0]


def atomic_write_many(writes: dict[Path, Callable[[str], None]], needed: int | None = None) -> list[Path]:
    """Several files renamed over their targets only once all were written: a failure leaves all as they were."""
    done: list[tuple[str, Path]] = []
    try:
        for path, write in writes.items():
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
    return atomic_write(path, lambda tmp: torch.save(obj, tmp), needed=tensor_bytes(obj))


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj`` (containers walked): about what ``torch.save`` writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        obj = list(obj.values())
    return sum(tensor_bytes(v) for v in obj) if isinstance(obj, (list, tuple)) else 0


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write_text(json.dumps(jsonable(obj), indent=2, sort_keys=True) + "\n", path)


def jsonable(obj: Any) -> Any:
    """Dataclasses, tuples and paths as plain JSON values (hyper-parameters compare as JSON, keys hash it)."""
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
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def content_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, computed once and remembered by path, size, ns mtime and ctime (the cache's
    ``hashes/sha256.json``): files of one name and size, even with copied times, never share a cache entry."""
    path = os.path.abspath(path)
    st, index = os.stat(path), data_dir() / "cache" / "hashes" / "sha256.json"  # not made here: it may fail
    stamp = f"{path}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}"
    if stamp in _CONTENT_HASHES:  # every cache key names the weights: read the index once a process
        return _CONTENT_HASHES[stamp]
    try:
        known = dict(json.loads(index.read_text())) if index.is_file() else {}
    except (OSError, ValueError, TypeError):  # a damaged index is rebuilt: it only saves time
        known = {}
    if not isinstance(known.get(stamp), str):
        known[stamp] = sha256_of(path)
        save_or_warn(lambda: atomic_write_json(known, index), index, "hash index")
    _CONTENT_HASHES[stamp] = known[stamp]
    return known[stamp]


_CONTENT_HASHES: dict[str, str] = {}  # stamp -> SHA-256, what this process has read or computed


def check_output(path: str | os.PathLike, flag: str, force: bool = False, inputs: Iterable = ()) -> Path:
    """Refuse, before any work, an output ``path`` that exists and is not a regular file (a folder, a link, a
    device), that is an existing file among or inside the run's ``inputs``, or that exists unless ``force``."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{flag} {path} exists and is not a regular file (a folder, link or device); give a new path")
    real = path.resolve()
    for given in (Path(g) for g in inputs if g):
        if given.exists() and (real == given.resolve() or given.is_dir() and real.is_relative_to(given.resolve())):
            raise InputError(f"{flag} {path} is an input of this run (in {given}); write the output elsewhere")
    if not force:
        raise InputError(f"{flag} {path} exists; pass --force to replace it, or give another path")
    return path


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
    """A ``json`` ``object_pairs_hook`` refusing a repeated key (``json`` silently keeps the last one)."""

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


def read_json(path: str | os.PathLike, what: str = "JSON file", parse_constant: Callable | None = None) -> Any:
    """Parse a JSON file; invalid JSON, deep nesting, non-UTF-8 bytes and repeated keys name the file (and line)."""
    text = read_text(path := Path(path), what)
    try:
        return json.loads(text, object_pairs_hook=no_duplicate_keys(str(path)), parse_constant=parse_constant)
    except json.JSONDecodeError as err:
        raise InputError(
            f"{path}, line {err.lineno} column {err.colno}: not valid JSON ({err.msg}); expected a {what}"
        ) from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to read; expected a {what}") from None


def check_annotations(
    entries: Any, path: str | os.PathLike, fields: Sequence[str], id_field: str | None = None
) -> list[dict]:
    """A JSON list of objects that all have ``fields``; errors name an entry by ``id_field`` (``None``: position)."""
    if not isinstance(entries, list):
        raise InputError(f"{path}: expected a JSON list of annotations, got a JSON {type(entries).__name__}")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError(f"{path}: annotation #{i} is a JSON {type(entry).__name__}, expected an object")
        if missing := [f for f in fields if f not in entry]:
            which = f"{id_field} {entry[id_field]!r}" if id_field and id_field in entry else f"#{i}"
            raise InputError(
                f"{path}: annotation {which} has no field {missing[0]!r} (expected fields: {', '.join(fields)})"
            )
    return entries


def check_unique(ids: Iterable, path: str | os.PathLike, field: str) -> None:
    """Refuse a table that repeats a key (``field``): a later row would silently replace or shadow the first."""
    counts = Counter(ids)
    if repeated := [i for i, n in counts.items() if n > 1]:
        more, key = f" ({len(repeated)} values repeat)" if len(repeated) > 1 else "", repeated[0]
        key = key if isinstance(key, int) else ascii(key)  # ascii(): a lone surrogate cannot be printed
        raise InputError(f"{path}: {field} {key} appears {counts[repeated[0]]} times{more}; expected each {field} once")


def load_torch_file(path: str | os.PathLike, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` whose failures name the file and ``what`` it should be."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch.load fails in many ways on a damaged file (EOFError, IndexError, ...)
        if isinstance(err, pickle.UnpicklingError) and ("weights_only" in str(err) or "Unsupported global" in str(err)):
            raise InputError(
                f"{path}: refused to load this {what}: it holds Python objects other than tensors and "
                "plain containers, which could run code when loaded"
            ) from None
        raise InputError(f"{path}: damaged or not a torch file (expected a {what}): {first_line(err)}") from None


def cache_file(kind: str, cache: bool | str | Path, key: str, default: str = "features") -> Path | None:
    """The file for ``key`` in ``cache`` (``True``: the project cache's ``default`` folder; ``False``: none)."""
    if not cache:
        return None
    return (cache_dir(default) if cache is True else Path(cache)) / f"{kind}-{key}.pt"  # made when written


def load_cached_tensor(path: Path | None, shape: tuple[int, ...], dtype=torch.float32) -> torch.Tensor | None:
    """The cached tensor at ``path`` if it has ``shape`` and ``dtype``; ``None`` when absent, else (damaged, of
    another shape or type) ``None`` with one line saying the entry is rebuilt."""
    if path is None or not path.is_file():
        return None
    try:
        feats = torch.load(path, weights_only=True)
    except Exception:  # a damaged cache entry is recomputed, never trusted
        feats = None
    if isinstance(feats, torch.Tensor) and tuple(feats.shape) == tuple(shape) and feats.dtype == dtype:
        return feats
    got = f"a {feats.dtype} tensor of shape {tuple(feats.shape)}" if isinstance(feats, torch.Tensor) else "damaged"
    print(f"warning: cache entry {path} is {got}, expected {dtype} {tuple(shape)}; rebuilding it", file=sys.stderr)
    return None


def save_tensor_atomic(path: Path | None, tensor: torch.Tensor) -> None:
    if path is not None:
        save_or_warn(lambda: atomic_save(tensor, path), path, "feature cache")


def save_or_warn(save: Callable[[], object], path: Path, what: str) -> bool:
    """Run ``save()``; a failure to write is said on stderr and the run goes on (a lost cache entry costs time)."""
    try:
        save()
        return True
    except OSError as err:
        print(f"warning: could not write the {what} {path} ({err}); going on without it", file=sys.stderr)
        return False


# ---- YAML read safely: PyYAML keeps the last of two equal keys without a word, and shares aliased nodes,
# so nine levels of nine aliases load in a blink but expand to 9**9 values once copied. Anchors and merge
# keys (``<<: *common``) stay allowed: profiles write shared settings once with them.
#: Values a YAML file may expand to through its aliases (a profile has a few hundred).
MAX_EXPANDED_VALUES = 100_000
MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (``<<`` merges may still be overridden) naming ``self.path``."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node in (k for k, _ in node.value if k.tag != MERGE_TAG):
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    first = seen.setdefault(key, line)
                except TypeError:  # an unhashable key: SafeConstructor reports it
                    continue
                if first != line:
                    raise InputError(
                        f"{self.path}, line {line}: key {key!r} is given twice (first on line {first}); "
                        "keep one, a profile says each thing once"
                    )
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node, path: str | os.PathLike) -> None:
    """Refuse a ``root`` expanding to over :data:`MAX_EXPANDED_VALUES` values (an alias counts at each use)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # a recursive alias counts once (SafeLoader builds it as a cycle)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        if total > MAX_EXPANDED_VALUES:
            raise InputError(
                f"{path}, line {node.start_mark.line + 1}: the value here expands through YAML aliases to "
                f"more than {MAX_EXPANDED_VALUES} values; write the values out or use fewer nested aliases"
            )
        sizes[id(node)] = total
        return total

    size(root)


def load_yaml(text: str, path: str | os.PathLike):
    """The data of one YAML document ``text`` read from ``path`` (``None`` when empty); invalid YAML, a
    key given twice in one mapping or an alias bomb is an InputError naming ``path`` and the line."""
    loader = _Loader(text)
    loader.path = path
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, path)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or first_line(str(err))
        raise InputError(f"{path}{where}: not valid YAML ({problem})") from None
    finally:
        loader.dispose()
