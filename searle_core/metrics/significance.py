"""Is one method really above another? A paired bootstrap over the benchmark's queries.

Two methods answer the same queries, so their difference is measured per query and the queries
are resampled with replacement, the same resample for both methods. The interval of the
difference in the headline metric says whether an ordering in a table is more than the luck of
which queries the benchmark happens to hold. FashionIQ's headline metric averages its categories,
so its queries are resampled within each category.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from searle_core.datasets.base import CIRBenchmark
from searle_core.infra.errors import InputError
from searle_core.infra.markdown import markdown_table
from searle_core.metrics import average_precision_at_k
from searle_core.metrics.benchmarks import cirr_scoring_rankings

#: Resamples drawn at a time. It is part of the seeded draw order: changing it moves the intervals slightly.
RESAMPLE_CHUNK = 1000


@dataclass(frozen=True)
class Difference:
    """``metric(method) - metric(reference)`` with its bootstrap interval, in points.

    Args:
        method: the compared method.
        reference: the method it is compared with.
        metric: the metric (``mAP@10``, ``Recall@1``, ``average/Recall@10``).
        value: the method's metric.
        diff: the observed difference.
        low: the interval's lower end.
        high: the interval's upper end.
        level: the interval's coverage (0.95).
    """

    method: str
    reference: str
    metric: str
    value: float
    diff: float
    low: float
    high: float
    level: float

    @property
    def clear(self) -> bool:
        """Whether the interval excludes zero (the ordering is not bootstrap noise)."""
        return self.low > 0 or self.high < 0


def main_metric(dataset: str) -> str:
    """The headline metric of a dataset (the one bar charts, logs and comparisons use)."""
    return {"cirr": "Recall@1", "fashioniq": "average/Recall@10"}.get(dataset, "mAP@10")


def per_query_scores(
    bench: CIRBenchmark, rankings: list[list[str]], metric: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's share of the metric (percent) and its group (FashionIQ category, else 0).

    The metric is the mean of its groups' means of these scores, as the dataset computes it.

    Args:
        bench: the benchmark the rankings answer.
        rankings: one ranking per query, as ``evaluate`` returns them (CIRR's without the reference).
        metric: ``mAP@K`` (shapes, CIRCO: the query's AP@K) or ``Recall@K`` / ``average/Recall@K``
            (a hit of the target, or of any ground truth, in the top K); default: :func:`main_metric`.
    """
    metric = metric or main_metric(bench.name)
    name = metric.split("/")[-1]
    kind, _, k_text = name.partition("@")
    if kind not in ("mAP", "Recall") or not k_text.isdigit():
        raise InputError(f"metric {metric!r}: expected mAP@K, Recall@K or average/Recall@K")
    if len(rankings) != len(bench.queries):
        raise InputError(f"{len(rankings)} rankings for {len(bench.queries)} queries of {bench.name} {bench.split}")
    k = int(k_text)
    if bench.name == "cirr":
        rankings = cirr_scoring_rankings(bench, rankings)
    scores = np.empty(len(rankings))
    for i, (ranking, q) in enumerate(zip(rankings, bench.queries)):
        truths = q.ground_truths or ([q.target] if q.target is not None else [])
        if not truths:
            raise InputError(f"query {q.query_id} of {bench.name} {bench.split} has no ground truth to score")
        if kind == "mAP":
            scores[i] = 100.0 * average_precision_at_k(ranking, truths, k)
        else:
            scores[i] = 100.0 * bool(set(ranking[:k]) & set(truths))
    categories = [getattr(q, "category", None) or "" for q in bench.queries]
    names = {c: g for g, c in enumerate(sorted(set(categories)))}
    return scores, np.array([names[c] for c in categories])


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    groups: np.ndarray | None = None,
    n_resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Difference of the metric of ``a`` and ``b`` (mean of group means) and its percentile interval.

    Args:
        a: per-query scores of one method.
        b: per-query scores of the other, same queries in the same order.
        groups: per query, its group; resampled within groups (``None``: one group).
        n_resamples: bootstrap resamples.
        level: interval coverage.
        seed: resampling seed.

    Returns:
        ``(diff, low, high)``.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise InputError(
            f"paired scores must be two 1-D arrays of the same non-zero length, got {a.shape} and {b.shape}"
        )
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}")
    groups = np.zeros(len(a), dtype=int) if groups is None else np.asarray(groups)
    d = a - b
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    observed = float(np.mean([d[m].mean() for m in members]))
    resampled = np.zeros(n_resamples)
    # Resamples in chunks: 10,000 × 4,000 CIRR queries at once would take over half a GiB.
    for start in range(0, n_resamples, RESAMPLE_CHUNK):
        size = min(RESAMPLE_CHUNK, n_resamples - start)
        for m in members:
            picks = m[rng.integers(0, len(m), size=(size, len(m)))]
            resampled[start : start + size] += d[picks].mean(axis=1)
    resampled /= len(members)
    tail = (1 - level) / 2
    low, high = np.quantile(resampled, [tail, 1 - tail])
    return observed, float(low), float(high)


def compare_methods(
    bench: CIRBenchmark,
    rankings: dict[str, list[list[str]]],
    reference: str = "searle-oti",
    metric: str | None = None,
    n_resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> list[Difference]:
    """Every method against ``reference`` on the same queries.

    Args:
        bench: the benchmark.
        rankings: method -> its rankings (``MethodResult.rankings``); must include ``reference``.
        reference: the method the others are compared with.
        metric: the compared metric (default: the dataset's headline metric).
        n_resamples: bootstrap resamples.
        level: interval coverage.
        seed: resampling seed (the same resamples for every method).
    """
    if reference not in rankings:
        raise InputError(f"reference method {reference!r} is not among the compared ones: {', '.join(rankings)}")
    metric = metric or main_metric(bench.name)
    ref, groups = per_query_scores(bench, rankings[reference], metric)
    out = []
    for method, ranks in rankings.items():
        if method == reference:
            continue
        scores, _ = per_query_scores(bench, ranks, metric)
        diff, low, high = paired_bootstrap(scores, ref, groups, n_resamples, level, seed)
        value = float(np.mean([scores[groups == g].mean() for g in np.unique(groups)]))
        out.append(Difference(method, reference, metric, value, diff, low, high, level))
    return out


def to_markdown(differences: list[Difference], names: dict[str, str] | None = None) -> str:
    """One row per method: its metric, the difference to the reference and the interval."""
    if not differences:
        return ""
    names = names or {}
    first = differences[0]
    ref = names.get(first.reference, first.reference)
    header = ["Method", first.metric, f"− {ref}", f"{100 * first.level:g} % interval", "clear"]
    rows = [
        [
            names.get(d.method, d.method),
            f"{d.value:.2f}",
            f"{d.diff:+.2f}",
            f"[{d.low:+.2f}, {d.high:+.2f}]",
            "yes" if d.clear else "no",
        ]
        for d in differences
    ]
    return markdown_table(header, rows, [False, True, True, False, False])


def write_differences(differences: list[Difference], path: str | Path, names: dict[str, str] | None = None) -> Path:
    """The comparison as Markdown at ``path`` (``.md``) and CSV beside it; returns the Markdown path."""
    import csv

    path = Path(path).with_suffix(".md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_markdown(differences, names))
    with path.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "reference", "metric", "value", "diff", "low", "high", "level", "clear"])
        for d in differences:
            writer.writerow(
                [
                    d.method,
                    d.reference,
                    d.metric,
                    f"{d.value:.4f}",
                    f"{d.diff:.4f}",
                    f"{d.low:.4f}",
                    f"{d.high:.4f}",
                    d.level,
                    d.clear,
                ]
            )
    return path
