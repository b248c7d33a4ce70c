"""The paper's results table: every method on one benchmark (the one evaluation loop behind ``searle table``
and notebook 4), one row per method with its query-side time and its network's training time beside its
metrics, as CSV, Markdown and text."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRBenchmark
from searle_core.datasets.features import preprocess_name
from searle_core.infra.device import EVAL_PRECISION, training_precision
from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_write_text
from searle_core.infra.markdown import markdown_table
from searle_core.jobs.evaluation import evaluate
from searle_core.methods.context import MethodContext
from searle_core.methods.pipeline import METHODS, MethodResult, gallery_features, regulariser_variant

#: The paper's rows, in its order, with their printed names.
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
TABLE_METHODS: tuple[str, ...] = tuple(DISPLAY_NAMES)
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
    """The paper's name of a row, with its variant when it is not the paper's method."""
    name = DISPLAY_NAMES.get(method, method)
    return f"{name} ({variant})" if variant else name


def variant_notes(variants) -> list[str]:
    """One note per distinct variant label (``None`` ignored)."""
    return [f"({v}): {VARIANT_NOTES.get(v, 'not the method of the paper')}." for v in dict.fromkeys(variants) if v]


def row_settings(settings: dict, method: str) -> list[str]:
    """A row's settings cells: φ's epoch and file only on the ``searle`` row, LinCIR's original φ file on its row."""
    if method == "lincir":
        settings = {**settings, "phi_epoch": None, "phi_source": settings.get("lincir_checkpoint")}
    phi = method in ("searle", "lincir")
    return [
        "" if settings.get(k) is None or (k.startswith("phi_") and not phi) else str(settings[k])
        for k in SETTINGS_COLUMNS
    ]


@dataclass
class TableRow:
    """One method's result: metrics in percent, query-side ``seconds``, its network's ``train_seconds``. A
    ``variant`` ("templates", "no phrases") is not the paper's method: named so, never beside the paper's number."""

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
    """Rows plus what they were measured on, the notes under them, the settings, each method's evaluation
    and why a method was skipped."""

    rows: list[TableRow]
    dataset: str
    split: str
    backbone: str
    n_queries: int
    n_gallery: int
    gallery_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    evaluations: dict[str, MethodResult] = field(default_factory=dict, repr=False)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def rankings(self) -> dict[str, list[list[str]]]:
        return {m: e.rankings for m, e in self.evaluations.items()}

    @property
    def columns(self) -> list[str]:
        """Metric columns in the order the rows give them."""
        return list(dict.fromkeys(c for row in self.rows for c in row.metrics))


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
    """How the numbers were made: image pipeline, evaluation and training precision, and the φ ``searle`` used."""
    return {
        "preprocess": preprocess_name(backbone),
        "eval_precision": EVAL_PRECISION,
        "train_precision": training_precision(backbone.device, ctx.oti_config.precision, backbone.token_dim),
        "phi_epoch": getattr(ctx.phi, "epoch", None),
        "phi_source": getattr(ctx.phi, "source", None),
        **({"lincir_checkpoint": str(ctx.checkpoints["lincir"])} if ctx.checkpoints.get("lincir") else {}),
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
    if settings.get("lincir_checkpoint"):
        parts.append(f"LinCIR's φ the original checkpoint {settings['lincir_checkpoint']}, not re-implemented")
    return "Settings: " + "; ".join(parts) + "."


def _cells(table: Table, row: TableRow) -> list[str]:
    train = "" if row.train_seconds is None else f"{row.train_seconds:.1f}" + ("" if row.trained_now else " (cached)")
    return [row.name, *(f"{row.metrics.get(c, float('nan')):.2f}" for c in table.columns), f"{row.seconds:.1f}", train]


def to_markdown(table: Table) -> str:
    """The table in Markdown, with a caption line saying what it was measured on and the notes below."""
    header = ["Method", *table.columns, *TIME_COLUMNS]
    lines = [
        f"{table.dataset} {table.split}: {table.n_queries} queries, {table.n_gallery} gallery images, "
        f"backbone {table.backbone}",
        "",
        markdown_table(header, (_cells(table, row) for row in table.rows)),
    ]
    notes = [
        "Time: this run's wall time per method, query side only (gallery features, computed once, took "
        f"{table.gallery_seconds:.1f} s). Training: the method's network (φ: with the OTI of its unlabeled "
        "images); '(cached)': trained by an earlier run and loaded.",
        *table.notes,
        *variant_notes(r.variant for r in table.rows),
    ]
    if table.settings:
        notes.append(settings_line(table.settings))
    return "\n".join(lines + list(dict.fromkeys(notes))) + "\n"


def to_text(table: Table) -> str:
    """Aligned plain-text table for the terminal."""
    rows = [["Method", *table.columns, *TIME_COLUMNS]] + [_cells(table, r) for r in table.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def to_dict(table: Table) -> dict:
    """JSON-able: method -> metrics plus ``seconds`` and ``train_seconds`` (and its variant)."""
    out = {}
    for row in table.rows:
        train = None if row.train_seconds is None else round(row.train_seconds, 2)
        out[row.method] = {**row.metrics, "seconds": round(row.seconds, 2), "train_seconds": train}
        out[row.method] |= {"variant": row.variant} if row.variant else {}
    return out


def write_table(table: Table, out_dir: str | Path, stem: str | None = None) -> tuple[Path, Path]:
    """Write ``{stem}.csv`` (a row per method: metrics, seconds, settings) and ``{stem}.md`` atomically."""
    out, stem = Path(out_dir), stem or f"{table.dataset}-{table.split}"  # atomic_write_text makes the folder
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["method", "name", *table.columns, "seconds", "train_seconds", *SETTINGS_COLUMNS])
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


def evaluate_methods(
    bench: CIRBenchmark,
    backbone: Backbone,
    methods: Sequence[str] = TABLE_METHODS,
    ctx: MethodContext | None = None,
    log: Callable[[str], None] | None = print,
    *,
    gallery: Mapping | Callable[[], Mapping] | None = None,
    skip: Mapping[str, str] | None = None,
    phi_distilled: bool = False,
) -> Table:
    """Every method of ``methods`` on ``bench``, in order, with one context (tokens and captions reused).
    ``gallery``: the features, or a function returning them; ``skip``: method -> why it is not run. OTI
    without GPT phrases, and a φ distilled here (``phi_distilled``) from its tokens, get the variant label."""
    if any(q.target is None for q in bench.queries):
        raise InputError(f"{bench.name} {bench.split} has no ground truths (a test split): the table needs metrics")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:  # before any method runs, not after an hour of OTI
        raise InputError(f"unknown method {unknown[0]!r}; expected some of {', '.join(METHODS)}")
    ctx, skip = ctx or MethodContext(), skip or {}
    start = time.perf_counter()
    if gallery is None:
        gallery = gallery_features(backbone, bench, ctx.progress)
    elif callable(gallery):
        gallery = gallery()
    table = Table(
        [], bench.name, bench.split, backbone.name, len(bench.queries), len(bench.gallery), time.perf_counter() - start
    )
    variant = regulariser_variant(ctx)
    variants = {"searle-oti": variant, "searle": variant if phi_distilled else None}
    for method in methods:
        if method in skip:
            table.skipped[method] = skip[method]
            table.notes.append(f"{DISPLAY_NAMES.get(method, method)}: not run ({skip[method]}).")
            continue
        result = evaluate(method, bench, backbone, ctx, gallery=gallery)
        # Time is the query side: getting the network has its own column, while tokens computed beforehand
        # and given to the context (``MethodContext.give_tokens``) are put back in.
        setup = result.setup or ctx.given_setups.get(method)
        seconds = result.seconds - (result.setup.setup_seconds if result.setup is not None else 0.0)
        seconds = max(0.0, seconds) + ctx.token_seconds.get(method, 0.0)
        train = (setup.train_seconds, bool(setup.trained_now)) if setup is not None else (None, False)
        row = TableRow(method, flatten(result.metrics), seconds, *train, variants.get(method))
        table.rows.append(row)
        table.evaluations[method] = result
        if log:
            scores = ", ".join(f"{c} {row.metrics.get(c, float('nan')):.2f}" for c in table.columns[:4])
            log(f"{row.name}: {scores} ({row.seconds:.1f} s)")
    table.settings = settings_record(backbone, ctx)
    if "searle-oti" in table.evaluations and "searle-oti" in ctx.token_seconds:
        table.notes.append(
            "SEARLE-OTI's time is that of inverting the references (the tokens are cached and shared by the notebooks)."
        )
    table.notes += variant_notes(row.variant for row in table.rows)
    return table
