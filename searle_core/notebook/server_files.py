"""Test-server prediction files for every method and backbone of a results run.

The paper's CIRR and CIRCO numbers are test-split numbers, which only the datasets' evaluation
servers can score. For each evaluated (benchmark, backbone) of CIRR or CIRCO, this runs the same
methods, with the same φ and OTI settings, on the test split of the same dataset folder (CIRR
``test1``, CIRCO ``test``) and writes the files the servers take (:mod:`searle_core.report.submission`),
with an ``UPLOAD.md`` saying where they go. Files of a row that is not the paper's method carry its
variant in the name (``searle-oti-templates``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from searle_core.datasets import load_benchmark
from searle_core.jobs.prepare import evaluate
from searle_core.notebook.inversions import prefill_oti
from searle_core.report.submission import cirr_subset_rankings, write_circo_submission, write_cirr_submission

#: The split each server scores.
TEST_SPLITS: dict[str, str] = {"cirr": "test1", "circo": "test"}
SERVERS: dict[str, str] = {"cirr": "https://cirr.cecs.anu.edu.au/", "circo": "https://circo.micc.unifi.it/"}
UPLOAD_NOTE = f"""# Test-server prediction files

The paper's CIRR and CIRCO numbers are on the test splits, scored by the datasets' evaluation
servers; a validation number from this run is not comparable with them. Upload these files to get
the comparable number.

- `cirr/<backbone>/recall_submission_<method>.json` and `recall_subset_submission_<method>.json`
  (CIRR test1, top 50 and top 3 inside each query's image set): the CIRR evaluation server,
  {SERVERS["cirr"]} (its test-split submission page; both files of a method together).
- `circo/<backbone>/<method>.json` (CIRCO test, top 50 image ids per query): the CIRCO evaluation
  server, {SERVERS["circo"]} (linked from the CIRCO repository, miccunifi/CIRCO).

A `-templates` or `-no-phrases` suffix marks OTI without the authors' GPT phrases: not the paper's
method.
"""


def _file_stem(method: str, variant: str | None) -> str:
    return method + (f"-{variant.replace(' ', '-')}" if variant else "")


def write_test_submissions(settings: list, folder: str | Path, log: Callable[[str], None] | None = print) -> list[Path]:
    """Server files for every CIRR / CIRCO setting of a results run (others are skipped).

    Args:
        settings: :class:`~searle_core.notebook.results.Setting` objects (their methods, φ and OTI settings).
        folder: where ``cirr/<backbone>/...``, ``circo/<backbone>/...`` and ``UPLOAD.md`` go.
        log: one line per written method (``None``: silent).

    Returns:
        The paths written (empty when no setting is on CIRR or CIRCO).
    """

    folder = Path(folder)
    written: list[Path] = []
    for s in settings:
        dataset = s.study.dataset
        if dataset not in TEST_SPLITS or not s.evaluations or "root" not in s.study.bench.extra:
            continue
        bench = load_benchmark(dataset, s.study.bench.extra["root"], TEST_SPLITS[dataset])
        study = dataclasses.replace(s.study, bench=bench, _gallery=None)
        # The validation run's context (vocabulary, OTI settings, φ, trained baselines), without its
        # tokens: those are of the validation references.
        ctx = study.context() if s.ctx is None else dataclasses.replace(s.ctx, tokens={}, token_seconds={}, captions={})
        if "searle-oti" in s.evaluations:
            prefill_oti(study, ctx)
        gallery = study.gallery()
        out = folder / dataset / study.backbone.name
        for method in s.evaluations:
            result = evaluate(method, bench, study.backbone, ctx, gallery=gallery)
            stem = _file_stem(method, s.variants.get(method))
            ids = [q.query_id for q in bench.queries]
            if dataset == "cirr":
                paths = list(
                    write_cirr_submission(
                        out,
                        dict(zip(ids, result.rankings)),
                        cirr_subset_rankings(bench.queries, result.rankings),
                        name=stem,
                        queries=bench.queries,
                    )
                )
            else:
                paths = [write_circo_submission(out / f"{stem}.json", dict(zip(ids, result.rankings)), bench.queries)]
            written += paths
            if log:
                log(f"{dataset} {bench.split} {study.backbone.name} {method}: " + ", ".join(p.name for p in paths))
    if written:
        note = folder / "UPLOAD.md"
        note.write_text(UPLOAD_NOTE)
        written.append(note)
    return written
