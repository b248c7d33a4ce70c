"""The one GitHub Markdown table writer (results, comparisons, ablations). Not pandas' ``to_markdown``:
that needs ``tabulate`` and pads cells to the column's width. Cells are written as given."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from searle_core.infra.errors import InputError


def markdown_table(
    header: Sequence[object], rows: Iterable[Sequence[object]], numeric: Sequence[bool] | None = None
) -> str:
    """A Markdown table, one line per row; ``numeric`` columns (default: all but the first) are
    right-aligned. A row of another width than ``header`` is an error."""
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
