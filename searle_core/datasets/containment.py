"""What annotation text may name: paths inside the dataset, ids that are ids, captions that are text.

A hostile or damaged annotation could name ``/etc/passwd`` or ``../../secret.png``: :func:`contained_path`
refuses it before anything is opened. The check is lexical, resolving no symlink on purpose: image
folders linked into a dataset must keep working.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from searle_core.infra.errors import InputError
from searle_core.infra.files import no_duplicate_keys, read_text


def _describe(entry: object) -> str:
    # ascii(): a lone surrogate cannot be printed to a UTF-8 terminal; its escape can.
    return ascii(entry) if isinstance(entry, str) else repr(entry)


def contained_path(root: str | os.PathLike, entry: object, annotation: str | os.PathLike, where: str) -> Path:
    """``root / entry``, normalised, once the entry is known to name a file inside ``root``; ``annotation``
    and ``where`` (``"entry 'dev-244-0-img0'"``) name it in the error."""
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
    """``str(value)`` for a JSON integer or a string of digits: ``NaN``, ``1e300``, ``12.5``, ``true``
    would otherwise become keys (``"nan"``) of a submission file the server rejects or misreads."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return str(int(value))
    raise InputError(f"{annotation}: {where} has {field} {_describe(value)}; expected an integer id")


def refuse_repeats(ids: Iterable[str], annotation: str | os.PathLike, field: str) -> None:
    """Refuse a table that repeats a key: a later row would silently replace the first."""
    counts = Counter(ids)
    repeated = [i for i, n in counts.items() if n > 1]
    if repeated:
        more = f" ({len(repeated)} values repeat)" if len(repeated) > 1 else ""
        raise InputError(
            f"{annotation}: {field} {_describe(repeated[0])} appears {counts[repeated[0]]} times{more}; "
            f"expected each {field} once"
        )


def check_caption(value: object, annotation: str | os.PathLike, where: str, field: str) -> str:
    """``value`` when it is a string: a ``null``, number or object would become the prompt ``"... that None"``."""
    if isinstance(value, str):
        return value
    kind = "null" if value is None else type(value).__name__
    raise InputError(f"{annotation}: {where} has {field} of JSON type {kind} ({_describe(value)}); expected a string")


def read_dataset_json(path: str | os.PathLike, what: str) -> Any:
    """A dataset's JSON file, refusing duplicate keys, too deep a nesting and NaN/Infinity (which Python's
    parser accepts, JSON does not), each an error naming the file (and the field)."""
    text = read_text(path, what)
    constants: list[str] = []

    def constant(name: str) -> float:
        constants.append(name)
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
        stack, field = [(value, "")], None
        while stack and field is None:
            item, at = stack.pop()
            if isinstance(item, float) and not math.isfinite(item):
                field = at or "(top level)"
            elif isinstance(item, dict):
                stack.extend((v, f"{at}.{k}" if at else str(k)) for k, v in reversed(item.items()))
            elif isinstance(item, list):
                stack.extend((v, f"{at}[{i}]") for i, v in reversed(list(enumerate(item))))
        raise InputError(f"{path}: field {field} is {constants[0]}, which JSON does not allow; expected a {what}")
    return value
