"""Key numbers of a notebook run, written to a small JSON file beside the executed notebook.

A notebook calls ``rec = Recorder(out_dir, "03_training_phi")`` once and ``rec.record(...)`` for each
number worth keeping; ``searle paper`` sets ``out_dir`` to its run folder, and the smoke tests read
the JSON back. With an empty ``out_dir`` (a notebook opened by hand, nbval) nothing is written, so
stepping through a notebook never touches the repository.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from searle_core.infra.files import atomic_write_text


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy and torch scalars to Python numbers, NaN to ``None``."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


#: Set by ``searle paper`` in the kernel's environment: numbers go to a staged name
#: (:func:`staged_record_path`) that replaces ``<notebook>.json`` only once the notebook finished,
#: so an interrupted re-run leaves the previous run's numbers in place.
STAGED_ENV = "SEARLE_RECORD_STAGED"


def record_path(out_dir: str | os.PathLike, notebook: str) -> Path:
    """Where a notebook's numbers go: ``<out_dir>/<notebook>.json``."""
    return Path(out_dir) / f"{Path(notebook).stem}.json"


def staged_record_path(out_dir: str | os.PathLike, notebook: str) -> Path:
    """Where a notebook run by ``searle paper`` writes its numbers until it finished."""
    return Path(out_dir) / f".{Path(notebook).stem}.json.partial"


def publish(partial: Path, output: Path, out_dir: str | os.PathLike, notebook: str) -> None:
    """Move a finished notebook (``partial``) and its staged numbers over the previous ones.

    A notebook that recorded nothing leaves no numbers: a previous run's are never reported as its.
    """
    staged, final = staged_record_path(out_dir, notebook), record_path(out_dir, notebook)
    if staged.is_file():
        os.replace(staged, final)
    else:
        final.unlink(missing_ok=True)
    os.replace(partial, output)


class Recorder:
    """Collects a notebook's key numbers and rewrites its JSON after every call.

    Rewriting on each call means a notebook that fails half-way still leaves what it had.

    Args:
        out_dir: run folder; ``""`` or ``None`` keeps the numbers in memory only.
        notebook: the notebook's name (its stem names the file).
    """

    def __init__(self, out_dir: str | os.PathLike | None, notebook: str):
        self.notebook = Path(notebook).stem
        staged = os.environ.get(STAGED_ENV, "") == "1"
        self.path = (staged_record_path if staged else record_path)(out_dir, notebook) if out_dir else None
        self.values: dict[str, Any] = {}

    def record(self, key: str | None = None, value: Any = None, **values: Any) -> Any:
        """Record ``key=value`` and/or keyword values; returns ``value`` so calls can be inlined.

        Keys may be nested with ``/`` ("searle-oti/mAP@10") for readability; they are stored flat.
        """
        if key is not None:
            values = {key: value, **values}
        self.values.update({k: _plain(v) for k, v in values.items()})
        if self.path is not None:
            atomic_write_text(
                json.dumps({"notebook": self.notebook, "values": self.values}, indent=1, sort_keys=True), self.path
            )
        return value

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def load_record(out_dir: str | os.PathLike, notebook: str) -> dict[str, Any]:
    """The numbers a notebook recorded in ``out_dir`` (raises FileNotFoundError if it recorded none)."""
    path = record_path(out_dir, notebook)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the notebook {notebook} recorded no numbers in {out_dir}")
    return json.loads(path.read_text())["values"]
