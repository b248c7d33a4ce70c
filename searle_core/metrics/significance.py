"""Is one method really above another? A paired bootstrap (both methods on the same resampled queries, FashionIQ's
within each category) says whether an ordering is more than the luck of which queries the benchmark holds."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from searle_core.datasets.base import CIRBenchmark
from searle_core.infra.errors import InputError
from searle_core.infra.markdown import markdown_table
from searle_core.metrics.benchmarks import average_precision_at_k, cirr_scoring_rankings

#: Resamples drawn at a time. It is part of the seeded draw order: changing it moves the intervals slightly.
RESAMPLE_CHUNK = 1000


@dataclass(frozen=True)
class Difference:
    """``diff`` = metric(method) - metric(reference), in points, with its bootstrap interval of coverage ``level``."""

    method: str
    reference: str
    metric: str
    value: float
    diff: float
    low: float
    high: float
    level: float

    @property
    def clear(self) -> bool:  # the interval excludes zero: the ordering is not bootstrap noise
        return self.low > 0 or self.high < 0


def main_metric(dataset: str) -> str:
    """The headline metric of a dataset (the one bar charts, logs and comparisons use)."""
    return {"cirr": "Recall@1", "fashioniq": "average/Recall@10"}.get(dataset, "mAP@10")


def per_query_scores(
    bench: CIRBenchmark, rankings: list[list[str]], metric: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's score (percent) in ``metric`` (``mAP@K``, ``Recall@K`` or ``average/Recall@K``; default
    :func:`main_metric`) and group (FashionIQ category, else 0): the metric is the mean of the group means."""
    metric = metric or main_metric(bench.name)
    kind, _, k_text = metric.split("/")[-1].partition("@")
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
        hit = average_precision_at_k(ranking, truths, k) if kind == "mAP" else bool(set(ranking[:k]) & set(truths))
        scores[i] = 100.0 * hit
    return scores, np.unique([getattr(q, "category", None) or "" for q in bench.queries], return_inverse=True)[1]


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    groups: np.ndarray | None = None,
    n_resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(diff, low, high)``: the metric (mean of group means) of per-query scores ``a`` minus ``b`` and
    its percentile interval, resampling within ``groups`` (``None``: one group)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise InputError(
            f"paired scores must be two 1-D arrays of the same non-zero length, got {a.shape} and {b.shape}"
        )
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}")
    groups = np.zeros(len(a), dtype=int) if groups is None else np.asarray(groups)
    d, rng = a - b, np.random.default_rng(seed)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    observed = float(np.mean([d[m].mean() for m in members]))
    resampled = np.zeros(n_resamples)  # in chunks: 10,000 × 4,000 CIRR queries at once take over half a GiB
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
    n_resamples: int = 10_000,
    seed: int = 0,
) -> list[Difference]:
    """Every method of ``rankings`` against ``reference`` in the headline metric, same resamples, 95 % intervals."""
    if reference not in rankings:
        raise InputError(f"reference method {reference!r} is not among the compared ones: {', '.join(rankings)}")
    metric = main_metric(bench.name)
    ref, groups = per_query_scores(bench, rankings[reference], metric)
    out = []
    for method in [m for m in rankings if m != reference]:
        scores, _ = per_query_scores(bench, rankings[method], metric)
        diff, low, high = paired_bootstrap(scores, ref, groups, n_resamples, 0.95, seed)
        value = float(np.mean([scores[groups == g].mean() for g in np.unique(groups)]))
        out.append(Difference(method, reference, metric, value, diff, low, high, 0.95))
    return out


def to_markdown(differences: list[Difference], names: dict[str, str] | None = None) -> str:
    """One row per method: its metric, the difference to the reference and the interval."""
    if not differences:
        return ""
    names, first = names or {}, differences[0]
    ref = names.get(first.reference, first.reference)
    header = ["Method", first.metric, f"− {ref}", f"{100 * first.level:g} % interval", "clear"]
    rows = [
        [names.get(d.method, d.method), f"{d.value:.2f}", f"{d.diff:+.2f}", f"[{d.low:+.2f}, {d.high:+.2f}]"]
        + ["yes" if d.clear else "no"]
        for d in differences
    ]
    return markdown_table(header, rows, [False, True, True, False, False])


def write_differences(differences: list[Difference], path: str | Path, names: dict[str, str] | None = None) -> Path:
    """The comparison as Markdown at ``path`` (``.md``) and CSV beside it; returns the Markdown path."""
    path = Path(path).with_suffix(".md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_markdown(differences, names))
    with path.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "reference", "metric", "value", "diff", "low", "high", "level", "clear"])
        for d in differences:
            values = [f"{v:.4f}" for v in (d.value, d.diff, d.low, d.high)]
            writer.writerow([d.method, d.reference, d.metric, *values, d.level, d.clear])
    return path
