"""Does bf16 training change a conclusion? SEARLE-OTI and SEARLE (φ) on the shapes world with OTI and φ's
training at each precision, every metric's difference with its paired-bootstrap interval (the queries
resampled, the same resamples for every metric): ``python -m benchmarks precision-proof``."""

from __future__ import annotations

import time

from searle_core.infra.markdown import markdown_table
from searle_core.metrics.significance import paired_bootstrap, per_query_scores
from searle_core.notebook.results import evaluate_setting
from searle_core.notebook.study import open_study

METRICS: tuple[str, ...] = ("mAP@5", "mAP@10", "mAP@25", "mAP@50", "Recall@1", "Recall@5", "Recall@10", "Recall@50")
METHODS: tuple[str, ...] = ("searle-oti", "searle")


def precision_rows(
    splits=("val", "test"),
    precisions=("fp32", "bf16"),
    methods=METHODS,
    metrics=METRICS,
    n_resamples: int = 10_000,
    seed: int = 42,
    log=print,
    **settings,
) -> list[dict]:
    """One row per split, method and metric: each precision's value, the difference of the later ones to the
    first and its 95 % interval. ``settings``: run settings (the shapes profile's sizes by default)."""
    settings = {"quick": False, "oti_steps": 100, "phi_epochs": 70, "phi_images": 256, **settings}
    rows = []
    for split in splits:
        scores = {}
        for precision in precisions:
            study = open_study("shapes", split=split, precision=precision, seed=seed, **settings)
            start = time.perf_counter()
            table = evaluate_setting(study, list(methods), log=None).table
            log(f"{split} {precision}: {time.perf_counter() - start:.0f} s (training and inversion included)")
            for method in methods:
                rankings = table.evaluations[method].rankings
                scores[precision, method] = {m: per_query_scores(study.bench, rankings, m)[0] for m in metrics}
        base = precisions[0]
        for method in methods:
            for metric in metrics:
                row = {"split": split, "method": method, "metric": metric}
                row |= {p: float(scores[p, method][metric].mean()) for p in precisions}
                for p in precisions[1:]:
                    diff, low, high = paired_bootstrap(
                        scores[p, method][metric], scores[base, method][metric], n_resamples=n_resamples, seed=seed
                    )
                    row |= {f"{p}-{base}": diff, f"{p}-{base} low": low, f"{p}-{base} high": high}
                rows.append(row)
    return rows


def rows_markdown(rows: list[dict], precisions=("fp32", "bf16")) -> str:
    base, headers = precisions[0], ["split", "method", "metric", *precisions]
    for p in precisions[1:]:
        headers += [f"{p} − {base}", "95 % interval"]
    body = []
    for r in rows:
        line = [r["split"], r["method"], r["metric"], *(f"{r[p]:.2f}" for p in precisions)]
        for p in precisions[1:]:
            key = f"{p}-{base}"
            line += [f"{r[key]:+.2f}", f"[{r[key + ' low']:+.2f}, {r[key + ' high']:+.2f}]"]
        body.append(line)
    return markdown_table(headers, body)


def ablation_rows(
    precisions=("fp32", "bf16"), max_queries: int = 50, seed: int = 42, log=print, **settings
) -> list[dict]:
    """Notebook 5's readings (shapes profile: the first ``max_queries`` validation queries, OTI steps 50 and 350,
    φ on 1 % and 10 % of its images) with OTI and φ trained in each precision: one row per variant, each
    precision's difference to its part's full method, interval and reading."""
    from searle_core.notebook import ablations

    settings = {"quick": False, "oti_steps": 100, "phi_epochs": 70, "phi_images": 256, **settings}
    variants = ablations.oti_variants(settings["oti_steps"], (50, 350)) + ablations.phi_variants((0.01, 0.1, 1.0))
    rows: dict[tuple[str, str], dict] = {}
    for precision in precisions:
        study = open_study("shapes", precision=precision, seed=seed, **settings).subset(max_queries)
        start, rankings = time.perf_counter(), {}
        ablations.run_ablations(study, variants, True, rankings)
        log(f"ablations {precision}: {time.perf_counter() - start:.0f} s")
        for r in ablations.intervals(study, rankings).itertuples():
            row = rows.setdefault((r.part, r.variant), {"part": r.part, "variant": r.variant, "metric": r.metric})
            row[precision] = f"{r.difference:+.1f} [{r.low:+.1f}, {r.high:+.1f}] {r.reading}"
    return list(rows.values())
