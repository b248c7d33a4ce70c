"""The paper's pipeline end to end: features -> query features of a method -> rankings -> metrics
(:func:`searle_core.jobs.evaluation.evaluate` first trains or loads the network a method needs)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRBenchmark
from searle_core.datasets.features import image_features
from searle_core.methods.context import MethodContext, NetworkSetup
from searle_core.methods.registry import query_features
from searle_core.retrieval.ranking import benchmark_metrics, benchmark_rankings, ranking_length


@dataclass
class MethodResult:
    """One method on one benchmark: its metrics in percent, each query's ranked gallery names, the (Q, D)
    normalised query features, the query side's wall time (inversion included, gallery features not)."""

    method: str
    metrics: dict
    rankings: list[list[str]]
    query_features: torch.Tensor
    seconds: float
    setup: NetworkSetup | None = None  # what getting its network cost (None: it needs none, or it was given)


def gallery_features(
    backbone: Backbone, bench: CIRBenchmark, progress: bool = True, **kwargs
) -> dict[str, torch.Tensor]:
    """Gallery features keyed ``"all"``, or by category where each query ranks its own category's gallery
    (FashionIQ), cached on disk and reused; ``kwargs`` go to :func:`image_features`."""
    feats = lambda names: image_features(backbone, bench.images, names, progress=progress, **kwargs)
    by_category = bench.extra.get("gallery_by_category")
    return {c: feats(names) for c, names in by_category.items()} if by_category else {"all": feats(bench.gallery)}


def run_method(
    method: str, bench: CIRBenchmark, backbone: Backbone, ctx: MethodContext | None = None, gallery: dict | None = None
) -> MethodResult:
    """Run ``method`` on ``bench`` and score it (where it has ground truths) with the networks ``ctx``
    holds (:func:`searle_core.jobs.evaluation.evaluate` trains or loads them first); ``gallery``:
    precomputed :func:`gallery_features`, reused across methods."""
    ctx = ctx or MethodContext()
    gallery = gallery if gallery is not None else gallery_features(backbone, bench, ctx.progress)
    start = time.perf_counter()
    feats = query_features(method, backbone, bench, ctx)
    seconds = time.perf_counter() - start
    rankings = benchmark_rankings(bench, feats, gallery, ranking_length(bench))
    has_truth = all(q.target is not None for q in bench.queries)
    metrics = benchmark_metrics(bench, rankings) if has_truth else {}
    return MethodResult(method, metrics, rankings, feats, seconds)
