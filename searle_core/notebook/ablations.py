"""The paper's ablations, each a named change to OTI or to φ's training, scored on one benchmark.

OTI: no phrase regulariser; "templates only" (the regulariser's GPT phrases replaced by one plain
template per concept, "a photo of {concept}"); fewer or more steps (50/150/350); no EMA (the last
raw token instead of its moving average). φ: no distillation (a cosine between "a photo of $" with
φ's token and the image instead of the contrastive loss to OTI tokens); no phrase regulariser;
1/3/10/100 % of the unlabeled training images.

Every variant is evaluated with the same harness (``pipeline.evaluate``), gallery features and seed as
the main results, so a row differs from the full method by its one change only. φ variants train
from the same cached OTI tokens of the unlabeled images and are cached themselves.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from searle_core.infra.files import atomic_write_text
from searle_core.infra.markdown import markdown_table
from searle_core.inversion.concepts import Vocabulary
from searle_core.jobs.prepare import evaluate
from searle_core.metrics.significance import compare_methods
from searle_core.notebook.inversions import SNAPSHOT_STEPS, benchmark_oti, phi_recipe, subset_indices, train_study_phi
from searle_core.notebook.record import Recorder
from searle_core.notebook.study import Study
from searle_core.report.table import flatten

#: The regulariser's phrases of the "templates only" ablation: one plain template per concept.
TEMPLATE_ONLY_PHRASES: tuple[str, ...] = ("a photo of {}",)
FULL = "full (paper)"


@dataclass(frozen=True)
class Variant:
    """One ablation row.

    Args:
        part: ``"OTI"`` or ``"φ"``.
        name: what changes (``FULL`` for the unchanged method).
        oti: ``OTIConfig`` fields changed (OTI variants, and OTI of φ's targets stay unchanged).
        loss: ``PhiLossConfig`` fields changed (φ variants).
        phrases: ``"generated"`` (the vocabulary's bank) or ``"templates"`` (one template per concept).
        data_fraction: share of the unlabeled images φ trains on.
    """

    part: str
    name: str
    oti: dict = field(default_factory=dict)
    loss: dict = field(default_factory=dict)
    phrases: str = "generated"
    data_fraction: float = 1.0

    def changes(self) -> list[tuple[str, object]]:
        """The settings this variant changes from the full method, as ``(setting, value)`` pairs."""
        out: list[tuple[str, object]] = [(f"OTIConfig.{k}", v) for k, v in self.oti.items()]
        out += [(f"PhiLossConfig.{k}", v) for k, v in self.loss.items()]
        if self.phrases != "generated":
            out.append(("regulariser phrases", f"{self.phrases} ({TEMPLATE_ONLY_PHRASES[0]!r} per concept)"))
        if self.data_fraction < 1.0:
            out.append(("share of φ's unlabeled images", self.data_fraction))
        return out


def oti_variants(steps: int, step_grid: tuple[int, ...] | list[int] = (50, 150, 350)) -> list[Variant]:
    """The OTI rows: full, no regulariser, templates only, each step count of ``step_grid``, no EMA.

    Args:
        steps: the full method's steps (a grid entry equal to it is the full row itself).
        step_grid: the step counts compared.
    """
    rows = [
        Variant("OTI", FULL),
        Variant("OTI", "no phrase regulariser", oti={"lambda_gpt": 0.0}),
        Variant("OTI", "templates only", phrases="templates"),
    ]
    rows += [Variant("OTI", f"{s} steps", oti={"steps": int(s)}) for s in step_grid if int(s) != steps]
    rows.append(Variant("OTI", "no EMA", oti={"use_ema": False}))
    return rows


def phi_variants(fractions: tuple[float, ...] | list[float] = (0.01, 0.03, 0.1, 1.0)) -> list[Variant]:
    """The φ rows: full, no distillation (cosine to the image), no regulariser, each data fraction."""
    rows = [
        Variant("φ", FULL),
        Variant("φ", "no distillation (cosine to image)", loss={"distil_to_image": True}),
        Variant("φ", "no phrase regulariser", loss={"lambda_gpt": 0.0}),
    ]
    rows += [Variant("φ", f"{100 * f:g} % of images", data_fraction=float(f)) for f in fractions if float(f) < 1.0]
    return rows


def variant_table(variants: list[Variant]) -> pd.DataFrame:
    """One row per variant: its part, its name, the one setting it changes and the value it takes."""
    rows = []
    for v in variants:
        changes = v.changes() or [("(none)", "the paper's settings")]
        rows += [{"part": v.part, "variant": v.name, "setting": k, "value": value} for k, value in changes]
    return pd.DataFrame(rows)


def template_vocabulary(vocabulary: Vocabulary, templates: tuple[str, ...] = TEMPLATE_ONLY_PHRASES) -> Vocabulary:
    """The same concepts with each concept's phrases replaced by ``templates`` filled with it."""
    return Vocabulary(list(vocabulary.concepts), {c: [t.format(c) for t in templates] for c in vocabulary.concepts})


def _oti_tokens(study: Study, variant: Variant, oti_steps: int) -> tuple[dict, float]:
    """The variant's reference tokens and the OTI seconds they cost.

    Steps, no-EMA and the full row read one cached full-length run (its EMA snapshots and raw
    tokens, see ``inversions``); the regulariser rows are runs of their own.
    """
    ctx = study.context(oti_steps=oti_steps)
    config, vocabulary = ctx.oti_config, study.vocabulary
    if variant.phrases == "templates" and vocabulary is not None:
        vocabulary = template_vocabulary(vocabulary)
    steps = variant.oti.get("steps", oti_steps)
    if "lambda_gpt" in variant.oti:
        config = dataclasses.replace(config, lambda_gpt=variant.oti["lambda_gpt"])
    if steps > oti_steps or (steps < oti_steps and steps not in SNAPSHOT_STEPS):
        config = dataclasses.replace(config, steps=steps)  # not in the full run: a run of its own
        steps = config.steps
    run = benchmark_oti(study, config, vocabulary, ctx.oti_batch_size)
    if variant.oti.get("use_ema") is False:
        return run.as_dict("raw"), run.seconds
    if steps < config.steps:
        return run.as_dict(steps), run.seconds * steps / config.steps
    return run.as_dict(), run.seconds


def equal_step_epochs(study: Study, epochs: int, images: int | None, fraction: float) -> int:
    """Epochs that give φ on ``fraction`` of the images as many optimiser steps as ``epochs`` on all."""
    batch = phi_recipe(study, epochs).train_config().batch_size
    n = min(images or len(study.unlabeled[1]), len(study.unlabeled[1]))
    steps = epochs * math.ceil(n / batch)
    return max(1, math.ceil(steps / math.ceil(len(subset_indices(n, fraction, study.seed)) / batch)))


def run_variant(
    study: Study,
    variant: Variant,
    oti_steps: int,
    phi_epochs: int,
    phi_images: int | None = None,
    equal_steps: bool = True,
    rankings: dict[tuple[str, str], list[list[str]]] | None = None,
) -> dict:
    """Evaluate one variant; returns its flat metrics plus ``seconds`` (OTI or φ training, as run).

    Args:
        study: backbone, benchmark and vocabulary.
        variant: the change.
        oti_steps: the full method's OTI steps.
        phi_epochs: the full φ's epochs.
        phi_images: unlabeled images of the full φ (``None``: all).
        equal_steps: φ on a data fraction gets proportionally more epochs, so every φ variant takes
            the same number of optimiser steps (else a 1 % φ would also be a 100× less trained φ).
        rankings: filled with the variant's rankings under ``(part, name)``, for the paired bootstrap.
    """
    ctx = study.context(oti_steps=oti_steps)
    if variant.part == "OTI":
        tokens, seconds = _oti_tokens(study, variant, oti_steps)
        ctx.give_tokens("searle-oti", tokens)
        result = evaluate("searle-oti", study.bench, study.backbone, ctx, gallery=study.gallery())
        if rankings is not None:
            rankings[variant.part, variant.name] = result.rankings
        return {**flatten(result.metrics), "seconds": seconds + result.seconds}
    epochs = phi_epochs
    if equal_steps and variant.data_fraction < 1.0:
        epochs = equal_step_epochs(study, phi_epochs, phi_images, variant.data_fraction)
    trained = train_study_phi(
        study, ctx.oti_config, epochs, phi_images, variant.loss, variant.data_fraction, validate=False
    )
    ctx.give_network("searle", trained.phi)
    result = evaluate("searle", study.bench, study.backbone, ctx, gallery=study.gallery())
    if rankings is not None:
        rankings[variant.part, variant.name] = result.rankings
    return {**flatten(result.metrics), "seconds": trained.train_seconds + result.seconds}


def run_ablations(
    study: Study,
    oti_steps: int | None = None,
    phi_epochs: int | None = None,
    step_grid: tuple[int, ...] | list[int] = (50, 150, 350),
    fractions: tuple[float, ...] | list[float] = (0.01, 0.03, 0.1, 1.0),
    phi_images: int | None = None,
    parts: tuple[str, ...] = ("OTI", "φ"),
    equal_steps: bool = True,
    progress: bool = True,
    rankings: dict[tuple[str, str], list[list[str]]] | None = None,
) -> pd.DataFrame:
    """Every ablation row of ``parts`` on ``study.bench``.

    Args:
        study: backbone, benchmark, vocabulary (the world or a real dataset).
        oti_steps: steps of the full OTI (default: the study's ``oti_steps`` setting; paper: 350).
        phi_epochs: epochs of the full φ (default: the study's ``phi_epochs`` setting).
        step_grid: OTI step counts compared.
        fractions: shares of φ's unlabeled images compared.
        phi_images: unlabeled images of the full φ (default: the study's ``phi_images`` setting;
            0 or ``None`` there: all).
        parts: which parts to run.
        equal_steps: see :func:`run_variant`.
        progress: print each row as it finishes.
        rankings: filled with each variant's rankings under ``(part, name)`` (:func:`intervals`).

    Returns:
        One row per variant: ``part``, ``variant``, the benchmark's metrics, ``seconds``, and for
        the step and data rows their numeric ``steps`` / ``data %``.
    """
    oti_steps = study.settings.oti_steps if oti_steps is None else oti_steps
    phi_epochs = study.settings.phi_epochs if phi_epochs is None else phi_epochs
    phi_images = (study.settings.phi_images or None) if phi_images is None else (phi_images or None)
    variants = (oti_variants(oti_steps, step_grid) if "OTI" in parts else []) + (
        phi_variants(fractions) if "φ" in parts else []
    )
    rows = []
    for variant in variants:
        metrics = run_variant(study, variant, oti_steps, phi_epochs, phi_images, equal_steps, rankings)
        rows.append(table_row(variant, metrics, oti_steps))
        if progress:
            key = next((k for k in ("mAP@10", "Recall@1", "average/Recall@10") if k in metrics), None)
            print(
                f"{variant.part}: {variant.name}: {key} {metrics.get(key, float('nan')):.2f} "
                f"({metrics['seconds']:.1f} s)",
                flush=True,
            )
    return pd.DataFrame(rows)


def table_row(variant: Variant, metrics: dict, oti_steps: int) -> dict:
    """One row of the ablation table: ``part``, ``variant``, the metrics and ``seconds``, and for the
    step and data rows their numeric ``steps`` / ``data %`` (what the curves are drawn against)."""
    return {
        "part": variant.part,
        "variant": variant.name,
        **metrics,
        "steps": variant.oti.get("steps", oti_steps) if variant.part == "OTI" else None,
        "data %": 100 * variant.data_fraction if variant.part == "φ" else None,
    }


def reading(low: float, high: float) -> str:
    """What a difference's interval says: ``clearly higher``/``clearly lower`` when it excludes zero."""
    return "clearly higher" if low > 0 else "clearly lower" if high < 0 else "within noise"


def intervals(
    study: Study, rankings: dict[tuple[str, str], list[list[str]]], n_resamples: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """Every variant against its part's full method on the same queries: the difference of the
    benchmark's headline metric with its paired-bootstrap interval, and :func:`reading` of it.

    Args:
        study: the benchmark the rankings are of.
        rankings: ``(part, variant) -> rankings``, as :func:`run_ablations` fills them.
        n_resamples: bootstrap resamples.
        seed: resampling seed.
    """
    rows = []
    for part in dict.fromkeys(p for p, _ in rankings):
        by_name = {name: r for (p, name), r in rankings.items() if p == part}
        if FULL not in by_name:
            continue
        for d in compare_methods(study.bench, by_name, FULL, n_resamples=n_resamples, seed=seed):
            if d.method != FULL:
                rows.append(
                    {
                        "part": part,
                        "variant": d.method,
                        "metric": d.metric,
                        "difference": d.diff,
                        "low": d.low,
                        "high": d.high,
                        "reading": reading(d.low, d.high),
                    }
                )
    return pd.DataFrame(rows)


def ablation_curve(table: pd.DataFrame, part: str, metric: str) -> tuple[list[float], list[float]]:
    """The step curve (OTI) or data curve (φ) of an ablation table, the full row included.

    Returns:
        ``(x, y)`` sorted by x: OTI steps, or % of φ's training images.
    """
    column = "steps" if part == "OTI" else "data %"
    rows = table[(table.part == part) & table[column].notna()]
    if part == "OTI":  # the step rows and the full row; the other variants change more than steps
        rows = rows[rows.variant.str.endswith(" steps") | (rows.variant == FULL)]
    else:
        rows = rows[rows.variant.str.endswith("% of images") | (rows.variant == FULL)]
    rows = rows.sort_values(column)
    return rows[column].astype(float).tolist(), rows[metric].astype(float).tolist()


def markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """The ablation table as GitHub Markdown (numbers rounded to ``digits``)."""

    def fmt(v) -> str:
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    return markdown_table(
        table.columns,
        ([fmt(v) for v in row] for row in table.itertuples(index=False)),
        [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns],
    )


#: Where the ablation table is written, inside a run folder.
TABLE_STEM = "tables/ablations"


def shown_columns(table: pd.DataFrame) -> list[str]:
    """The columns worth reading: variant, metrics and seconds (not the per-aspect ``a/b`` metrics,
    nor the numeric ``steps`` / ``data %`` the curves are drawn from)."""
    return [c for c in table.columns if c not in ("steps", "data %") and "/" not in c]


def write_table(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write ``<out_dir>/tables/ablations.csv`` (every column) and ``.md`` (:func:`shown_columns`).

    Returns:
        The two paths.
    """

    stem = Path(out_dir) / TABLE_STEM
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    atomic_write_text(table.to_csv(index=False, float_format="%.4f"), csv)
    atomic_write_text(markdown(table[shown_columns(table)]), md)
    return [csv, md]


def record_table(rec: Recorder, table: pd.DataFrame, metric: str, image_only: float) -> None:
    """Record each row's ``metric`` and seconds as ``<part>/<variant>/<metric>`` and
    ``<part>/<variant>/seconds``, and image-only's as ``image-only/<metric>``."""
    for _, row in table.iterrows():
        rec.record(f"{row.part}/{row.variant}/{metric}", row[metric])
        rec.record(f"{row.part}/{row.variant}/seconds", row["seconds"])
    rec.record(f"image-only/{metric}", image_only)
