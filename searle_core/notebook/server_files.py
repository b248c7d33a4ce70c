"""Test-server prediction files for every method and backbone of a results run.

The paper's CIRR and CIRCO numbers are test-split numbers, which only the datasets' servers score. For each
evaluated CIRR / CIRCO setting this runs the same methods, with the same φ and OTI settings, on the test split
of the same folder and writes the servers' files, with an ``UPLOAD.md`` saying where they go.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from searle_core.datasets import load_benchmark
from searle_core.jobs.evaluation import evaluate
from searle_core.methods.context import Computed
from searle_core.notebook.inversions import prefill_oti
from searle_core.notebook.results import Setting
from searle_core.report.submission import cirr_subset_rankings, write_circo_submission, write_cirr_submission

#: The split each server scores.
TEST_SPLITS: dict[str, str] = {"cirr": "test1", "circo": "test"}
UPLOAD_NOTE = """# Test-server prediction files

The paper's CIRR and CIRCO numbers are on the test splits, scored by the datasets' evaluation
servers; a validation number from this run is not comparable with them. Upload these files to get
the comparable number.

- `cirr/<backbone>/recall_submission_<method>.json` and `recall_subset_submission_<method>.json`
  (CIRR test1, top 50 and top 3 inside each query's image set): the CIRR evaluation server,
  https://cirr.cecs.anu.edu.au/ (its test-split submission page; both files of a method together).
- `circo/<backbone>/<method>.json` (CIRCO test, top 50 image ids per query): the CIRCO evaluation
  server, https://circo.micc.unifi.it/ (linked from the CIRCO repository, miccunifi/CIRCO).

A `-templates` or `-no-phrases` suffix marks OTI without the authors' GPT phrases: not the paper's
method.
"""


def write_test_submissions(
    settings: list[Setting], folder: str | Path, log: Callable[[str], None] | None = print
) -> list[Path]:
    """Server files under ``folder/<dataset>/<backbone>/`` for every CIRR / CIRCO setting (others skipped),
    a variant's files named with it (``searle-oti-templates``); returns the paths written."""
    folder = Path(folder)
    written: list[Path] = []
    for s in settings:
        dataset = s.study.dataset
        if dataset not in TEST_SPLITS or not s.evaluations or "root" not in s.study.bench.extra:
            continue
        bench = load_benchmark(dataset, s.study.bench.extra["root"], TEST_SPLITS[dataset])
        study = dataclasses.replace(s.study, bench=bench, _gallery=None)
        # The validation run's context (vocabulary, OTI settings, φ, trained baselines) without its
        # tokens, which are of the validation references.
        ctx = study.context() if s.ctx is None else dataclasses.replace(s.ctx, token_seconds={}, computed=Computed())
        if "searle-oti" in s.evaluations:
            prefill_oti(study, ctx)
        gallery = study.gallery()
        out = folder / dataset / study.backbone.name
        ids = [q.query_id for q in bench.queries]
        for method in s.evaluations:
            rankings = evaluate(method, bench, study.backbone, ctx, gallery=gallery).rankings
            variant = s.variants.get(method)
            stem = method + (f"-{variant.replace(' ', '-')}" if variant else "")
            if dataset == "cirr":
                subset = cirr_subset_rankings(bench.queries, rankings)
                paths = list(write_cirr_submission(out, dict(zip(ids, rankings)), subset, stem, bench.queries))
            else:
                paths = [write_circo_submission(out / f"{stem}.json", dict(zip(ids, rankings)), bench.queries)]
            written += paths
            if log:
                log(f"{dataset} {bench.split} {study.backbone.name} {method}: " + ", ".join(p.name for p in paths))
    if written:
        (folder / "UPLOAD.md").write_text(UPLOAD_NOTE)
        written.append(folder / "UPLOAD.md")
    return written
