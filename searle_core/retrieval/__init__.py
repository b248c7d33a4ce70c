"""Retrieval: every method's query features (:mod:`.queries`), rankings and per-dataset metrics (:mod:`.ranking`)."""

from searle_core.retrieval.queries import pseudo_query_features

__all__ = ["pseudo_query_features"]
