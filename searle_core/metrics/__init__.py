"""Metrics: the benchmarks' metrics from rankings, scores to rankings, CIRCO's server scoring, significance."""

from searle_core.metrics.benchmarks import (
    CIRCO_ASPECTS,
    average_precision_at_k,
    circo_metrics,
    cirr_metrics,
    fashioniq_metrics,
    map_at_k,
    recall_any_at_k,
    recall_at_k,
    recall_subset_at_k,
)
from searle_core.metrics.rankings import rank_by_scores

__all__ = [
    "CIRCO_ASPECTS",
    "average_precision_at_k",
    "circo_metrics",
    "cirr_metrics",
    "fashioniq_metrics",
    "map_at_k",
    "rank_by_scores",
    "recall_any_at_k",
    "recall_at_k",
    "recall_subset_at_k",
]
