"""Rankings of a method's query features (the one ranker, :func:`rank_gallery`) and per-dataset metrics."""

from __future__ import annotations

import torch

from searle_core.datasets.base import CIRBenchmark
from searle_core.datasets.loaders import query_aspects
from searle_core.metrics import benchmarks as metrics


def rank_gallery(
    query_features: torch.Tensor,
    gallery_features: torch.Tensor,
    gallery: list[str],
    k: int,
    exclude: list[str | None] | None = None,
) -> list[list[str]]:
    """Top-``k`` gallery names per query by cosine similarity of normalised features, 1024 queries at a time
    (bounds memory for a 120k gallery); ``exclude``: per query a name to drop, or None."""
    rankings = []
    for start in range(0, len(query_features), 1024):
        scores = (query_features[start : start + 1024].float() @ gallery_features.float().T).numpy()
        part = None if exclude is None else exclude[start : start + 1024]
        rankings += metrics.rank_by_scores(scores, gallery, k, exclude=part)
    return rankings


def benchmark_rankings(
    bench: CIRBenchmark, query_features: torch.Tensor, gallery_features: dict[str, torch.Tensor], k: int = 50
) -> list[list[str]]:
    """Rankings of every query against its gallery: ``gallery_features["all"]``, or FashionIQ's per
    category; CIRR needs ``k`` = the whole gallery for Recall_subset."""
    exclude = [q.reference for q in bench.queries] if bench.exclude_reference else None
    by_category = bench.extra.get("gallery_by_category")
    if not by_category:
        return rank_gallery(query_features, gallery_features["all"], bench.gallery, k, exclude)
    rankings: list = [None] * len(bench.queries)
    for category, names in by_category.items():
        rows = [i for i, q in enumerate(bench.queries) if q.category == category]
        for i, r in zip(rows, rank_gallery(query_features[rows], gallery_features[category], names, k) if rows else []):
            rankings[i] = r
    return rankings


def benchmark_metrics(bench: CIRBenchmark, rankings: list[list[str]]) -> dict:
    """The dataset's metrics, in percent, keyed as printed."""
    queries = bench.queries
    targets, gts = [q.target for q in queries], [q.ground_truths for q in queries]
    if bench.name == "cirr":
        subsets, references = [q.subset for q in queries], [q.reference for q in queries]
        return metrics.cirr_metrics(metrics.cirr_scoring_rankings(bench, rankings), targets, subsets, references)
    if bench.name == "fashioniq":
        cats = sorted({q.category for q in queries})
        return metrics.fashioniq_metrics(
            {c: [r for r, q in zip(rankings, queries) if q.category == c] for c in cats},
            {c: [t for t, q in zip(targets, queries) if q.category == c] for c in cats},
        )
    if bench.name == "circo":
        given = bench.extra.get("semantic_aspects")  # else each query's own
        aspects = [query_aspects(q) if given is None else list(given.get(q.query_id, [])) for q in queries]
        return metrics.circo_metrics(rankings, gts, targets, aspects)
    # shapes: CIRCO's mAP@K, and Recall@K at CIRR's K of any ground truth
    out = {f"mAP@{k}": metrics.map_at_k(rankings, gts, k) for k in metrics.CIRCO_KS}
    out.update({f"Recall@{k}": metrics.recall_any_at_k(rankings, gts, k) for k in metrics.CIRR_KS})
    return out


def ranking_length(bench: CIRBenchmark) -> int:
    """CIRR's Recall_subset needs every subset member ranked, so CIRR ranks the whole gallery."""
    return len(bench.gallery) if bench.name == "cirr" else 50
