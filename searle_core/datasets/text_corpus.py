"""A text corpus from a file (``--captions FILE``): the captions LinCIR trains on, on real datasets.

By suffix: ``.json`` a list of strings, of objects with a ``caption`` (or ``text``) field, or an
object whose ``captions`` (or ``text``) key holds the list; ``.csv`` the ``caption`` (or ``text``,
the official corpora's) column; anything else one caption per line (blank lines skipped).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from searle_core.datasets.base import CaptionCorpus
from searle_core.infra.errors import InputError
from searle_core.infra.files import digest

CAPTION_FIELDS = ("caption", "text")  # in order of preference
_EXPECTED = (
    "one caption per line, a JSON list of strings (or of objects with a 'caption'/'text' field, or "
    "{'captions': [...]}), or a CSV with a 'caption' or 'text' column"
)


def _bad(path: Path, what: str) -> InputError:
    return InputError(f"captions file {path}: {what}; expected {_EXPECTED}")


def _from_json(path: Path, data) -> list:
    if isinstance(data, dict):
        key = next((k for k in ("captions", *CAPTION_FIELDS) if k in data), None)
        if key is None:
            raise _bad(path, f"a JSON object without a 'captions' or 'text' key (keys: {sorted(data)[:5]})")
        data = data[key]
    if not isinstance(data, list):
        raise _bad(path, f"JSON {type(data).__name__} instead of a list")
    out = []
    for i, row in enumerate(data):
        if isinstance(row, dict):
            key = next((k for k in CAPTION_FIELDS if k in row), None)
            if key is None:
                raise _bad(path, f"item {i} has no 'caption' or 'text' field")
            row = row[key]
        out.append(row)
    return out


def read_captions(path: str | Path) -> CaptionCorpus:
    """The captions of ``path`` as a :class:`CaptionCorpus` named by their content; a missing or unreadable
    file, a wrong shape, a non-string caption or none at all is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise _bad(path, "no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise _bad(path, f"unreadable ({type(err).__name__})") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            rows = _from_json(path, json.loads(text))
        except json.JSONDecodeError as err:
            raise _bad(path, f"invalid JSON (line {err.lineno})") from None
    elif suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        column = next((c for c in CAPTION_FIELDS if c in (reader.fieldnames or [])), None)
        if column is None:
            raise _bad(path, f"no 'caption' or 'text' column (columns: {reader.fieldnames})")
        rows = [row[column] for row in reader]
    else:
        rows = text.splitlines()
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, str)), None)
    if bad is not None:
        raise _bad(path, f"caption {bad} is a {type(rows[bad]).__name__}, not a string")
    captions = [r.strip() for r in rows if r.strip()]
    if not captions:
        raise _bad(path, "no captions")
    return CaptionCorpus(f"file-{path.name}-" + digest(captions), lambda: captions)
