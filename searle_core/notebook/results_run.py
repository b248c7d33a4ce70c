"""What notebook 4 keeps of a run: its numbers (the record that ``searle paper`` and the tests read)
and its tables, written in one call from the notebook's last, quiet cell."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from searle_core.metrics.significance import Difference, write_differences
from searle_core.notebook.record import Recorder
from searle_core.notebook.results import Setting, flatten, write_comparison
from searle_core.report.table import write_table


def save_results(
    out_dir: str | os.PathLike | None,
    notebook: str,
    settings: list[Setting],
    compared: pd.DataFrame,
    differences: dict[tuple[str, str], list[Difference]],
) -> list[Path]:
    """Record every method's metrics, timings, skips and settings and each difference to SEARLE-OTI
    (keys ``<dataset>/<backbone>/<method>/<metric>``), and write the comparison and per-benchmark tables
    under ``<out_dir>/tables`` as ``searle table`` writes them; nothing is written without ``out_dir``.

    Args:
        out_dir: the run folder (``searle paper`` sets it; empty: numbers kept in memory only).
        notebook: the notebook's name (names its record).
        settings: the benchmark × backbone settings the notebook evaluated.
        compared: the comparison with the paper (``results.comparison``).
        differences: per (dataset, backbone), each method against SEARLE-OTI (``results.differences``).

    Returns:
        The table files written.
    """
    rec = Recorder(out_dir, notebook)
    for s in settings:
        pair = (s.study.dataset, s.study.backbone.name)
        key = "/".join(pair)
        for method, e in s.evaluations.items():
            for metric, value in flatten(e.metrics).items():
                rec.record(f"{key}/{method}/{metric}", value)
            rec.record(**{f"{key}/{method}/{k}": v for k, v in s.seconds(method).items()})
        rec.record(f"{key}/skipped", sorted(s.skipped))
        rec.record(f"{key}/settings", s.table.settings)  # preprocessing, precision, φ
        for d in differences.get(pair, []):
            rec.record(f"{key}/{d.method}/vs-searle-oti", {"diff": d.diff, "low": d.low, "high": d.high})
    if not out_dir:
        return []
    tables = Path(out_dir) / "tables"
    written = write_comparison(compared, tables)
    for s in settings:
        stem = f"{s.study.dataset}-{s.study.bench.split}-{s.study.backbone.name}"
        written += list(write_table(s.table, tables, stem))
        if (s.study.dataset, s.study.backbone.name) in differences:
            diffs = differences[s.study.dataset, s.study.backbone.name]
            written.append(write_differences(diffs, tables / f"{stem}-vs-searle-oti", s.names))
    return written
