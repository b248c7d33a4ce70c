"""Rankings and per-dataset metrics for a method's query features: the one ranker, :func:`rank_gallery`."""

from __future__ import annotations

import torch

from searle_core.datasets.base import CIRBenchmark
from searle_core.metrics import (
    circo_metrics,
    cirr_metrics,
    fashioniq_metrics,
    map_at_k,
    rank_by_scores,
    recall_any_at_k,
)
from searle_core.metrics.benchmarks import cirr_scoring_rankings

SHAPES_MAP_KS = (5, 10, 25, 50)
SHAPES_RECALL_KS = (1, 5, 10, 50)


def rank_gallery(
    query_features: torch.Tensor,
    gallery_features: torch.Tensor,
    gallery: list[str],
    k: int,
    exclude: list[str | None] | None = None,
    chunk: int = 1024,
) -> list[list[str]]:
    """Top-``k`` gallery names per query by cosine similarity (features are normalised).

    Args:
        query_features: (Q, D) normalised.
        gallery_features: (G, D) normalised.
        gallery: the G names.
        k: ranking length.
        exclude: per query, a name to remove from its ranking (CIRR's reference), or None.
        chunk: queries scored at once (bounds memory for a 120k gallery).
    """
    rankings = []
    for start in range(0, len(query_features), chunk):
        scores = (query_features[start : start + chunk].float() @ gallery_features.float().T).numpy()
        part = None if exclude is None else exclude[start : start + chunk]
        rankings += rank_by_scores(scores, gallery, k, exclude=part)
    return rankings


def _aspects(bench: CIRBenchmark, q) -> list[str]:
    per_query = bench.extra.get("semantic_aspects")
    if per_query is not None:
        return list(per_query.get(q.query_id, []))
    return [a for a in (q.aspect or "").split(",") if a]


def benchmark_rankings(
    bench: CIRBenchmark, query_features: torch.Tensor, gallery_features: dict[str, torch.Tensor], k: int = 50
) -> list[list[str]]:
    """Rankings of every query against its gallery (FashionIQ: its category's gallery).

    Args:
        bench: the benchmark.
        query_features: (Q, D) normalised, in ``bench.queries`` order.
        gallery_features: gallery name -> feature row, as a dict of category (or ``"all"``) -> (G, D)
            tensor aligned with the matching gallery list.
        k: ranking length (CIRR needs the whole gallery for Recall_subset).
    """
    exclude = [q.reference for q in bench.queries] if bench.exclude_reference else None
    by_category = bench.extra.get("gallery_by_category")
    if not by_category:
        return rank_gallery(query_features, gallery_features["all"], bench.gallery, k, exclude)
    rankings: list[list[str] | None] = [None] * len(bench.queries)
    for category, names in by_category.items():
        rows = [i for i, q in enumerate(bench.queries) if q.category == category]
        if rows:
            ranked = rank_gallery(query_features[rows], gallery_features[category], names, k)
            for i, r in zip(rows, ranked):
                rankings[i] = r
    return rankings  # type: ignore[return-value]


def benchmark_metrics(bench: CIRBenchmark, rankings: list[list[str]]) -> dict:
    """The dataset's metrics, in percent, keyed as printed."""
    queries = bench.queries
    if bench.name == "cirr":
        return cirr_metrics(
            cirr_scoring_rankings(bench, rankings),
            [q.target for q in queries],
            [q.subset for q in queries],
            [q.reference for q in queries],
        )
    if bench.name == "fashioniq":
        cats = sorted({q.category for q in queries})
        return fashioniq_metrics(
            {c: [r for r, q in zip(rankings, queries) if q.category == c] for c in cats},
            {c: [q.target for q in queries if q.category == c] for c in cats},
        )
    if bench.name == "circo":
        return circo_metrics(
            rankings,
            [q.ground_truths for q in queries],
            [q.target for q in queries],
            [_aspects(bench, q) for q in queries],
        )
    gts = [q.ground_truths for q in queries]
    out = {f"mAP@{k}": map_at_k(rankings, gts, k) for k in SHAPES_MAP_KS}
    out.update({f"Recall@{k}": recall_any_at_k(rankings, gts, k) for k in SHAPES_RECALL_KS})
    return out


def ranking_length(bench: CIRBenchmark) -> int:
    """CIRR's Recall_subset needs every subset member ranked, so CIRR ranks the whole gallery."""
    return len(bench.gallery) if bench.name == "cirr" else 50


def per_aspect_map(bench: CIRBenchmark, rankings: list[list[str]], k: int = 10) -> dict[str, float]:
    """mAP@k per query aspect (``shapes``: change type), for breakdown tables."""
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(bench.queries):
        for a in _aspects(bench, q):
            groups.setdefault(a, []).append(i)
    return {
        a: map_at_k([rankings[i] for i in idx], [bench.queries[i].ground_truths for i in idx], k)
        for a, idx in sorted(groups.items())
    }
