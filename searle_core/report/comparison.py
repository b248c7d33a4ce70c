"""Every method on one benchmark: the one evaluation loop behind ``searle table`` and notebook 4.

Gallery features are computed once; each method runs through ``jobs.evaluation.evaluate`` (which trains or
loads its network first) into one :class:`~searle_core.report.table.TableRow` with the same bookkeeping
for both callers: the Time column, the variant labels, the notes and the settings record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import torch

from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRBenchmark
from searle_core.infra.errors import InputError
from searle_core.jobs.evaluation import evaluate
from searle_core.methods.context import MethodContext
from searle_core.methods.pipeline import MethodResult, gallery_features
from searle_core.methods.registry import METHODS, regulariser_variant
from searle_core.report.table import (
    DISPLAY_NAMES,
    TABLE_METHODS,
    Table,
    TableRow,
    flatten,
    format_row,
    settings_record,
    variant_notes,
)

GalleryFeatures = Mapping[str, torch.Tensor]


def evaluate_methods(
    bench: CIRBenchmark,
    backbone: Backbone,
    methods: Sequence[str] = TABLE_METHODS,
    ctx: MethodContext | None = None,
    log: Callable[[str], None] | None = print,
    *,
    gallery: GalleryFeatures | Callable[[], GalleryFeatures] | None = None,
    skip: Mapping[str, str] | None = None,
    phi_distilled: bool = False,
) -> Table:
    """Every method of ``methods`` on ``bench``, in order, with one context (tokens and captions reused).

    ``gallery``: the features, or a function returning them (a notebook's cached ``Study.gallery``);
    computed here if omitted. ``skip``: method -> why it is not run (a note under the table).
    ``log`` gets one line per finished method. The settings are read after the methods ran (φ may
    have been trained on first use).
    """
    if any(q.target is None for q in bench.queries):
        raise InputError(f"{bench.name} {bench.split} has no ground truths (a test split): the table needs metrics")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:  # before any method runs, not after an hour of OTI
        raise InputError(f"unknown method {unknown[0]!r}; expected some of {', '.join(METHODS)}")
    ctx = ctx or MethodContext()
    skip = dict(skip or {})
    start = time.perf_counter()
    if gallery is None:
        gallery = gallery_features(backbone, bench, ctx.progress)
    elif callable(gallery):
        gallery = gallery()
    table = Table(
        [], bench.name, bench.split, backbone.name, len(bench.queries), len(bench.gallery), time.perf_counter() - start
    )
    variants = method_variants(ctx, phi_distilled)
    for method in methods:
        if method in skip:
            table.skipped[method] = skip[method]
            table.notes.append(f"{DISPLAY_NAMES.get(method, method)}: not run ({skip[method]}).")
            continue
        result = evaluate(method, bench, backbone, ctx, gallery=gallery)
        row = table_row(method, result, ctx, variants.get(method))
        table.rows.append(row)
        table.evaluations[method] = result
        if log:
            log(f"{row.name}: {format_row(row, table.columns[:4])}")
    table.settings = settings_record(backbone, ctx)
    if "searle-oti" in table.evaluations and "searle-oti" in ctx.token_seconds:
        table.notes.append(
            "SEARLE-OTI's time is that of inverting the references (the tokens are cached and shared by the notebooks)."
        )
    table.notes += variant_notes(row.variant for row in table.rows)
    return table


def method_variants(ctx: MethodContext, phi_distilled: bool = False) -> dict[str, str]:
    """How ``searle-oti`` and ``searle`` differ from the paper's methods: OTI without the authors' GPT
    phrases is not the paper's OTI, nor is a φ distilled here (``phi_distilled``) from such tokens; a φ
    checkpoint keeps the paper's name."""
    variant = regulariser_variant(ctx)
    if not variant:
        return {}
    return {"searle-oti": variant, **({"searle": variant} if phi_distilled else {})}


def query_seconds(method: str, result: MethodResult, ctx: MethodContext) -> float:
    """The Time column: query-side seconds. Getting the network (``result.setup``) is taken out (it has its
    own column); tokens computed beforehand and given to the context (``MethodContext.give_tokens``) are put
    back in, being its query side."""
    setup = result.setup.setup_seconds if result.setup is not None else 0.0
    return max(0.0, result.seconds - setup) + ctx.token_seconds.get(method, 0.0)


def table_row(method: str, result: MethodResult, ctx: MethodContext, variant: str | None = None) -> TableRow:
    """One row of the table, as both ``searle table`` and notebook 4 write it."""
    setup = result.setup or ctx.given_setups.get(method)
    return TableRow(
        method,
        flatten(result.metrics),
        query_seconds(method, result, ctx),
        setup.train_seconds if setup is not None else None,
        bool(setup is not None and setup.trained_now),
        variant,
    )
