"""The paper's ablations, each a named change to OTI or to φ's training, scored with the same ``evaluate``,
gallery features and seed as the main results, so a row differs from the full method by its one change only."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from searle_core.infra.files import atomic_write_text
from searle_core.infra.markdown import markdown_table
from searle_core.inversion.concepts import Vocabulary
from searle_core.jobs.evaluation import evaluate
from searle_core.metrics.significance import compare_methods
from searle_core.notebook.inversions import SNAPSHOT_STEPS, benchmark_oti, phi_recipe, subset_indices, train_study_phi
from searle_core.notebook.record import Recorder
from searle_core.notebook.study import Study
from searle_core.report.table import flatten

#: The regulariser's one phrase per concept in the "templates only" ablation.
TEMPLATE_PHRASE = "a photo of {}"
#: The full method of each part: this run's settings (``variant_table`` says which), not necessarily the paper's.
FULL = "full"


@dataclass(frozen=True)
class Variant:
    """One ablation row of ``part`` "OTI" or "φ": the ``OTIConfig`` / ``PhiLossConfig`` fields it changes."""

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
            out.append(("regulariser phrases", f"{self.phrases} ({TEMPLATE_PHRASE!r} per concept)"))
        if self.data_fraction < 1.0:
            out.append(("share of φ's unlabeled images", self.data_fraction))
        return out


def oti_variants(steps: int, step_grid: tuple[int, ...] | list[int] = (50, 150, 350)) -> list[Variant]:
    """The OTI rows: full, no regulariser, templates only, each step count of ``step_grid`` but ``steps``, no EMA."""
    rows = [
        Variant("OTI", FULL),
        Variant("OTI", "no phrase regulariser", oti={"lambda_gpt": 0.0}),
        Variant("OTI", "templates only", phrases="templates"),
    ]
    rows += [Variant("OTI", f"{s} steps", oti={"steps": int(s)}) for s in step_grid if int(s) != steps]
    return rows + [Variant("OTI", "no EMA", oti={"use_ema": False})]


def phi_variants(fractions: tuple[float, ...] | list[float] = (0.01, 0.03, 0.1, 1.0)) -> list[Variant]:
    """The φ rows: full, no distillation (cosine to the image), no regulariser, each data fraction."""
    rows = [
        Variant("φ", FULL),
        Variant("φ", "no distillation (cosine to image)", loss={"distil_to_image": True}),
        Variant("φ", "no phrase regulariser", loss={"lambda_gpt": 0.0}),
    ]
    shares = [float(f) for f in fractions if float(f) < 1.0]
    return rows + [Variant("φ", f"{100 * f:g} % of images", data_fraction=f) for f in shares]


def variant_table(variants: list[Variant], full: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per variant: its part, its name, the one setting it changes and the value it takes; the full
    rows say what ran, from ``full`` (part -> e.g. "50 OTI steps")."""
    said = lambda part: [("(none)", (full or {}).get(part, "this run's settings"))]  # noqa: E731
    rows = [(v.part, v.name, k, value) for v in variants for k, value in v.changes() or said(v.part)]
    return pd.DataFrame(rows, columns=["part", "variant", "setting", "value"])


def template_vocabulary(vocabulary: Vocabulary) -> Vocabulary:
    """The same concepts, each with the one phrase :data:`TEMPLATE_PHRASE` filled with it."""
    return Vocabulary(list(vocabulary.concepts), {c: [TEMPLATE_PHRASE.format(c)] for c in vocabulary.concepts})


def equal_step_epochs(study: Study, epochs: int, images: int | None, fraction: float) -> int:
    """Epochs that give φ on ``fraction`` of the images as many optimiser steps as ``epochs`` on all."""
    batch = phi_recipe(study, epochs).train_config().batch_size
    n = min(images or len(study.unlabeled[1]), len(study.unlabeled[1]))
    steps = epochs * math.ceil(n / batch)
    return max(1, math.ceil(steps / math.ceil(len(subset_indices(n, fraction, study.seed)) / batch)))


def run_ablations(
    study: Study, variants: list[Variant], equal_steps: bool = True, rankings: dict | None = None, metric: str = ""
) -> pd.DataFrame:
    """One row per variant: ``part``, ``variant``, the flat metrics and ``seconds``. ``equal_steps`` gives φ on a
    share of the images as many optimiser steps (else a 1 % φ is also a 100× less trained one); ``rankings`` is
    filled under ``(part, name)`` for :func:`intervals`; with ``metric``, printed."""
    oti_steps, epochs, images = study.settings.oti_steps, study.settings.phi_epochs, study.settings.phi_images or None
    table = []
    for variant in variants:
        ctx = study.context()
        if variant.part == "OTI":
            config, vocabulary = ctx.oti_config, study.vocabulary
            if variant.phrases == "templates" and vocabulary is not None:
                vocabulary = template_vocabulary(vocabulary)
            if "lambda_gpt" in variant.oti:
                config = dataclasses.replace(config, lambda_gpt=variant.oti["lambda_gpt"])
            steps = variant.oti.get("steps", oti_steps)
            if steps > oti_steps or (steps < oti_steps and steps not in SNAPSHOT_STEPS):
                config = dataclasses.replace(config, steps=steps)  # not in the full run: a run of its own
            run = benchmark_oti(study, config, vocabulary, ctx.oti_batch_size)
            which = "raw" if variant.oti.get("use_ema") is False else steps if steps < config.steps else "ema"
            ctx.give_tokens("searle-oti", run.as_dict(which))
            seconds = run.seconds * steps / config.steps if isinstance(which, int) else run.seconds
            method, x = "searle-oti", {"steps": steps, "data %": None}  # x: what the curves are drawn against
            cached = not run.trained_now
        else:
            share = variant.data_fraction
            phi_epochs = equal_step_epochs(study, epochs, images, share) if equal_steps and share < 1.0 else epochs
            phi = train_study_phi(study, ctx.oti_config, phi_epochs, images, variant.loss, share, validate=False)
            ctx.give_network("searle", phi.phi)
            method, seconds, x = "searle", phi.train_seconds, {"steps": None, "data %": 100 * share}
            cached = not phi.trained_now
        result = evaluate(method, study.bench, study.backbone, ctx, gallery=study.gallery())
        if rankings is not None:
            rankings[variant.part, variant.name] = result.rankings
        metrics = {**flatten(result.metrics), "seconds": seconds + result.seconds, "cached": cached}
        table.append({"part": variant.part, "variant": variant.name, **metrics, **x})
        if metric:
            took = f"{'read from the cache; its first run took ' if cached else ''}{metrics['seconds']:.1f} s"
            print(f"{variant.part}: {variant.name}: {metric} {metrics.get(metric, math.nan):.2f} ({took})", flush=True)
    return pd.DataFrame(table)


def intervals(
    study: Study, rankings: dict[tuple[str, str], list[list[str]]], n_resamples: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """Every variant against its part's full method on the same queries: the difference of the benchmark's
    headline metric with its paired-bootstrap interval, and its reading: clearly higher or lower when the
    interval excludes zero, else within noise."""
    rows = []
    for part in dict.fromkeys(p for p, _ in rankings):
        by_name = {name: r for (p, name), r in rankings.items() if p == part}
        if FULL not in by_name:
            continue
        for d in compare_methods(study.bench, by_name, FULL, n_resamples=n_resamples, seed=seed):
            if d.method != FULL:
                reading = "clearly higher" if d.low > 0 else "clearly lower" if d.high < 0 else "within noise"
                interval = {"difference": d.diff, "low": d.low, "high": d.high, "reading": reading}
                rows.append({"part": part, "variant": d.method, "metric": d.metric, **interval})
    return pd.DataFrame(rows)


def ablation_curve(table: pd.DataFrame, part: str, metric: str) -> tuple[list[float], list[float]]:
    """``(x, y)`` sorted by x: the step rows (OTI) or the data rows (φ) with the full row."""
    column, suffix = ("steps", " steps") if part == "OTI" else ("data %", "% of images")
    rows = table[(table.part == part) & table[column].notna()]
    rows = rows[rows.variant.str.endswith(suffix) | (rows.variant == FULL)].sort_values(column)
    return rows[column].astype(float).tolist(), rows[metric].astype(float).tolist()


def markdown(table: pd.DataFrame) -> str:
    """The ablation table as GitHub Markdown, numbers to two decimals."""
    rows = ([f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False))
    return markdown_table(table.columns, rows, [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns])


def shown_columns(table: pd.DataFrame) -> list[str]:
    """The columns worth reading: not the per-aspect ``a/b`` metrics nor the curves' ``steps`` / ``data %``."""
    return [c for c in table.columns if c not in ("steps", "data %") and "/" not in c]


def write_table(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write ``<out_dir>/tables/ablations.csv`` (every column) and ``.md`` (:func:`shown_columns`)."""
    csv, md = Path(out_dir) / "tables/ablations.csv", Path(out_dir) / "tables/ablations.md"
    atomic_write_text(table.to_csv(index=False, float_format="%.4f"), csv)
    atomic_write_text(markdown(table[shown_columns(table)]), md)
    return [csv, md]


def record_table(rec: Recorder, table: pd.DataFrame, metric: str, image_only: float) -> None:
    """Record each row's ``<part>/<variant>/<metric>`` and ``.../seconds``, and ``image-only/<metric>``."""
    for _, row in table.iterrows():
        rec.record(f"{row.part}/{row.variant}/{metric}", row[metric])
        rec.record(f"{row.part}/{row.variant}/seconds", row["seconds"])
    rec.record(f"image-only/{metric}", image_only)
