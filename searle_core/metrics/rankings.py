"""From similarity scores to rankings: the top-K gallery names of each query, in a documented,
deterministic tie order (equal scores: the gallery's order)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from searle_core.infra.errors import InputError
from searle_core.metrics.benchmarks import ImageName, check_k


def _top_k_indices(row: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of ``row``, larger first, ties by lower index."""
    n = row.shape[0]
    negated = -row
    if k >= n:
        return np.argsort(negated, kind="stable")
    part = np.argpartition(negated, k - 1)[:k]
    threshold = row[part].min()  # the k-th largest value
    greater = np.flatnonzero(row > threshold)
    equal = np.flatnonzero(row == threshold)[: k - greater.size]
    candidates = np.concatenate([greater, equal])  # each part in index order
    return candidates[np.argsort(negated[candidates], kind="stable")]


def rank_by_scores(
    scores: np.ndarray,
    names: Sequence[ImageName],
    k: int,
    exclude: Sequence[ImageName | None] | None = None,
) -> list[list[ImageName]]:
    """Turn a (queries x gallery) similarity matrix into top-``k`` rankings of gallery names.

    Higher score = better. The order is deterministic: **equal scores are ordered by gallery index,
    lower index first** (a stable sort), including at the k-th rank boundary. Selection uses
    ``argpartition`` and then sorts only the ``k`` kept entries, so a 120k-image gallery is cheap.

    Args:
        scores: similarity matrix of shape ``(n_queries, n_gallery)``; NaN is rejected.
        names: the gallery names, ``names[j]`` for column ``j`` (must be unique).
        k: how many names to keep per query (capped at the gallery size, minus one when a name is
            excluded).
        exclude: optional, one entry per query: a gallery name to remove from that query's ranking
            (CIRR removes the reference image), or ``None``. A name not in the gallery removes
            nothing.

    Returns:
        One list of ``min(k, available)`` names per query, best first.
    """
    k = check_k(k)
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise InputError(f"scores must be a 2-D (queries x gallery) matrix, got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)  # negating unsigned or boolean scores would wrap
    names = list(names)
    if scores.shape[1] != len(names):
        raise InputError(f"scores have {scores.shape[1]} gallery columns but {len(names)} names")
    if np.isnan(scores).any():
        bad = int(np.flatnonzero(np.isnan(scores).any(axis=1))[0])
        raise InputError(f"scores contain NaN (first in query row {bad})")
    if exclude is not None and len(exclude) != scores.shape[0]:
        raise InputError(f"exclude has {len(exclude)} entries for {scores.shape[0]} queries")
    column: dict[ImageName, int] = {}
    for j, name in enumerate(names):
        if column.setdefault(name, j) != j:
            raise InputError(f"gallery name {name!r} appears twice (columns {column[name]} and {j})")

    rankings: list[list[ImageName]] = []
    for i in range(scores.shape[0]):
        row = scores[i]
        excluded = None if exclude is None or exclude[i] is None else column.get(exclude[i])
        if excluded is None:
            top = _top_k_indices(row, min(k, row.shape[0]))
        else:
            # rank the other columns, then shift the indices past the removed one back
            rest = np.delete(row, excluded)
            top = _top_k_indices(rest, min(k, rest.shape[0]))
            top = top + (top >= excluded)
        rankings.append([names[j] for j in top])
    return rankings
