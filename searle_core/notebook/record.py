"""A notebook's key numbers, in a JSON in the run folder ``searle paper`` passes as ``out_dir``; with none
(a notebook opened by hand, nbval) nothing is written, so stepping through one never touches the repository."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from searle_core.infra.files import atomic_write_text
from searle_core.report.table import flatten

#: Set by ``searle paper`` in the kernel's environment: numbers go to a staged name that replaces
#: ``<notebook>.json`` only once the notebook finished, so an interrupted re-run keeps the previous ones.
STAGED_ENV = "SEARLE_RECORD_STAGED"
#: Set by the papermill runs: no one clicks there, and widgets' Output traffic can stall nbclient (nbclient#312).
HEADLESS_ENV = "SEARLE_HEADLESS"


def method_metrics(method: str, metrics: dict) -> dict[str, float]:
    """A method's metrics keyed ``<method>/<metric>`` (nested FashionIQ/CIRCO ones ``<method>/<group>/<metric>``)."""
    return {f"{method}/{k}": v for k, v in flatten(metrics).items()}


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy and torch scalars to Python numbers, NaN to ``None``."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def record_path(out_dir: str | os.PathLike, notebook: str, staged: bool = False) -> Path:
    """``<out_dir>/<notebook>.json``, or the staged name ``searle paper`` writes until the notebook finished."""
    stem = Path(notebook).stem
    return Path(out_dir) / (f".{stem}.json.partial" if staged else f"{stem}.json")


def publish(partial: Path, output: Path, out_dir: str | os.PathLike, notebook: str) -> None:
    """Move a finished notebook and its staged numbers over the previous ones; a notebook that recorded
    nothing leaves no numbers, so a previous run's are never reported as its."""
    staged, final = record_path(out_dir, notebook, staged=True), record_path(out_dir, notebook)
    if staged.is_file():
        os.replace(staged, final)
    else:
        final.unlink(missing_ok=True)
    os.replace(partial, output)


class Recorder:
    """Collects a notebook's key numbers and rewrites its JSON after every call, so a notebook that
    fails half-way still leaves what it had; ``out_dir`` empty keeps them in memory only."""

    def __init__(self, out_dir: str | os.PathLike | None, notebook: str):
        self.notebook = Path(notebook).stem
        self.path = record_path(out_dir, notebook, os.environ.get(STAGED_ENV) == "1") if out_dir else None
        self.values: dict[str, Any] = {}

    def record(self, key: str | None = None, value: Any = None, **values: Any) -> Any:
        """Record ``key=value`` and/or keyword values (flat keys: ``searle-oti/mAP@10``); returns ``value``."""
        if key is not None:
            values = {key: value, **values}
        self.values.update({k: _plain(v) for k, v in values.items()})
        if self.path is not None:
            atomic_write_text(
                json.dumps({"notebook": self.notebook, "values": self.values}, indent=1, sort_keys=True), self.path
            )
        return value


def load_record(out_dir: str | os.PathLike, notebook: str) -> dict[str, Any]:
    """The numbers a notebook recorded in ``out_dir`` (FileNotFoundError if it recorded none)."""
    path = record_path(out_dir, notebook)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the notebook {notebook} recorded no numbers in {out_dir}")
    return json.loads(path.read_text())["values"]
