"""The paired bootstrap: per-query scores add up to the dataset's metrics; the resampling against plain loops."""

import random

import numpy as np
import pytest

from searle_core.datasets.base import CIRBenchmark, CIRQuery
from searle_core.metrics.significance import (
    RESAMPLE_CHUNK,
    compare_methods,
    paired_bootstrap,
    per_query_scores,
    to_markdown,
)
from searle_core.report.table import flatten
from searle_core.retrieval.ranking import benchmark_metrics

GALLERY = [f"g{i}" for i in range(30)]


def bench(name: str, n: int = 24, seed: int = 0) -> CIRBenchmark:
    rng = random.Random(seed)
    queries = []
    for i in range(n):
        ref = rng.choice(GALLERY)
        truths = rng.sample([g for g in GALLERY if g != ref], 3 if name in ("shapes", "circo") else 1)
        others = [g for g in GALLERY if g not in truths and g != ref]
        queries.append(
            CIRQuery(
                f"q{i}",
                ref,
                ("is red",),
                truths[0],
                tuple(truths),
                subset=tuple([ref, truths[0]] + rng.sample(others, 4)) if name == "cirr" else None,
                aspect="color" if name == "circo" else None,
                category=("dress", "shirt", "toptee")[i % 3] if name == "fashioniq" else None,
            )
        )
    return CIRBenchmark(name, "val", queries, list(GALLERY), images=None, exclude_reference=name == "cirr")


def random_rankings(b: CIRBenchmark, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    out = []
    for q in b.queries:
        names = [g for g in GALLERY if not (b.exclude_reference and g == q.reference)]
        rng.shuffle(names)
        out.append(names)
    return out


@pytest.mark.parametrize(
    "name, metric",
    [
        ("shapes", "mAP@10"),
        ("shapes", "Recall@5"),
        ("circo", "mAP@25"),
        ("cirr", "Recall@1"),
        ("cirr", "Recall@5"),
        ("fashioniq", "average/Recall@10"),
        ("fashioniq", "average/Recall@50"),
    ],
)
def test_per_query_scores_average_to_the_dataset_metric(name, metric):
    b = bench(name)
    rankings = random_rankings(b, seed=1)
    scores, groups = per_query_scores(b, rankings, metric)
    mean_of_group_means = np.mean([scores[groups == g].mean() for g in np.unique(groups)])
    assert mean_of_group_means == pytest.approx(flatten(benchmark_metrics(b, rankings))[metric], abs=1e-9)
    assert len(np.unique(groups)) == (3 if name == "fashioniq" else 1)


def plain_bootstrap(a, b, groups, n_resamples, level, seed):
    """The same resampling written as loops: same draws (in chunks, group by group), one resample at a time."""
    rng = np.random.default_rng(seed)
    d = [x - y for x, y in zip(a, b)]
    members = [[i for i, g in enumerate(groups) if g == u] for u in sorted(set(groups))]
    draws = [[] for _ in members]
    for start in range(0, n_resamples, RESAMPLE_CHUNK):
        for k, m in enumerate(members):
            draws[k] += rng.integers(0, len(m), size=(min(RESAMPLE_CHUNK, n_resamples - start), len(m))).tolist()
    resampled = []
    for r in range(n_resamples):
        per_group = [sum(d[m[j]] for j in draws[k][r]) / len(m) for k, m in enumerate(members)]
        resampled.append(sum(per_group) / len(per_group))
    observed = sum(sum(d[i] for i in m) / len(m) for m in members) / len(members)
    resampled.sort()
    tail = (1 - level) / 2
    return observed, float(np.quantile(resampled, tail)), float(np.quantile(resampled, 1 - tail))


@pytest.mark.parametrize("grouped", [False, True])
def test_paired_bootstrap_matches_plain_loops(grouped):
    rng = np.random.default_rng(3)
    a, b = rng.random(40) * 100, rng.random(40) * 100
    groups = np.arange(40) % 3 if grouped else np.zeros(40, dtype=int)
    n = RESAMPLE_CHUNK + 300  # two chunks, the second partial
    got = paired_bootstrap(a, b, groups if grouped else None, n_resamples=n, level=0.9, seed=5)
    want = plain_bootstrap(list(a), list(b), list(groups), n, 0.9, 5)
    assert got == pytest.approx(want, abs=1e-9)


def test_paired_bootstrap_edge_cases():
    a = np.array([10.0, 20.0, 30.0, 40.0])
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)
    assert paired_bootstrap(a + 5, a) == pytest.approx((5.0, 5.0, 5.0))  # a constant shift has no spread
    # A clear, noisy improvement: the interval sits above zero and around the shift.
    rng = np.random.default_rng(0)
    base = rng.random(400) * 100
    diff, low, high = paired_bootstrap(base + 10 + rng.normal(0, 5, 400), base, seed=1)
    assert 0 < low < diff < high and low < 10 < high
    with pytest.raises(ValueError, match="same non-zero length"):
        paired_bootstrap(a, a[:3])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(a, a, level=1.5)


def test_compare_methods_and_its_table():
    b = bench("shapes", n=60)
    perfect = [list(q.ground_truths) + [g for g in GALLERY if g not in q.ground_truths] for q in b.queries]
    rankings = {"image-only": random_rankings(b, 2), "searle-oti": perfect}
    (d,) = compare_methods(b, rankings, n_resamples=500)
    assert (d.method, d.reference, d.metric) == ("image-only", "searle-oti", "mAP@10")
    assert d.diff == pytest.approx(d.value - 100.0) and d.high < 0 and d.clear
    md = to_markdown([d], {"image-only": "Image-only", "searle-oti": "SEARLE-OTI"}).splitlines()
    assert md[0] == "| Method | mAP@10 | − SEARLE-OTI | 95 % interval | clear |"
    assert md[2].startswith("| Image-only |") and md[2].endswith("| yes |")
    with pytest.raises(ValueError, match="reference method 'searle'"):
        compare_methods(b, rankings, reference="searle")
    with pytest.raises(ValueError, match="expected mAP@K"):
        per_query_scores(b, rankings["image-only"], "MRR")
