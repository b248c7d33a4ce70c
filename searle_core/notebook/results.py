"""The results notebook's engine: every method on every (benchmark, backbone) of a profile, the paper's
numbers beside ours, the tables as CSV, Markdown and LaTeX, the test-server files and the run's record.
A method a real-data setting cannot run (no φ, unlabeled images or captioner) is skipped, the reason noted."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from searle_core.baselines.palavra import PalavraConfig
from searle_core.baselines.pic2word import Pic2WordConfig
from searle_core.datasets import load_benchmark
from searle_core.infra.markdown import markdown_table
from searle_core.jobs.evaluation import evaluate
from searle_core.methods.context import Computed, MethodContext
from searle_core.methods.pipeline import MethodResult
from searle_core.metrics.significance import Difference, compare_methods, main_metric, write_differences
from searle_core.notebook.inversions import prefill_oti, study_phi, use_phi
from searle_core.notebook.record import Recorder, method_metrics
from searle_core.notebook.study import Study, open_study
from searle_core.report.paper_numbers import (
    COMPARED_COLUMNS,
    PAPER_TABLE_METRICS,
    REIMPLEMENTED_NOTE,
    compare_with_paper,
    results_frame,
)
from searle_core.report.submission import cirr_subset_rankings, write_circo_submission, write_cirr_submission
from searle_core.report.table import (
    DISPLAY_NAMES,
    SETTINGS_COLUMNS,
    Table,
    display_name,
    evaluate_methods,
    flatten,
    row_settings,
    settings_line,
    variant_notes,
    write_table,
)
from searle_core.settings import from_parameters


@dataclass
class Setting:
    """One (benchmark, backbone) of the profile, evaluated: its table and the method context it ran with."""

    study: Study
    table: Table
    ctx: MethodContext = field(repr=False)

    @property
    def evaluations(self) -> dict[str, MethodResult]:
        return self.table.evaluations

    @property
    def variants(self) -> dict[str, str]:
        """Method -> how it differs from the paper's (``TableRow.variant``)."""
        return {row.method: row.variant for row in self.table.rows if row.variant}

    @property
    def names(self) -> dict[str, str]:
        """Method -> printed name, with its variant label (``SEARLE-OTI (templates)``)."""
        return {m: display_name(m, self.variants.get(m)) for m in [*self.evaluations, *DISPLAY_NAMES]}


def _skip_reason(method: str, study: Study, has_phi: bool) -> str | None:
    if study.world is not None:
        return None  # the world trains whatever a method needs, offline
    if method == "searle" and not has_phi:
        return "no φ: pass phi_checkpoint (searle / searle-xl: the authors' released φ, or a file) or unlabeled"
    if method in ("pic2word", "palavra") and study.unlabeled is None:
        return "trains on unlabeled images: set unlabeled (the paper: ImageNet1K test)"
    if method == "lincir":
        return "trains on captions: `searle table --methods lincir --captions FILE` (or --lincir-checkpoint)"
    if method == "captioning":
        try:
            import transformers  # noqa: F401
        except ImportError:
            return "needs a captioning model: pip install transformers (BLIP base by default)"
    return None


def evaluate_setting(
    study: Study, methods: list[str], log=print, baseline_epochs: int = 0, baseline_images: int = 0, **settings
) -> Setting:
    """``methods`` on ``study.bench`` as ``searle table`` runs them, with the study's settings changed by
    ``settings`` (``RunSettings`` fields), its φ (:func:`study_phi`) and its cached OTI tokens;
    ``baseline_epochs`` / ``baseline_images`` shrink Pic2Word's and PALAVRA's training (0: defaults)."""
    if settings:
        study = dataclasses.replace(study, settings=from_parameters(settings, base=study.settings))
    ctx = study.context()
    _size_baselines(ctx, baseline_epochs, baseline_images)
    if "searle" in methods and (trained := study_phi(study)) is not None:
        use_phi(ctx, trained)
    if "searle-oti" in methods:
        prefill_oti(study, ctx)  # cached across notebooks; the row's time is the OTI's own
    if study.settings.captioner:
        ctx.captioner = study.settings.captioner
    skip = {m: reason for m in methods if (reason := _skip_reason(m, study, ctx.phi is not None))}
    say = (lambda line: log(f"{study.bench.name} {study.backbone.name} {line}")) if log else None
    distilled = not study.settings.phi_checkpoint
    table = evaluate_methods(
        study.bench, study.backbone, methods, ctx, say, gallery=study.gallery, skip=skip, phi_distilled=distilled
    )
    return Setting(study, table, ctx)


def _size_baselines(ctx, epochs: int, images: int) -> None:
    """Smaller Pic2Word / PALAVRA training (a smoke run's knobs); 0 keeps the default."""
    if epochs:
        ctx.pic2word_config = dataclasses.replace(Pic2WordConfig(), epochs=epochs)
        ctx.palavra_config = dataclasses.replace(PalavraConfig(), epochs=epochs)
    given = ctx.unlabeled
    if images and given is not None:
        source, names = given if isinstance(given, tuple) else (given, list(given.names))
        ctx.unlabeled = (source, names[:images])


def run_settings(
    benchmarks: list[dict],
    backbones: list[dict],
    methods: list[str],
    *,
    max_queries: int = 0,
    log=print,
    baseline_epochs: int = 0,
    baseline_images: int = 0,
    **settings,
) -> list[Setting]:
    """:func:`evaluate_setting` for every benchmark × backbone of a profile, each scored on its first
    ``max_queries`` queries (0: all). ``benchmarks``: ``[{"dataset", "dataset_path", "split"}, ...]``,
    ``backbones``: ``[{"name", "pretrained", "phi_checkpoint"}, ...]`` (``shapes`` only with ``shapes-clip``)."""
    out = []
    for b in benchmarks:
        for bb in backbones:
            if (b["dataset"] == "shapes") != (bb["name"] == "shapes-clip"):
                continue  # the world has its own CLIP; real data needs a real one
            where = {"dataset": b["dataset"], "dataset_path": b.get("dataset_path", ""), "split": b.get("split", "val")}
            clip = {"backbone": bb["name"], "pretrained": bb.get("pretrained", "default")}
            study = open_study(**where, **clip, phi_checkpoint=bb.get("phi_checkpoint", ""), **settings)
            out.append(evaluate_setting(study.subset(max_queries), methods, log, baseline_epochs, baseline_images))
    return out


def comparison(settings: list[Setting]) -> pd.DataFrame:
    """Long table: dataset, split, backbone, method, metric, reproduced, paper, diff, the settings columns
    (paper-table metrics only for datasets the paper reports; every overall metric for ``shapes``)."""
    frames = []
    for s in settings:
        pair = (s.study.dataset, s.study.backbone.name)
        frame = results_frame({(*pair, m): e.metrics for m, e in s.evaluations.items()})
        frame.insert(1, "split", s.study.bench.split)
        frame["variant"] = [s.variants.get(m, "") for m in frame.method]
        for i, column in enumerate(SETTINGS_COLUMNS):
            frame[column] = [row_settings(s.table.settings, m)[i] for m in frame.method]
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=COMPARED_COLUMNS)
    out = compare_with_paper(pd.concat(frames, ignore_index=True))
    shapes_metrics = [c for c in out.metric.unique() if "/" not in c]  # no per-aspect breakdowns
    return out[(out.dataset != "shapes") | out.metric.isin(shapes_metrics)].reset_index(drop=True)


def _cell(reproduced: float, paper: float, diff: float, paper_split: str, label: str) -> str:
    if pd.isna(paper):
        return f"{reproduced:.2f}"
    if label.startswith("original"):  # a re-implemented baseline: the original model's number, no difference
        return f"{reproduced:.2f} ({label} {paper_split}: {paper:.2f})"
    if pd.isna(diff):  # another split: the paper's number for reference, no difference
        return f"{reproduced:.2f} (paper {paper_split}: {paper:.2f})"
    return f"{reproduced:.2f} ({paper:.2f}, {diff:+.2f})"


def wide_table(compared: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """One dataset as printed: rows (backbone, method with its variant), a column per metric, cells
    ``"ours (paper, ours − paper)"`` on the paper's split, ``"ours (paper test: x)"`` on another, else ``"ours"``."""
    part = compared[compared.dataset == dataset]
    order = PAPER_TABLE_METRICS.get(dataset) or list(dict.fromkeys(part.metric))
    variants = part.variant.fillna("") if "variant" in part.columns else [""] * len(part)
    rows = zip(part.reproduced, part.paper, part["diff"], part.paper_split, part.paper_label.fillna(""))
    names = [display_name(m, v or None) for m, v in zip(part.method, variants)]
    cells = part.assign(cell=[_cell(*row) for row in rows], name=names)
    wide = cells.pivot_table(index=["backbone", "name"], columns="metric", values="cell", aggfunc="first", sort=False)
    wide = wide.reindex(columns=[m for m in order if m in wide.columns]).fillna("–")
    wide.index = wide.index.set_names(["backbone", "method"])
    return wide


def table_note(compared: pd.DataFrame, dataset: str) -> str:
    """What one dataset's cells mean: which split is ours and which the paper's, and the variant labels."""
    part = compared[compared.dataset == dataset]
    notes = []
    if part.paper.notna().any():
        ours = ", ".join(dict.fromkeys(part.split))
        theirs = ", ".join(dict.fromkeys(part.paper_split.dropna()))
        if part["diff"].notna().any():
            notes.append(f"Cells: ours (paper, ours − paper); ours and the paper's on {ours}.")
        else:
            notes.append(
                f"Cells: ours on {ours} (the paper's number on {theirs}). Different splits: no difference "
                f"is shown; the {theirs} numbers come from the evaluation server, for which the run writes "
                "the prediction files (submissions/)."
            )
        if part.paper_label.fillna("").str.startswith("original").any():
            notes.append(REIMPLEMENTED_NOTE)
    if "variant" in part.columns:
        notes += variant_notes(v or None for v in part.variant.fillna(""))
    return " ".join(notes)


def headline_rows(compared: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, str]:
    """The rows of one dataset's bar chart (its headline metric; variants named, without a paper tick)
    and its title, naming the split of the bars and of the ticks."""
    metric = main_metric(dataset)
    rows = compared[(compared.dataset == dataset) & (compared.metric == metric)].copy()
    if "variant" in rows.columns:
        rows["method"] = [display_name(m, v) if v else m for m, v in zip(rows.method, rows.variant.fillna(""))]
    title = f"{dataset} {', '.join(dict.fromkeys(rows.split))}: {metric}"
    if rows.paper.notna().any():
        title += f" (ticks: paper, {', '.join(dict.fromkeys(rows.paper_split.dropna()))})"
    return rows, title


def markdown(wide: pd.DataFrame) -> str:
    """A :func:`wide_table` as GitHub Markdown (backbone and method left-aligned)."""
    return markdown_table(
        ["Backbone", "Method", *wide.columns],
        ([bb, method, *row] for (bb, method), row in wide.iterrows()),
        [False, False] + [True] * len(wide.columns),
    )


def write_comparison(compared: pd.DataFrame, folder: str | Path) -> list[Path]:
    """Write ``results.csv`` (long) and per dataset ``results-<dataset>.{md,tex}``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "results.csv"]
    compared.to_csv(paths[0], index=False, float_format="%.4f")
    for dataset in dict.fromkeys(compared.dataset):
        part = compared[compared.dataset == dataset]
        wide, split, note = wide_table(compared, dataset), part.split.iloc[0], table_note(compared, dataset)
        md, tex = folder / f"results-{dataset}.md", folder / f"results-{dataset}.tex"
        note = f"\n{note}\n" if note else ""
        md.write_text(f"**{dataset} {split}**\n\n" + markdown(wide) + note + _settings_note(part))
        tex.write_text(wide.to_latex(escape=True, caption=f"{dataset} {split}", label=f"tab:{dataset}"))
        paths += [md, tex]
    return paths


def _settings_note(part: pd.DataFrame) -> str:
    """One settings line per backbone of a dataset (from the CSV's settings columns)."""
    if "preprocess" not in part:
        return ""
    lines = []
    for backbone, rows in part.groupby("backbone", sort=False):
        first = rows.iloc[0]
        phi = rows[rows.method == "searle"]
        settings = {k: (None if pd.isna(first[k]) or first[k] == "" else first[k]) for k in SETTINGS_COLUMNS}
        if len(phi):
            settings |= {k: phi.iloc[0][k] or None for k in ("phi_epoch", "phi_source")}
        lines.append(f"{backbone}: {settings_line(settings)}")
    return "\n" + "\n".join(lines) + "\n"


def headline(setting: Setting) -> dict[str, float]:
    """Method -> the benchmark's headline metric (:func:`main_metric`)."""
    metric = main_metric(setting.study.dataset)
    return {m: flatten(e.metrics).get(metric, math.nan) for m, e in setting.evaluations.items()}


def differences(
    setting: Setting, reference: str = "searle-oti", n_resamples: int = 10_000, seed: int = 0
) -> list[Difference]:
    """Every method against ``reference`` on the headline metric, paired bootstrap over queries ([] if not run)."""
    rankings = setting.table.rankings
    if reference not in rankings or len(rankings) < 2:
        return []
    return compare_methods(setting.study.bench, rankings, reference, n_resamples=n_resamples, seed=seed)


def save_results(
    out_dir: str | os.PathLike | None,
    notebook: str,
    settings: list[Setting],
    compared: pd.DataFrame,
    differences: dict[tuple[str, str], list[Difference]],
) -> list[Path]:
    """Record every method's metrics, timings, skips and settings and each difference to SEARLE-OTI (keys
    ``<dataset>/<backbone>/<method>/<metric>``), and write the comparison and per-benchmark tables under
    ``<out_dir>/tables`` as ``searle table`` does; returns the tables written (none without ``out_dir``)."""
    rec = Recorder(out_dir, notebook)
    for s in settings:
        pair = (s.study.dataset, s.study.backbone.name)
        key = "/".join(pair)
        for row in s.table.rows:
            at = f"{key}/{row.method}"
            rec.record(**method_metrics(at, s.evaluations[row.method].metrics))
            rec.record(**{f"{at}/seconds": row.seconds, f"{at}/train_seconds": row.train_seconds})
        rec.record(f"{key}/skipped", sorted(s.table.skipped))
        rec.record(f"{key}/settings", s.table.settings)
        for d in differences.get(pair, []):
            rec.record(f"{key}/{d.method}/vs-searle-oti", {"diff": d.diff, "low": d.low, "high": d.high})
    if not out_dir:
        return []
    tables = Path(out_dir) / "tables"
    written = write_comparison(compared, tables)
    for s in settings:
        stem = f"{s.study.dataset}-{s.study.bench.split}-{s.study.backbone.name}"
        written += list(write_table(s.table, tables, stem))
        if (diffs := differences.get((s.study.dataset, s.study.backbone.name))) is not None:
            written.append(write_differences(diffs, tables / f"{stem}-vs-searle-oti", s.names))
    return written


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
    """Server files under ``folder/<dataset>/<backbone>/`` for every CIRR / CIRCO setting, named with the
    method's variant (``searle-oti-templates``); returns the paths written."""
    folder = Path(folder)
    written: list[Path] = []
    for s in settings:
        dataset = s.study.dataset
        if dataset not in TEST_SPLITS or not s.evaluations or "root" not in s.study.bench.extra:
            continue
        bench = load_benchmark(dataset, s.study.bench.extra["root"], TEST_SPLITS[dataset])
        study = dataclasses.replace(s.study, bench=bench, _gallery=None)
        # the validation run's context (vocabulary, OTI settings, φ, baselines) less its references' tokens
        ctx = dataclasses.replace(s.ctx, token_seconds={}, computed=Computed())
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
