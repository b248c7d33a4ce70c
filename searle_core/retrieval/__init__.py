"""Retrieval: gallery and query features, rankings, per-dataset metrics."""

from searle_core.datasets.features import image_features, text_features
from searle_core.retrieval.queries import (
    PIC2WORD_PROMPT,
    SEARLE_PROMPT,
    image_plus_text,
    pseudo_query_features,
    text_query_features,
)
from searle_core.retrieval.ranking import benchmark_metrics, benchmark_rankings, per_aspect_map, rank_gallery

__all__ = [
    "image_features",
    "text_features",
    "pseudo_query_features",
    "text_query_features",
    "image_plus_text",
    "SEARLE_PROMPT",
    "PIC2WORD_PROMPT",
    "rank_gallery",
    "benchmark_rankings",
    "benchmark_metrics",
    "per_aspect_map",
]
