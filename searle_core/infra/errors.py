"""Bad inputs as one-line errors naming the file, field or value, found before any work starts.

Every reader of a user-supplied file goes through these helpers, so a malformed JSON file says
which file and which line, a repeated key or query id is refused instead of silently overwritten,
and a damaged torch file names itself without suggesting ``weights_only=False`` (which would run
whatever code the file carries). The CLI prints an :class:`InputError` as ``searle CMD: error: ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """A file, field or value the user gave is unusable; the message names it."""


def first_line(text: str, limit: int = 160) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def no_duplicate_keys(label: str) -> Callable[[list[tuple[str, Any]]], dict]:
    """A ``json`` ``object_pairs_hook`` that refuses an object with a repeated key.

    ``json`` keeps the last copy of a repeated key without a word; for a prediction or annotation
    file that silently drops data.

    Args:
        label: the file, as error messages name it.
    """

    def hook(pairs: list[tuple[str, Any]]) -> dict:
        result = dict(pairs)
        if len(result) != len(pairs):  # the rare case: find the key to name
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
    """Parse a JSON file; invalid JSON, non-UTF-8 bytes and repeated keys name the file (and line).

    Args:
        path: the file.
        what: what the file is, for messages ("CIRCO annotation file").
    """
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
    """A JSON list of objects that all have ``fields`` and unique ``id_field`` values.

    Args:
        entries: the parsed JSON.
        path: the file it came from.
        fields: fields every entry needs.
        id_field: the query id field (CIRCO ``id``, CIRR ``pairid``): must be unique (``None``:
            entries are known by position, as FashionIQ's).

    Raises:
        InputError: naming the file, the entry and the field or id.
    """
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
    """``torch.load(path, weights_only=True)`` whose failures name the file and what it should be.

    Args:
        path: the file.
        what: what it should be ("φ checkpoint", "OTI chunk").
        map_location: as ``torch.load``.

    Raises:
        FileNotFoundError: no such file.
        InputError: a damaged or non-torch file, or one holding objects other than tensors and plain
            containers (refused, never executed).
    """
    import torch

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


def check_writable(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` (a folder) if needed and prove a file can be written there, before long work.

    Args:
        path: the folder.
        what: what it is, for the message ("--out folder").
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".searle-write-test."):
            pass
    except OSError as err:
        raise InputError(f"{what} {path} is not writable ({err.strerror or err}); nothing was computed") from None
    return path


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _bounded_int(text, 1)


#: Seeds both torch and numpy take: torch.manual_seed fails above ("Overflow when unpacking long
#: long"), numpy's default_rng (bootstrap intervals, benchmark images) below 0 ("expected non-negative").
SEED_RANGE = (0, 2**64 - 1)
#: The largest count torch can take (a 64-bit integer); beyond it a count is an error naming the flag.
INT64_MAX = 2**63 - 1
#: The paper's step and epoch counts, named in messages.
PAPER_COUNTS = {"steps": 350, "epochs": 100}
#: Counts above these are accepted with a one-line warning that estimates the time they take (a
#: typing slip such as 10**12 steps would otherwise run for years without a word).
WARN_COUNTS = {"steps": 100_000, "epochs": 10_000}
#: The estimate's cost of one optimisation step, a documented lower bound rather than a measurement
#: (parsing a flag must not load a model): a step is one forward and one backward pass of CLIP's text
#: encoder (a few hundred GPU kernels of >= ~5 us each), so no backbone on any device does one in under
#: 1 ms; the smallest, shapes-clip, took 150 ms a step for a batch of 32 on one loaded CPU thread
#: (``searle bench oti --backbone shapes-clip --pretrained none --device cpu --threads 1``). An epoch of
#: φ is at least one step. The warning therefore says "at least".
MIN_STEP_SECONDS = 1e-3


def _checked_int(text: str, what: str, problem_of: Callable[[int], str | None]) -> int:
    """``text`` as an integer that ``problem_of`` accepts, else an argparse error saying why."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer{what}") from None
    problem = problem_of(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def seed_int(text: str) -> int:
    """argparse type: a seed torch and numpy accept (:data:`SEED_RANGE`)."""
    return _checked_int(text, " seed", seed_problem)


def seed_problem(value: object) -> str | None:
    """Why ``value`` cannot be a seed (not an integer, outside :data:`SEED_RANGE`), or ``None``."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{value!r} is not an integer seed"
    low, high = SEED_RANGE
    if not low <= value <= high:
        return f"{value} is outside the seed range {low} .. {high} (what torch and numpy both take)"
    return None


def count_problem(value: object) -> str | None:
    """Why ``value`` cannot be a step or epoch count (not an integer >= 1 that torch can take), or ``None``."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{value!r} is not an integer count"
    if value < 1:
        return f"{value} is not allowed; expected an integer >= 1"
    if value > INT64_MAX:
        return f"{value} is more than torch can take; expected an integer from 1 to {INT64_MAX} (64 bits)"
    return None


def count_warning(value: int, kind: str) -> str | None:
    """For a count far above the paper's (:data:`WARN_COUNTS`): what it is and the least time it takes.

    Args:
        value: the count (already checked by :func:`count_problem`).
        kind: ``"steps"`` (OTI's steps per batch, or another optimiser's) or ``"epochs"`` (φ's).

    Returns:
        ``None`` for a sensible count; else a sentence, without the flag or key that the caller names.
    """
    if value <= WARN_COUNTS[kind]:
        return None
    paper = PAPER_COUNTS[kind]
    per = "each batch of images" if kind == "steps" else "the run"
    return (
        f"{value} {kind} is {value / paper:.3g} times the paper's {paper}: at {MIN_STEP_SECONDS * 1000:g} ms a step "
        f"(a lower bound, the fastest any backbone runs) {per} takes at least {duration(value * MIN_STEP_SECONDS)}; "
        "pass a smaller count unless you mean it (Ctrl-C stops the run and keeps what is finished)"
    )


def duration(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps the number >= 1 (s, min, h, days, years)."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:,.0f} {unit}" if seconds / size >= 10 else f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def count_type(kind: str, flag: str) -> Callable[[str], int]:
    """argparse type of a step or epoch count given as ``flag``: an error for values that cannot
    work (:func:`count_problem`), a warning on stderr with the least time for absurd ones."""

    def parse(text: str) -> int:
        value = _checked_int(text, "", count_problem)
        warning = count_warning(value, kind)
        if warning:
            print(f"searle: warning: {flag} {warning}", file=sys.stderr)
        return value

    parse.__name__ = f"{kind}_count"
    return parse


#: argparse types of OTI's ``--oti-steps`` and φ's ``--phi-epochs`` (see :func:`count_type`).
step_count = count_type("steps", "--oti-steps")
epoch_count = count_type("epochs", "--phi-epochs")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _bounded_int(text, 0)


def _bounded_int(text: str, low: int, high: int | None = None, note: str = "") -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; expected an integer >= {low}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; expected an integer from {low} to {high}{note}")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _bounded_float(text, strict=False)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _bounded_float(text, strict=True)


def _bounded_float(text: str, strict: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")) or value < 0 or (strict and value == 0):
        raise argparse.ArgumentTypeError(f"{text} is not allowed; expected a finite number {'>' if strict else '>='} 0")
    return value
