"""What annotation text may name: paths that stay inside the dataset, ids that are ids, captions that are text.

Image paths come from annotation files (CIRR split entries, FashionIQ asins, CIRCO ``file_name``),
so a hostile or damaged file could name ``/etc/passwd`` or ``../../secret.png`` and have it opened,
encoded and ranked. :func:`contained_path` refuses such an entry *before* anything is opened. The
check is lexical (``os.path.normpath`` of ``root/entry`` must stay under ``root``) and resolves no
symlink, on purpose: users link image folders or files into a dataset, and those links must keep
working; what the annotation *text* names is what must stay inside.

:func:`read_dataset_json` wraps :func:`~searle_core.infra.errors.read_json` so that a file nested
too deeply for the parser, or holding ``NaN``/``Infinity`` (not JSON, but Python's parser accepts
them), is an error naming the file instead of a bare ``RecursionError`` or a ``nan`` id.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from searle_core.infra.errors import InputError, no_duplicate_keys, read_text


def _describe(entry: object) -> str:
    # ascii(): a lone surrogate cannot be printed to a UTF-8 terminal; its escape can.
    return ascii(entry) if isinstance(entry, str) else repr(entry)


def contained_path(root: str | os.PathLike, entry: object, annotation: str | os.PathLike, where: str) -> Path:
    """``root / entry``, normalised, after checking that the entry names a file inside ``root``.

    Args:
        root: the dataset's image root (the folder annotation paths are relative to).
        entry: the path text the annotation gives.
        annotation: the annotation file, for messages.
        where: which entry of it (``"entry 'dev-244-0-img0'"``), for messages.

    Raises:
        InputError: the entry is not a string, is absolute, is empty, holds a NUL byte or a character
            the file system cannot encode (a lone surrogate), or climbs out of ``root`` with ``..``;
            the message names the file, the entry and the path.
    """
    if not isinstance(entry, str):
        kind = type(entry).__name__
        raise InputError(f"{annotation}: {where} is a JSON {kind} ({_describe(entry)}); expected a relative image path")
    # The common case, checked cheaply (CIRCO lists 123k files): no "..", not absolute, plain text.
    plain = entry and entry.isascii() and ".." not in entry and "\x00" not in entry
    if plain and not entry.startswith(("/", "\\")):
        return (root if isinstance(root, Path) else Path(root)) / entry
    shown = _describe(entry)
    if not entry or "\x00" in entry:
        raise InputError(f"{annotation}: {where} names the path {shown}; expected a relative image path")
    try:
        os.fsencode(entry)
    except UnicodeEncodeError:
        raise InputError(
            f"{annotation}: {where} names the path {shown}, which holds a character no file name can "
            "(a lone surrogate); expected a relative image path"
        ) from None
    if os.path.isabs(entry) or entry.startswith(("/", "\\")):
        raise InputError(
            f"{annotation}: {where} names the absolute path {shown}; expected a path relative to {root} "
            "(annotation paths may not leave the dataset folder)"
        )
    base = os.path.normpath(os.path.abspath(root))
    joined = os.path.normpath(os.path.join(base, entry))
    if os.path.commonpath([base, joined]) != base or joined == base:
        raise InputError(
            f"{annotation}: {where} names the path {shown}, which leads outside the dataset folder {root}; "
            "expected a path inside it"
        )
    # Keep the caller's (possibly relative) root: only the entry's own part is normalised.
    return Path(root) / os.path.relpath(joined, base)


def check_int_id(value: object, annotation: str | os.PathLike, where: str, field: str) -> str:
    """``str(value)`` for an integer id (a JSON integer, or a string of decimal digits).

    ``NaN``, ``1e300``, ``12.5``, ``"12.5"``, ``true`` or ``null`` would otherwise become the keys
    ``"nan"``, ``"1e+300"``, ... of a submission file the server rejects or misreads.

    Raises:
        InputError: naming the file, the entry, the field and the value.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return str(int(value))
    raise InputError(f"{annotation}: {where} has {field} {_describe(value)}; expected an integer id")


def refuse_repeats(ids: Iterable[str], annotation: str | os.PathLike, field: str) -> None:
    """Refuse a table keyed by ``field`` that repeats a key: a later row would silently replace the first.

    Raises:
        InputError: naming the file, the field, the first repeated value and how often it occurs.
    """
    counts = Counter(ids)
    repeated = [i for i, n in counts.items() if n > 1]
    if repeated:
        more = f" ({len(repeated)} values repeat)" if len(repeated) > 1 else ""
        raise InputError(
            f"{annotation}: {field} {_describe(repeated[0])} appears {counts[repeated[0]]} times{more}; "
            f"expected each {field} once"
        )


def check_caption(value: object, annotation: str | os.PathLike, where: str, field: str) -> str:
    """``value`` when it is a string: a ``null``, number or object would become the prompt ``"... that None"``.

    Raises:
        InputError: naming the file, the entry, the field and the value's JSON type.
    """
    if isinstance(value, str):
        return value
    kind = "null" if value is None else type(value).__name__
    raise InputError(f"{annotation}: {where} has {field} of JSON type {kind} ({_describe(value)}); expected a string")


def _find_nonfinite(value: Any, trail: str = "") -> str | None:
    """The JSON path of the first NaN or infinity in ``value`` (``None``: there is none)."""
    stack = [(value, trail)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return at or "(top level)"
        if isinstance(item, dict):
            stack.extend((v, f"{at}.{k}" if at else str(k)) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in reversed(list(enumerate(item))))
    return None


def read_dataset_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a dataset's JSON file as :func:`~searle_core.infra.errors.read_json` does, and also refuse
    too deep a nesting and NaN/Infinity values, naming the file (and the field).

    Args:
        path: the file.
        what: what it is, for messages ("CIRR annotation file").

    Raises:
        InputError: naming the file (and, for NaN/Infinity, the field).
    """
    text = read_text(path, what)
    constants: list[str] = []

    def constant(name: str) -> float:
        constants.append(name)  # Python's parser takes NaN and Infinity; JSON has neither
        return float(name)

    try:
        value = json.loads(text, object_pairs_hook=no_duplicate_keys(str(path)), parse_constant=constant)
    except json.JSONDecodeError as err:
        raise InputError(
            f"{path}, line {err.lineno} column {err.colno}: not valid JSON ({err.msg}); expected a {what}"
        ) from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to read; expected a {what}") from None
    if constants:  # rare: only then walk the document to name the field
        raise InputError(
            f"{path}: field {_find_nonfinite(value)} is {constants[0]}, which JSON does not allow; expected a {what}"
        )
    return value
