"""The paper's results table: every method on one benchmark, one row each, as CSV and Markdown.

All methods share the gallery features (computed once) and the scoring code, so the rows differ
only by how each method turns a query into a feature. Each row also records the time the method
took in this run (query side: OTI, captioning, mappers, text encoding) and how long its trained
network took to train, when it has one (φ including the OTI of its unlabeled images), so cost
can be read beside accuracy.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

from .backbone import Backbone
from .datasets.base import CIRBenchmark
from .methods import MethodContext

#: The rows of the paper's tables, in its order.
TABLE_METHODS: tuple[str, ...] = ("image-only", "text-only", "image+text", "captioning", "palavra", "pic2word",
                                  "searle-oti", "searle")
#: Printed names, as in the paper.
DISPLAY_NAMES: dict[str, str] = {
    "image-only": "Image-only", "text-only": "Text-only", "image+text": "Image + Text", "captioning": "Captioning",
    "palavra": "PALAVRA", "pic2word": "Pic2Word", "searle-oti": "SEARLE-OTI", "searle": "SEARLE",
}
TIME_COLUMNS: tuple[str, ...] = ("Time (s)", "Training (s)")
#: What each variant label means, printed under every table that has such a row.
VARIANT_NOTES: dict[str, str] = {
    "templates": "OTI's phrase regulariser used offline template phrases, not the authors' GPT-Neo phrases "
                 "(pass phrases: their GPTNeo27B.zip): not the paper's OTI, so no paper number is shown beside it",
    "no phrases": "OTI ran without its phrase regulariser (λ_gpt = 0: no concepts and phrases given): not the "
                  "paper's OTI, so no paper number is shown beside it",
}


def display_name(method: str, variant: str | None = None) -> str:
    """The printed name of a row: the paper's name, with the variant when it is not the paper's method."""
    name = DISPLAY_NAMES.get(method, method)
    return f"{name} ({variant})" if variant else name


def variant_notes(variants) -> list[str]:
    """One note per distinct variant label among ``variants`` (``None`` entries ignored)."""
    return [f"({v}): {VARIANT_NOTES.get(v, 'not the method of the paper')}." for v in dict.fromkeys(variants) if v]


@dataclass
class TableRow:
    """One method's result.

    Args:
        method: method name (``searle-oti``).
        metrics: flat metric name -> value in percent.
        seconds: wall time of the method in this run: its query side (inversion, captioning, mapping,
            text encoding); gallery features and training its network excluded.
        train_seconds: time its network took to train (``None``: no trained network).
        trained_now: whether that training happened in this run.
        variant: how the row differs from the paper's method (``"templates"``: OTI's phrase
            regulariser on template phrases, not GPT phrases; ``"no phrases"``: without it), shown in
            its name; such a row is never placed beside the paper's number.
    """

    method: str
    metrics: dict[str, float]
    seconds: float
    train_seconds: float | None = None
    trained_now: bool = False
    variant: str | None = None

    @property
    def name(self) -> str:
        return display_name(self.method, self.variant)


@dataclass
class Table:
    """Rows plus what they were measured on."""

    rows: list[TableRow]
    dataset: str
    split: str
    backbone: str
    n_queries: int
    n_gallery: int
    gallery_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: method -> its rankings, for per-query comparisons (:mod:`searle_core.significance`).
    rankings: dict[str, list[list[str]]] = field(default_factory=dict, repr=False)

    @property
    def columns(self) -> list[str]:
        """Metric columns in the order of the first row (mAP@K then Recall@K on shapes and CIRCO)."""
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.update(dict.fromkeys(row.metrics))
        return list(seen)


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Nested metric dicts (FashionIQ categories, CIRCO aspects) as ``"outer/inner"`` keys."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = float(value) if value is not None else float("nan")
    return out


def build_table(bench: CIRBenchmark, backbone: Backbone, ctx: MethodContext | None = None,
                methods: tuple[str, ...] | list[str] = TABLE_METHODS, progress: bool = True) -> Table:
    """Evaluate every method on ``bench`` with shared gallery features.

    Args:
        bench: a benchmark with ground truths.
        backbone: the frozen CLIP.
        ctx: shared method resources (one context, so tokens and captions are reused).
        methods: rows, in order.
        progress: print each method's result as it finishes.
    """
    from .pipeline import evaluate, gallery_features

    if any(q.target is None for q in bench.queries):
        raise ValueError(f"{bench.name} {bench.split} has no ground truths (a test split): the table needs metrics")
    from . import baselines  # noqa: F401  (registers captioning, pic2word, palavra)
    from .methods import BASE_METHODS, EXTRA_METHODS, regulariser_variant

    known = list(BASE_METHODS) + sorted(EXTRA_METHODS)
    unknown = [m for m in methods if m not in known]
    if unknown:  # before any method runs, not after an hour of OTI
        raise ValueError(f"unknown method {unknown[0]!r}; expected some of {', '.join(known)}")
    ctx = ctx or MethodContext()
    start = time.perf_counter()
    gallery = gallery_features(backbone, bench, ctx.progress)
    table = Table([], bench.name, bench.split, backbone.name, len(bench.queries), len(bench.gallery),
                  time.perf_counter() - start)
    for method in methods:
        result = evaluate(method, bench, backbone, ctx, gallery=gallery)
        # Training (or loading) a network is reported in its own column, not as query time.
        setup = ctx.extras.get("setup_seconds", {}).pop(method, 0.0)
        row = TableRow(method, flatten(result.metrics), max(0.0, result.seconds - setup),
                       ctx.extras.get("train_seconds", {}).get(method),
                       bool(ctx.extras.get("trained_now", {}).get(method)),
                       regulariser_variant(ctx) if method == "searle-oti" else None)
        table.rows.append(row)
        table.rankings[method] = result.rankings
        if progress:
            print(f"{row.name}: {format_row(row, table.columns[:4])}", flush=True)
    return table


def format_row(row: TableRow, columns: list[str]) -> str:
    parts = [f"{c} {row.metrics.get(c, float('nan')):.2f}" for c in columns]
    return ", ".join(parts) + f" ({row.seconds:.1f} s)"


def _cells(table: Table, row: TableRow) -> list[str]:
    train = "" if row.train_seconds is None else f"{row.train_seconds:.1f}" + ("" if row.trained_now else " (cached)")
    return [row.name] + [f"{row.metrics.get(c, float('nan')):.2f}" for c in table.columns] + [f"{row.seconds:.1f}", train]


def to_markdown(table: Table) -> str:
    """The table in Markdown, with a caption line saying what it was measured on."""
    header = ["Method"] + table.columns + list(TIME_COLUMNS)
    lines = [f"{table.dataset} {table.split}: {table.n_queries} queries, {table.n_gallery} gallery images, "
             f"backbone {table.backbone}", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(_cells(table, row)) + " |" for row in table.rows]
    notes = ["Time: this run's wall time per method, query side only (gallery features, computed once, took "
             f"{table.gallery_seconds:.1f} s). Training: the method's network (φ: with the OTI of its unlabeled "
             "images); '(cached)': trained by an earlier run and loaded."] + table.notes + \
        variant_notes(r.variant for r in table.rows)
    return "\n".join(lines + [""] + list(dict.fromkeys(notes))) + "\n"


def to_text(table: Table) -> str:
    """Aligned plain-text table for the terminal."""
    header = ["Method"] + table.columns + list(TIME_COLUMNS)
    rows = [header] + [_cells(table, r) for r in table.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows[1:]])


def to_dict(table: Table) -> dict:
    """JSON-able: method -> metrics plus ``seconds`` and ``train_seconds``."""
    return {row.method: {**row.metrics, "seconds": round(row.seconds, 2),
                         "train_seconds": None if row.train_seconds is None else round(row.train_seconds, 2),
                         **({"variant": row.variant} if row.variant else {})}
            for row in table.rows}


def write_table(table: Table, out_dir: str | Path, stem: str | None = None) -> tuple[Path, Path]:
    """Write ``{stem}.csv`` and ``{stem}.md`` (default stem ``{dataset}-{split}``) atomically.

    The CSV has one row per method: ``method``, ``name``, every metric column, ``seconds``,
    ``train_seconds`` (empty when the method trains nothing).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"{table.dataset}-{table.split}"
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "name"] + table.columns + ["seconds", "train_seconds"])
        for row in table.rows:
            writer.writerow([row.method, row.name] + [f"{row.metrics.get(c, float('nan')):.4f}" for c in table.columns]
                            + [f"{row.seconds:.2f}", "" if row.train_seconds is None else f"{row.train_seconds:.2f}"])
    tmp.replace(csv_path)
    tmp = md_path.with_suffix(".md.tmp")
    tmp.write_text(to_markdown(table))
    tmp.replace(md_path)
    return csv_path, md_path
