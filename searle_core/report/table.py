"""The paper's results table: every method on one benchmark, one row each, as CSV and Markdown.

All methods share the gallery features (computed once) and the scoring code, so the rows differ
only by how each method turns a query into a feature. Each row also records the time the method
took in this run (query side: OTI, captioning, mappers, text encoding) and how long its trained
network took to train, when it has one (φ including the OTI of its unlabeled images), so cost
can be read beside accuracy.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from searle_core.clip.backbone import Backbone
from searle_core.datasets.features import preprocess_name
from searle_core.infra.device import EVAL_PRECISION, training_precision
from searle_core.infra.files import atomic_write_text
from searle_core.infra.markdown import markdown_table
from searle_core.methods.context import MethodContext
from searle_core.methods.pipeline import MethodResult

#: The rows of the paper's tables, in its order.
TABLE_METHODS: tuple[str, ...] = (
    "image-only",
    "text-only",
    "image+text",
    "captioning",
    "palavra",
    "pic2word",
    "searle-oti",
    "searle",
    "lincir",
)
#: Printed names, as in the paper.
DISPLAY_NAMES: dict[str, str] = {
    "image-only": "Image-only",
    "text-only": "Text-only",
    "image+text": "Image + Text",
    "captioning": "Captioning",
    "palavra": "PALAVRA",
    "pic2word": "Pic2Word",
    "searle-oti": "SEARLE-OTI",
    "searle": "SEARLE",
    "lincir": "LinCIR",
}
TIME_COLUMNS: tuple[str, ...] = ("Time (s)", "Training (s)")
#: What each variant label means, printed under every table that has such a row.
VARIANT_NOTES: dict[str, str] = {
    "templates": "OTI's phrase regulariser used offline template phrases, not the authors' GPT-Neo phrases "
    "(pass phrases: their GPTNeo27B.zip): not the paper's OTI, so no paper number is shown beside it",
    "no phrases": "OTI ran without its phrase regulariser (λ_gpt = 0: no concepts and phrases given): not the "
    "paper's OTI, so no paper number is shown beside it",
}
#: Settings columns of the CSV files (see :func:`settings_record`).
SETTINGS_COLUMNS: tuple[str, ...] = ("preprocess", "eval_precision", "train_precision", "phi_epoch", "phi_source")


def display_name(method: str, variant: str | None = None) -> str:
    """The printed name of a row: the paper's name, with the variant when it is not the paper's method."""
    name = DISPLAY_NAMES.get(method, method)
    return f"{name} ({variant})" if variant else name


def variant_notes(variants) -> list[str]:
    """One note per distinct variant label among ``variants`` (``None`` entries ignored)."""
    return [f"({v}): {VARIANT_NOTES.get(v, 'not the method of the paper')}." for v in dict.fromkeys(variants) if v]


def row_settings(settings: dict, method: str) -> list[str]:
    """A row's settings cells: φ's epoch and file only on the ``searle`` row."""
    phi = method == "searle"
    return [
        "" if settings.get(k) is None or (k.startswith("phi_") and not phi) else str(settings[k])
        for k in SETTINGS_COLUMNS
    ]


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
    #: How the numbers were made (:func:`settings_record`): preprocessing, precisions, φ's epoch.
    settings: dict = field(default_factory=dict)
    #: method -> its rankings, for per-query comparisons (:mod:`searle_core.metrics.significance`).
    rankings: dict[str, list[list[str]]] = field(default_factory=dict, repr=False)
    #: method -> its evaluation (metrics, rankings, query features), for the notebooks' figures.
    evaluations: dict[str, MethodResult] = field(default_factory=dict, repr=False)
    #: method -> why it was not run (``evaluation.evaluate_methods``' ``skip``).
    skipped: dict[str, str] = field(default_factory=dict)

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


def settings_record(backbone: Backbone, ctx: MethodContext) -> dict:
    """What every results file records about how its numbers were made.

    ``preprocess``: the image pipeline (``targetpad`` = targetpad 1.25 + the model's bicubic resize,
    centre crop and normalisation); ``eval_precision``: always fp32; ``train_precision``: OTI's and
    the trained networks' (fp16 autocast + GradScaler on CUDA by default, fp32 on CPU);
    ``phi_epoch`` and ``phi_source``: the φ that ``searle`` used, when there is one.
    """

    phi = ctx.phi
    return {
        "preprocess": preprocess_name(backbone),
        "eval_precision": EVAL_PRECISION,
        "train_precision": training_precision(backbone.device, ctx.oti_config.precision),
        "phi_epoch": getattr(phi, "epoch", None) if phi is not None else None,
        "phi_source": getattr(phi, "source", None) if phi is not None else None,
    }


def settings_line(settings: dict) -> str:
    """The settings as one line under a table."""
    if not settings:
        return ""
    parts = [
        f"preprocessing {settings.get('preprocess')}",
        f"evaluation in {settings.get('eval_precision')}",
        f"training (OTI, networks) in {settings.get('train_precision')}",
    ]
    if settings.get("phi_source") or settings.get("phi_epoch") is not None:
        parts.append(f"φ {settings.get('phi_source') or 'trained here'}, epoch {settings.get('phi_epoch', '?')}")
    return "Settings: " + "; ".join(parts) + "."


def format_row(row: TableRow, columns: list[str]) -> str:
    parts = [f"{c} {row.metrics.get(c, float('nan')):.2f}" for c in columns]
    return ", ".join(parts) + f" ({row.seconds:.1f} s)"


def _cells(table: Table, row: TableRow) -> list[str]:
    train = "" if row.train_seconds is None else f"{row.train_seconds:.1f}" + ("" if row.trained_now else " (cached)")
    return (
        [row.name] + [f"{row.metrics.get(c, float('nan')):.2f}" for c in table.columns] + [f"{row.seconds:.1f}", train]
    )


def to_markdown(table: Table) -> str:
    """The table in Markdown, with a caption line saying what it was measured on."""
    header = ["Method"] + table.columns + list(TIME_COLUMNS)
    lines = [
        f"{table.dataset} {table.split}: {table.n_queries} queries, {table.n_gallery} gallery images, "
        f"backbone {table.backbone}",
        "",
        markdown_table(header, (_cells(table, row) for row in table.rows)),
    ]
    notes = (
        [
            "Time: this run's wall time per method, query side only (gallery features, computed once, took "
            f"{table.gallery_seconds:.1f} s). Training: the method's network (φ: with the OTI of its unlabeled "
            "images); '(cached)': trained by an earlier run and loaded."
        ]
        + table.notes
        + variant_notes(r.variant for r in table.rows)
    )
    if table.settings:
        notes.append(settings_line(table.settings))
    return "\n".join(lines + list(dict.fromkeys(notes))) + "\n"


def to_text(table: Table) -> str:
    """Aligned plain-text table for the terminal."""
    header = ["Method"] + table.columns + list(TIME_COLUMNS)
    rows = [header] + [_cells(table, r) for r in table.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows[1:]])


def to_dict(table: Table) -> dict:
    """JSON-able: method -> metrics plus ``seconds`` and ``train_seconds``."""
    return {
        row.method: {
            **row.metrics,
            "seconds": round(row.seconds, 2),
            "train_seconds": None if row.train_seconds is None else round(row.train_seconds, 2),
            **({"variant": row.variant} if row.variant else {}),
        }
        for row in table.rows
    }


def write_table(table: Table, out_dir: str | Path, stem: str | None = None) -> tuple[Path, Path]:
    """Write ``{stem}.csv`` and ``{stem}.md`` (default stem ``{dataset}-{split}``) atomically.

    The CSV has one row per method: ``method``, ``name``, every metric column, ``seconds``,
    ``train_seconds`` (empty when the method trains nothing), then the run's settings
    (:func:`settings_record`: ``preprocess``, ``eval_precision``, ``train_precision``, and for
    ``searle`` ``phi_epoch`` and ``phi_source``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"{table.dataset}-{table.split}"
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["method", "name"] + table.columns + ["seconds", "train_seconds"] + list(SETTINGS_COLUMNS))
    for row in table.rows:
        writer.writerow(
            [row.method, row.name]
            + [f"{row.metrics.get(c, float('nan')):.4f}" for c in table.columns]
            + [f"{row.seconds:.2f}", "" if row.train_seconds is None else f"{row.train_seconds:.2f}"]
            + row_settings(table.settings, row.method)
        )
    atomic_write_text(text.getvalue(), csv_path)
    atomic_write_text(to_markdown(table), md_path)
    return csv_path, md_path
