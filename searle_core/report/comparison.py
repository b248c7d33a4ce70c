"""Every method on one benchmark: the one evaluation loop behind ``searle table`` and notebook 4.

:func:`evaluate_methods` computes the gallery features once, runs each method through
``jobs.evaluation.evaluate`` (which trains or loads a method's network first) and keeps one
:class:`~searle_core.report.table.TableRow` per method with the same bookkeeping for both callers:
the Time column (:func:`query_seconds`), the variant labels (:func:`method_variants`), the notes
under the table (skipped methods, SEARLE-OTI's cached time, variants) and the settings record. The
CLI and the notebook differ only in how they build the context (flags or a study) and what they do
with the table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import torch

from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRBenchmark
from searle_core.infra.errors import InputError
from searle_core.jobs.prepare import evaluate
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

#: Gallery features as ``retrieval.evaluate.gallery_features`` returns them: ``"all"`` (or a category) -> (G, D).
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
    """Every method of ``methods`` on ``bench`` with shared gallery features and one context.

    Rows keep the order of ``methods``; each row's Time is :func:`query_seconds`, its variant label
    :func:`method_variants`; ``Table.settings`` is ``table.settings_record``, read after the methods
    ran (φ may have been trained on first use). ``Table.evaluations`` keeps each method's evaluation.

    Args:
        bench: a benchmark with ground truths.
        backbone: the frozen CLIP.
        methods: rows, in order.
        ctx: shared method resources (one context, so tokens and captions are reused).
        log: where one line per finished method goes (``None``: silent).
        gallery: the gallery features (``retrieval.evaluate.gallery_features``), or a function that
            returns them (a notebook's cached ``Study.gallery``); computed here if omitted. The time
            it takes is ``Table.gallery_seconds``.
        skip: methods not run, with why (a note under the table each): notebook 4 skips what a real
            dataset setting cannot run instead of failing.
        phi_distilled: see :func:`method_variants`.

    Raises:
        ValueError: a split without ground truths, or an unknown method (before any method runs).
    """
    if any(q.target is None for q in bench.queries):
        raise InputError(f"{bench.name} {bench.split} has no ground truths (a test split): the table needs metrics")
    known = list(METHODS)
    unknown = [m for m in methods if m not in known]
    if unknown:  # before any method runs, not after an hour of OTI
        raise InputError(f"unknown method {unknown[0]!r}; expected some of {', '.join(known)}")
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
        table.rankings[method] = result.rankings
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
    """How the rows of ``searle-oti`` and ``searle`` differ from the paper's methods (``TableRow.variant``).

    OTI without the authors' GPT phrases (:func:`~searle_core.methods.registry.regulariser_variant`)
    is not the paper's OTI; nor is a φ distilled in this run from such OTI tokens. A φ given as a
    checkpoint keeps the paper's name.

    Args:
        ctx: the context the methods run with (its vocabulary and OTI settings).
        phi_distilled: ``searle``'s φ is distilled in this run from OTI with ``ctx``'s settings.
    """
    variant = regulariser_variant(ctx)
    if not variant:
        return {}
    return {"searle-oti": variant, **({"searle": variant} if phi_distilled else {})}


def query_seconds(method: str, result: MethodResult, ctx: MethodContext) -> float:
    """The Time column: a method's query-side seconds (inversion, captioning, mapping, text encoding).

    Training or loading its network is excluded (it has its own column): the seconds a baseline
    spent getting its network (``result.setup``) are taken out of ``result.seconds``. Tokens
    computed before the evaluation and given to the context (the notebooks share SEARLE-OTI's through
    a cache, :meth:`~searle_core.methods.context.MethodContext.give_tokens`) are put back in: they are
    its query side.

    Args:
        method: the method's name.
        result: its :class:`~searle_core.methods.pipeline.MethodResult`.
        ctx: the context it ran with.
    """
    setup = result.setup.setup_seconds if result.setup is not None else 0.0
    return max(0.0, result.seconds - setup) + ctx.token_seconds.get(method, 0.0)


def table_row(method: str, result: MethodResult, ctx: MethodContext, variant: str | None = None) -> TableRow:
    """One row of the table, as both ``searle table`` and notebook 4 write it.

    Args:
        method: the method's name.
        result: its evaluation.
        ctx: the context it ran with (the cost of networks given to it).
        variant: how the row differs from the paper's method (``TableRow.variant``).
    """
    setup = result.setup or ctx.given_setups.get(method)
    return TableRow(
        method,
        flatten(result.metrics),
        query_seconds(method, result, ctx),
        setup.train_seconds if setup is not None else None,
        bool(setup is not None and setup.trained_now),
        variant,
    )
