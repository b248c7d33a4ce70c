"""Similarity scores to top-K rankings of gallery names, equal scores in gallery order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from searle_core.infra.errors import InputError
from searle_core.metrics.benchmarks import ImageName, check_k


def _top_k_indices(row: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of ``row``, larger first, ties by lower index."""
    negated = -row
    if k >= row.shape[0]:
        return np.argsort(negated, kind="stable")
    part = np.argpartition(negated, k - 1)[:k]
    threshold = row[part].min()  # the k-th largest value
    greater = np.flatnonzero(row > threshold)
    equal = np.flatnonzero(row == threshold)[: k - greater.size]
    candidates = np.concatenate([greater, equal])  # each part in index order
    return candidates[np.argsort(negated[candidates], kind="stable")]


def rank_by_scores(
    scores: np.ndarray, names: Sequence[ImageName], k: int, exclude: Sequence[ImageName | None] | None = None
) -> list[list[ImageName]]:
    """Top-``k`` gallery names per row of a (queries x gallery) similarity matrix, higher first.

    Equal scores keep gallery order (a stable sort), also at the k-th rank; ``argpartition`` keeps a
    120k gallery cheap. ``exclude`` gives per query a name to drop (CIRR's reference) or ``None``.
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
        else:  # rank the other columns, then shift the indices past the removed one back
            top = _top_k_indices(rest := np.delete(row, excluded), min(k, rest.shape[0]))
            top = top + (top >= excluded)
        rankings.append([names[j] for j in top])
    return rankings
