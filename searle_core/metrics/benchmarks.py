"""The benchmarks' retrieval metrics in percent, from rankings (gallery names, best first), and the rankings
from similarity scores. A ranking shorter than ``k`` counts its missing ranks as misses; a name repeated in
one ranking is an error (the CIRCO server requires unique predictions); ``"123"`` is not ``123``."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

from searle_core.datasets.base import CIRBenchmark
from searle_core.datasets.loaders import CIRCO_ASPECTS, FASHIONIQ_CATEGORIES
from searle_core.infra.errors import InputError

ImageName = str | int
Ranking = Sequence[ImageName]
Rankings = Sequence[Ranking]
Names = Sequence[ImageName]  # one name per query
NameSets = Sequence[Iterable[ImageName]]  # several names per query

CIRCO_KS: tuple[int, ...] = (5, 10, 25, 50)
CIRR_KS: tuple[int, ...] = (1, 5, 10, 50)
CIRR_SUBSET_KS: tuple[int, ...] = (1, 2, 3)
FASHIONIQ_KS: tuple[int, ...] = (10, 50)


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_unique(ranking: Iterable[Hashable], where: str, error: type[Exception] = InputError) -> None:
    """Raise ``error`` naming ``where`` and the first image repeated in ``ranking`` with both ranks."""
    seen: dict = {}
    for position, item in enumerate(ranking):
        first = seen.setdefault(item, position)
        if first != position:
            raise error(
                f"{where}: image id {item!r} appears twice (ranks {first + 1} and {position + 1}); "
                "expected unique image ids per query (no duplicate predictions)"
            )


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
    """Top-``k`` gallery names per row of a (queries x gallery) similarity matrix, higher first, equal scores in
    gallery order (also at the k-th rank); ``exclude``: per query a name to drop (CIRR's reference) or ``None``."""
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
    for i, row in enumerate(scores):
        excluded = None if exclude is None or exclude[i] is None else column.get(exclude[i])
        if excluded is None:
            top = _top_k_indices(row, min(k, row.shape[0]))
        else:  # rank the other columns, then shift the indices past the removed one back
            top = _top_k_indices(rest := np.delete(row, excluded), min(k, rest.shape[0]))
            top = top + (top >= excluded)
        rankings.append([names[j] for j in top])
    return rankings


def _check_lengths(n_rankings: int, **others: Sequence) -> None:
    if n_rankings == 0:
        raise InputError("no queries: metrics are undefined for an empty list of rankings")
    for name, values in others.items():
        if len(values) != n_rankings:
            raise InputError(f"got {n_rankings} rankings but {len(values)} {name}")


def _mean_percent(score: Callable[..., float], rankings: Rankings, k: int, **per_query: Sequence) -> float:
    """100 × the mean over queries of ``score(ranking, *per_query values, k)``, after the shared checks."""
    k = check_k(k)
    _check_lengths(len(rankings), **per_query)
    total = 0.0
    for index, (ranking, *rest) in enumerate(zip(rankings, *per_query.values())):
        check_unique(ranking, f"query index {index}")
        total += score(ranking, *rest, k)
    return 100.0 * total / len(rankings)


def _hit(ranking: Ranking, target: ImageName, k: int) -> bool:
    return any(item == target for item in list(ranking)[:k])


def _ap(ranking: Ranking, ground_truths: Iterable[ImageName], k: int) -> float:
    gts = set(ground_truths)
    if not gts:
        raise InputError("average precision needs at least one ground truth, got none")
    hits, total = 0, 0.0
    for position, item in enumerate(list(ranking)[:k], start=1):
        if item in gts:
            hits += 1
            total += hits / position
    return total / min(len(gts), k)


def recall_at_k(rankings: Rankings, targets: Names, k: int) -> float:
    """Percentage of queries whose single target is among the first ``k`` names of their ranking."""
    return _mean_percent(_hit, rankings, k, targets=targets)


def recall_any_at_k(rankings: Rankings, ground_truths_list: NameSets, k: int) -> float:
    """Percentage of queries with any ground truth in the top ``k`` (the ``shapes`` benchmark's Recall@K)."""
    return _mean_percent(
        lambda r, gts, k: bool(set(r[:k]) & set(gts)), rankings, k, ground_truths_list=ground_truths_list
    )


def recall_subset_at_k(rankings: Rankings, targets: Names, subsets: NameSets, references: Names, k: int) -> float:
    """CIRR Recall_subset@k: each ranking restricted, order kept, to its ``img_set`` minus the reference; pass
    rankings holding every member for the official value (:func:`cirr_metrics` enforces this)."""

    def hit(ranking: Ranking, target: ImageName, subset: Iterable[ImageName], reference: ImageName, k: int) -> bool:
        members = set(subset) - {reference}
        return _hit([item for item in ranking if item in members], target, k)

    return _mean_percent(hit, rankings, k, targets=targets, subsets=subsets, references=references)


def average_precision_at_k(ranking: Ranking, ground_truths: Iterable[ImageName], k: int) -> float:
    """CIRCO AP@k of one query, a fraction: the sum of precision@i over hits i <= k, divided by
    ``min(#GT, k)`` (not by the number of hits), as the official evaluator does."""
    k = check_k(k)
    check_unique(ranking, "(single ranking)")
    return _ap(ranking, ground_truths, k)


def map_at_k(rankings: Rankings, ground_truths_list: NameSets, k: int) -> float:
    """CIRCO mAP@k in percent: the mean of :func:`average_precision_at_k` over queries."""
    return _mean_percent(_ap, rankings, k, ground_truths=ground_truths_list)


def _ordered(present: Iterable[str], official: Sequence[str]) -> list[str]:
    """The official names present, in official order, then the others in order of first appearance."""
    present = list(dict.fromkeys(present))
    return [n for n in official if n in present] + [n for n in present if n not in official]


def circo_metrics(
    rankings: Rankings, ground_truths_list: NameSets, targets: Names, aspects_list: Sequence, ks=CIRCO_KS
) -> dict:
    """CIRCO's validation metrics as its evaluator reports them, in percent: ``mAP@K``, ``Recall@K`` (of
    ``targets``), ``semantic_mAP@10`` ({aspect: mAP@10}); an aspect entry is a list of names, a name or ``None``."""
    _check_lengths(len(rankings), ground_truths=ground_truths_list, targets=targets, aspects=aspects_list)
    ks = [check_k(k) for k in ks]  # map_at_k checks each ranking's names are unique
    gts_list = [list(gts) for gts in ground_truths_list]
    scores: dict = {f"mAP@{k}": map_at_k(rankings, gts_list, k) for k in ks}
    scores.update({f"Recall@{k}": recall_at_k(rankings, targets, k) for k in ks})
    per_aspect: dict[str, list[float]] = {}
    for ranking, gts, aspects in zip(rankings, gts_list, aspects_list):
        ap10 = _ap(ranking, gts, 10)
        for aspect in dict.fromkeys([aspects] if isinstance(aspects, str) else aspects or []):
            per_aspect.setdefault(aspect, []).append(ap10)
    scores["semantic_mAP@10"] = {a: 100.0 * float(np.mean(per_aspect[a])) for a in _ordered(per_aspect, CIRCO_ASPECTS)}
    return scores


def fashioniq_metrics(rankings_by_category: Mapping[str, Rankings], targets_by_category: Mapping[str, Names]) -> dict:
    """FashionIQ's Recall@10 and @50 per category (official ones first) and ``average``, their unweighted mean."""
    if not rankings_by_category:
        raise InputError("no FashionIQ category given")
    if set(rankings_by_category) != set(targets_by_category):
        raise InputError(
            f"categories differ: rankings for {sorted(rankings_by_category)}, targets for {sorted(targets_by_category)}"
        )
    if "average" in rankings_by_category:
        raise InputError("'average' is reserved for the mean over categories")
    order = _ordered(rankings_by_category, FASHIONIQ_CATEGORIES)
    scores: dict = {}
    for category in order:
        rankings, targets = rankings_by_category[category], targets_by_category[category]
        try:
            scores[category] = {f"Recall@{k}": recall_at_k(rankings, targets, k) for k in FASHIONIQ_KS}
        except ValueError as error:
            raise InputError(f"FashionIQ category {category!r}: {error}") from None
    scores["average"] = {f"Recall@{k}": float(np.mean([scores[c][f"Recall@{k}"] for c in order])) for k in FASHIONIQ_KS}
    return scores


def cirr_metrics(rankings: Rankings, targets: Names, subsets: NameSets, references: Names) -> dict:
    """CIRR's Recall@{1,5,10,50} and Recall_subset@{1,2,3}, the reference dropped from every ranking, which must
    hold every other ``img_set`` member (a full-gallery ranking does)."""
    _check_lengths(len(rankings), targets=targets, subsets=subsets, references=references)
    cleaned: list[list[ImageName]] = []
    subset_lists = [list(subset) for subset in subsets]
    for index, (ranking, subset, reference) in enumerate(zip(rankings, subset_lists, references)):
        check_unique(ranking, f"query index {index}")
        kept = [item for item in ranking if item != reference]
        present = set(kept)
        if missing := [m for m in subset if m != reference and m not in present]:
            raise InputError(
                f"query index {index}: ranking ({len(kept)} names without the reference) lacks "
                f"img_set member(s) {missing[:3]!r}, so Recall_subset is undetermined; expected a "
                f"full-gallery ranking, over a gallery (the CIRR split file) that lists every img_set member"
            )
        cleaned.append(kept)
    scores = {f"Recall@{k}": recall_at_k(cleaned, targets, k) for k in CIRR_KS}
    for k in CIRR_SUBSET_KS:
        scores[f"Recall_subset@{k}"] = recall_subset_at_k(cleaned, targets, subset_lists, references, k)
    return scores


def cirr_scoring_rankings(bench: CIRBenchmark, rankings: list[list[str]], k: int = max(CIRR_KS)) -> list[list[str]]:
    """Each full-gallery ranking cut to its top ``k`` plus its remaining ``img_set`` members, in order:
    the same metrics as the full rankings, scored in a second instead of a minute."""
    out = []
    for q, ranking in zip(bench.queries, rankings):
        head = list(ranking[:k])
        members = set(q.subset or ()) - {q.reference} - set(head)
        out.append(head + ([n for n in ranking[k:] if n in members] if members else []))
    return out
