"""Metrics: the three benchmarks' metrics from rankings, the CIRCO server's scoring, significance.

- :mod:`.benchmarks`: Recall@K, Recall_subset@K (CIRR), FashionIQ's per-category recall, CIRCO's mAP@K.
- :mod:`.rankings`: similarity scores to rankings, with a deterministic tie order.
- :mod:`.circo_server`: a CIRCO prediction file scored the way the evaluation server does.
- :mod:`.significance`: a paired bootstrap over queries (is one method really above another?).
"""

from searle_core.metrics.benchmarks import (
    CIRCO_ASPECTS,
    CIRCO_KS,
    CIRR_KS,
    CIRR_SUBSET_KS,
    FASHIONIQ_CATEGORIES,
    FASHIONIQ_KS,
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
    "CIRCO_KS",
    "CIRCO_ASPECTS",
    "CIRR_KS",
    "CIRR_SUBSET_KS",
    "FASHIONIQ_CATEGORIES",
    "FASHIONIQ_KS",
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
