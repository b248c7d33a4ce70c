"""Retrieval metrics of the three SEARLE benchmarks, computed from rankings.

A *ranking* is the ordered list of gallery names (``str`` or ``int``) retrieved for one query, best
first. Rankings are already ordered, so ties are no concern here; :func:`rank_by_scores` turns a
similarity matrix into rankings with a documented, deterministic tie order.

Conventions shared by every function:

* Values are returned in **percent** (floats in ``[0, 100]``), except
  :func:`average_precision_at_k`, which returns the fraction for a single query.
* A ranking shorter than ``k`` is allowed: the missing ranks count as misses.
* A name repeated inside one ranking is an error (:class:`ValueError` naming the query and the
  item), as the CIRCO evaluation server requires unique predictions per query.
* Names are compared with ``==``: ``"123"`` and ``123`` are different names, so keep rankings and
  annotations in the same type.

Protocols (as in the authors' code and the official evaluators):

* CIRR: Recall@{1,5,10,50} over the gallery with the reference removed; Recall_subset@{1,2,3}
  inside the query's ``img_set`` minus the reference.
* FashionIQ: Recall@{10,50} per category and their mean.
* CIRCO: mAP@K over all ground truths with AP@K divided by ``min(#GT, K)``; Recall@K of the single
  ``target_img_id``; mAP@10 per semantic aspect.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from searle_core.datasets.base import CIRBenchmark
from searle_core.datasets.circo import CIRCO_ASPECTS
from searle_core.datasets.fashioniq import FASHIONIQ_CATEGORIES
from searle_core.infra.errors import InputError

ImageName = str | int
Ranking = Sequence[ImageName]


CIRCO_KS: tuple[int, ...] = (5, 10, 25, 50)
CIRR_KS: tuple[int, ...] = (1, 5, 10, 50)
CIRR_SUBSET_KS: tuple[int, ...] = (1, 2, 3)
FASHIONIQ_KS: tuple[int, ...] = (10, 50)


# --------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _check_unique(ranking: Ranking, query: Hashable) -> None:
    """Raise ValueError naming ``query`` and the first repeated item of ``ranking``."""
    seen: dict[ImageName, int] = {}
    for position, item in enumerate(ranking):
        first = seen.setdefault(item, position)
        if first != position:
            raise InputError(
                f"query {query}: duplicate prediction {item!r} at ranks {first + 1} and "
                f"{position + 1}; each image may appear at most once in a ranking"
            )


def _check_lengths(n_rankings: int, **others: Sequence) -> None:
    if n_rankings == 0:
        raise InputError("no queries: metrics are undefined for an empty list of rankings")
    for name, values in others.items():
        if len(values) != n_rankings:
            raise InputError(f"got {n_rankings} rankings but {len(values)} {name}")


def _hit_at_k(ranking: Ranking, target: ImageName, k: int) -> bool:
    return any(item == target for item in list(ranking)[:k])


# --------------------------------------------------------------------------------------------------
# single-target recall
# --------------------------------------------------------------------------------------------------


def recall_at_k(rankings: Sequence[Ranking], targets: Sequence[ImageName], k: int) -> float:
    """Percentage of queries whose single target is among the first ``k`` names of their ranking.

    Args:
        rankings: one ranking per query, best first.
        targets: the annotated target of each query.
        k: cut-off rank (a ranking shorter than ``k`` is allowed; missing ranks are misses).

    Returns:
        Recall@k in percent.
    """
    k = check_k(k)
    _check_lengths(len(rankings), targets=targets)
    hits = 0
    for index, (ranking, target) in enumerate(zip(rankings, targets)):
        _check_unique(ranking, f"index {index}")
        hits += _hit_at_k(ranking, target, k)
    return 100.0 * hits / len(rankings)


def recall_any_at_k(rankings: Sequence[Ranking], ground_truths_list: Sequence[Iterable[ImageName]], k: int) -> float:
    """Percentage of queries with at least one ground truth among the first ``k`` names.

    The ``shapes`` benchmark's Recall@K: every ground truth satisfies the query equally, so the
    hit of any of them counts (CIRCO's Recall@K instead counts its single ``target_img_id``).

    Args:
        rankings: one ranking per query, best first.
        ground_truths_list: per query, every image that satisfies it.
        k: cut-off rank.
    """
    k = check_k(k)
    _check_lengths(len(rankings), ground_truths_list=ground_truths_list)
    hits = 0
    for index, (ranking, gts) in enumerate(zip(rankings, ground_truths_list)):
        _check_unique(ranking, f"index {index}")
        hits += bool(set(ranking[:k]) & set(gts))
    return 100.0 * hits / len(rankings)


def recall_subset_at_k(
    rankings: Sequence[Ranking],
    targets: Sequence[ImageName],
    subsets: Sequence[Iterable[ImageName]],
    references: Sequence[ImageName],
    k: int,
) -> float:
    """CIRR Recall_subset@k: recall of the target inside the query's image set.

    Each ranking is restricted, order kept, to the members of the query's ``img_set`` other than
    its reference image; the metric is then the recall@k of the target in that short list.

    Args:
        rankings: one ranking per query, best first (normally over the whole gallery).
        targets: the target of each query (a member of its subset).
        subsets: CIRR ``img_set`` members of each query (the reference may be included; it is
            removed).
        references: the reference image of each query.
        k: cut-off rank inside the subset (1, 2 or 3 in CIRR).

    Returns:
        Recall_subset@k in percent. A subset member absent from a truncated ranking is simply
        absent from the restricted list (missing ranks are misses), so pass rankings that contain
        every subset member to get the official value (:func:`cirr_metrics` enforces this).
    """
    k = check_k(k)
    _check_lengths(len(rankings), targets=targets, subsets=subsets, references=references)
    hits = 0
    for index, (ranking, target, subset, reference) in enumerate(zip(rankings, targets, subsets, references)):
        _check_unique(ranking, f"index {index}")
        members = set(subset)
        members.discard(reference)
        restricted = [item for item in ranking if item in members]
        hits += _hit_at_k(restricted, target, k)
    return 100.0 * hits / len(rankings)


# --------------------------------------------------------------------------------------------------
# multiple ground truths: CIRCO mAP@K
# --------------------------------------------------------------------------------------------------


def average_precision_at_k(ranking: Ranking, ground_truths: Iterable[ImageName], k: int) -> float:
    """CIRCO average precision at ``k`` of one query with several ground truths.

    ``AP@k = sum_{i <= k, ranking[i] is a GT} precision@i / min(#GT, k)``: the sum runs over the
    hit positions only and is divided by the number of ground truths that *could* appear in the top
    ``k`` (not by the number of hits), as in the official CIRCO evaluator.

    Args:
        ranking: the predicted names, best first (shorter than ``k`` is allowed).
        ground_truths: every name that satisfies the query (duplicates are counted once).
        k: cut-off rank.

    Returns:
        AP@k as a fraction in ``[0, 1]`` (not a percentage).
    """
    k = check_k(k)
    _check_unique(ranking, "(single ranking)")
    gts = set(ground_truths)
    if not gts:
        raise InputError("average precision needs at least one ground truth, got none")
    hits = 0
    total = 0.0
    for position, item in enumerate(list(ranking)[:k], start=1):
        if item in gts:
            hits += 1
            total += hits / position
    return total / min(len(gts), k)


def map_at_k(rankings: Sequence[Ranking], ground_truths_list: Sequence[Iterable[ImageName]], k: int) -> float:
    """CIRCO mAP@k: mean of :func:`average_precision_at_k` over queries.

    Args:
        rankings: one ranking per query, best first.
        ground_truths_list: the ground truths of each query.
        k: cut-off rank.

    Returns:
        mAP@k in percent.
    """
    k = check_k(k)
    _check_lengths(len(rankings), ground_truths=ground_truths_list)
    total = 0.0
    for index, (ranking, gts) in enumerate(zip(rankings, ground_truths_list)):
        _check_unique(ranking, f"index {index}")
        total += average_precision_at_k(ranking, gts, k)
    return 100.0 * total / len(rankings)


def _aspects_of(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(dict.fromkeys(value))  # a query counts once per aspect


def circo_metrics(
    rankings: Sequence[Ranking],
    ground_truths_list: Sequence[Iterable[ImageName]],
    targets: Sequence[ImageName],
    aspects_list: Sequence[str | Iterable[str] | None],
    ks: Sequence[int] = CIRCO_KS,
) -> dict:
    """Every CIRCO validation metric, as reported by the official evaluator.

    Args:
        rankings: one ranking per query (normally the top 50), best first.
        ground_truths_list: ``gt_img_ids`` of each query.
        targets: ``target_img_id`` of each query (the image the caption was written for).
        aspects_list: ``semantic_aspects`` of each query: a list of aspect names (a single name or
            ``None`` is accepted too). A query counts in each of its aspects.
        ks: cut-offs for mAP@K and Recall@K.

    Returns:
        ``{"mAP@5": ..., ..., "Recall@5": ..., ..., "semantic_mAP@10": {aspect: mAP@10}}``, all in
        percent. ``semantic_mAP@10`` lists the nine official aspects in their official order, then
        any other aspect name in order of first appearance; an aspect without queries is omitted.
    """
    _check_lengths(len(rankings), ground_truths=ground_truths_list, targets=targets, aspects=aspects_list)
    ks = [check_k(k) for k in ks]
    for index, ranking in enumerate(rankings):
        _check_unique(ranking, f"index {index}")
    gts_list = [list(gts) for gts in ground_truths_list]
    scores: dict = {}
    for k in ks:
        scores[f"mAP@{k}"] = map_at_k(rankings, gts_list, k)
    for k in ks:
        scores[f"Recall@{k}"] = recall_at_k(rankings, targets, k)

    per_aspect: dict[str, list[float]] = {}
    for ranking, gts, aspects in zip(rankings, gts_list, aspects_list):
        ap10 = average_precision_at_k(ranking, gts, 10)
        for aspect in _aspects_of(aspects):
            per_aspect.setdefault(aspect, []).append(ap10)
    order = [a for a in CIRCO_ASPECTS if a in per_aspect]
    order += [a for a in per_aspect if a not in CIRCO_ASPECTS]
    scores["semantic_mAP@10"] = {a: 100.0 * float(np.mean(per_aspect[a])) for a in order}
    return scores


# --------------------------------------------------------------------------------------------------
# benchmark bundles: FashionIQ and CIRR
# --------------------------------------------------------------------------------------------------


def fashioniq_metrics(
    rankings_by_category: Mapping[str, Sequence[Ranking]],
    targets_by_category: Mapping[str, Sequence[ImageName]],
) -> dict:
    """FashionIQ validation metrics: Recall@10 and Recall@50 per category and their mean.

    Args:
        rankings_by_category: ``{category: rankings}`` (``dress``, ``shirt``, ``toptee``, any
            subset of them; another name is accepted and reported after these three).
        targets_by_category: ``{category: targets}`` with the same keys.

    Returns:
        ``{category: {"Recall@10": ..., "Recall@50": ...}, ..., "average": {...}}`` in percent;
        ``average`` is the unweighted mean over the categories present, as in the paper.
    """
    if not rankings_by_category:
        raise InputError("no FashionIQ category given")
    if set(rankings_by_category) != set(targets_by_category):
        raise InputError(
            f"categories differ: rankings for {sorted(rankings_by_category)}, targets for {sorted(targets_by_category)}"
        )
    if "average" in rankings_by_category:
        raise InputError("'average' is reserved for the mean over categories")
    order = [c for c in FASHIONIQ_CATEGORIES if c in rankings_by_category]
    order += [c for c in rankings_by_category if c not in FASHIONIQ_CATEGORIES]
    scores: dict = {}
    for category in order:
        rankings, targets = rankings_by_category[category], targets_by_category[category]
        try:
            scores[category] = {f"Recall@{k}": recall_at_k(rankings, targets, k) for k in FASHIONIQ_KS}
        except ValueError as error:
            raise InputError(f"FashionIQ category {category!r}: {error}") from None
    scores["average"] = {f"Recall@{k}": float(np.mean([scores[c][f"Recall@{k}"] for c in order])) for k in FASHIONIQ_KS}
    return scores


def cirr_metrics(
    rankings: Sequence[Ranking],
    targets: Sequence[ImageName],
    subsets: Sequence[Iterable[ImageName]],
    references: Sequence[ImageName],
) -> dict:
    """CIRR validation metrics: Recall@{1,5,10,50} and Recall_subset@{1,2,3}.

    The reference image is dropped from every ranking before scoring, as the CIRR protocol does
    (a no-op for rankings built with ``rank_by_scores(..., exclude=references)``, which is the way
    to keep a top-50 list 50 long).

    Args:
        rankings: one ranking per query, best first. It must contain every ``img_set`` member of
            its query other than the reference (a full-gallery ranking does), otherwise the
            subset order is unknown and a ValueError is raised.
        targets: the target of each query.
        subsets: the ``img_set`` members of each query.
        references: the reference image of each query.

    Returns:
        ``{"Recall@1": ..., "Recall@5": ..., "Recall@10": ..., "Recall@50": ...,
        "Recall_subset@1": ..., "Recall_subset@2": ..., "Recall_subset@3": ...}`` in percent.
    """
    _check_lengths(len(rankings), targets=targets, subsets=subsets, references=references)
    cleaned: list[list[ImageName]] = []
    subset_lists = [list(subset) for subset in subsets]
    for index, (ranking, subset, reference) in enumerate(zip(rankings, subset_lists, references)):
        _check_unique(ranking, f"index {index}")
        kept = [item for item in ranking if item != reference]
        present = set(kept)
        missing = [m for m in subset if m != reference and m not in present]
        if missing:
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
    """Each full-gallery ranking cut to its top ``k`` plus its remaining ``img_set`` members, in order.

    Recall@K (K <= ``k``) reads the top ``k`` only and Recall_subset the members' relative order, so
    the metrics are those of the full rankings; scoring 55 names instead of the whole gallery per
    query makes CIRR's validation metrics take a second instead of a minute.

    Args:
        bench: a CIRR benchmark.
        rankings: its full-gallery rankings, in query order.
        k: the longest Recall@K cut-off.
    """
    out = []
    for q, ranking in zip(bench.queries, rankings):
        head = list(ranking[:k])
        members = set(q.subset or ()) - {q.reference} - set(head)
        out.append(head + ([n for n in ranking[k:] if n in members] if members else []))
    return out
