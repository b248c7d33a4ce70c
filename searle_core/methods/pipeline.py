"""The paper's pipeline end to end: features -> query features of a method -> rankings -> metrics.

:func:`run_method` is the core's; :func:`searle_core.jobs.prepare.evaluate` first trains or loads the
network a method needs (φ, Pic2Word's mapper, PALAVRA's inverter), then calls it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRBenchmark
from searle_core.datasets.features import image_features
from searle_core.methods.context import MethodContext, NetworkSetup
from searle_core.methods.registry import query_features
from searle_core.retrieval.ranking import benchmark_metrics, benchmark_rankings, ranking_length


@dataclass
class MethodResult:
    """One method on one benchmark.

    Args:
        method: the method's name.
        metrics: the dataset's metrics in percent.
        rankings: per query, the ranked gallery names.
        query_features: (Q, D) normalised query features.
        seconds: wall time of the query side (inversion included), features of the gallery excluded.
        setup: what getting the method's network cost (:func:`searle_core.jobs.prepare.evaluate`
            fills it; ``None``: the method needs none, or it was given).
    """

    method: str
    metrics: dict
    rankings: list[list[str]]
    query_features: torch.Tensor
    seconds: float
    setup: NetworkSetup | None = None


def gallery_features(
    backbone: Backbone, bench: CIRBenchmark, progress: bool = True, **kwargs: Any
) -> dict[str, torch.Tensor]:
    """Gallery features keyed ``"all"`` (FashionIQ: by category), cached on disk and reused.

    Args:
        backbone: the frozen CLIP; its image pipeline (see ``retrieval.features.configure_images``)
            sets the preprocessing and the data-loader workers.
        bench: the benchmark whose gallery is encoded.
        progress: progress bars.
        **kwargs: passed to :func:`image_features` (``batch_size``, ``num_workers``, ``cache``).
    """
    by_category = bench.extra.get("gallery_by_category")
    if by_category:
        # FashionIQ ranks each query against its own category's gallery (see datasets.fashioniq).
        return {
            c: image_features(backbone, bench.images, names, progress=progress, **kwargs)
            for c, names in by_category.items()
        }
    return {"all": image_features(backbone, bench.images, bench.gallery, progress=progress, **kwargs)}


def run_method(
    method: str,
    bench: CIRBenchmark,
    backbone: Backbone,
    ctx: MethodContext | None = None,
    gallery: dict[str, torch.Tensor] | None = None,
) -> MethodResult:
    """Run ``method`` on ``bench`` and score it, with the networks ``ctx`` holds (see
    :func:`searle_core.jobs.prepare.evaluate`, which trains or loads them first).

    Args:
        method: ``image-only``, ``text-only``, ``image+text``, ``searle-oti``, ``searle``, or a baseline.
        bench: the benchmark (validation split for metrics; test splits have no ground truths).
        backbone: the frozen CLIP.
        ctx: method resources (vocabulary, φ, OTI settings); created empty if omitted.
        gallery: precomputed :func:`gallery_features` (reuse it across methods).
    """
    ctx = ctx or MethodContext()
    gallery = gallery if gallery is not None else gallery_features(backbone, bench, ctx.progress)
    start = time.perf_counter()
    feats = query_features(method, backbone, bench, ctx)
    seconds = time.perf_counter() - start
    rankings = benchmark_rankings(bench, feats, gallery, ranking_length(bench))
    has_truth = all(q.target is not None for q in bench.queries)
    metrics = benchmark_metrics(bench, rankings) if has_truth else {}
    return MethodResult(method, metrics, rankings, feats, seconds)
