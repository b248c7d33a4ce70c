"""The one GitHub Markdown table writer: results tables, comparisons, ablations.

A small function rather than pandas' ``DataFrame.to_markdown``: that needs ``tabulate`` (not a
dependency) and pads every cell to its column's width, so the tables the README quotes would
change shape. Cells are written as given (callers format their numbers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from searle_core.infra.errors import InputError


def markdown_table(
    header: Sequence[object], rows: Iterable[Sequence[object]], numeric: Sequence[bool] | None = None
) -> str:
    """A Markdown table, one line per row, ending with a newline.

    Args:
        header: the column names.
        rows: the cells of each row, as many as ``header``; each is written with ``str``.
        numeric: per column, whether it holds numbers (right-aligned, ``---:``); default: every
            column but the first.

    Raises:
        ValueError: a row or ``numeric`` with another number of cells than ``header``.
    """
    header = [str(h) for h in header]
    numeric = [i > 0 for i in range(len(header))] if numeric is None else list(numeric)
    if len(numeric) != len(header):
        raise InputError(f"markdown_table: {len(numeric)} alignments for {len(header)} columns")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    for row in rows:
        cells = [str(c) for c in row]
        if len(cells) != len(header):
            raise InputError(f"markdown_table: a row of {len(cells)} cells under {len(header)} columns: {cells}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
