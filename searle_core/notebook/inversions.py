"""The inversions the notebooks share, each an artifact keyed by everything that determines it: OTI of a
benchmark's references (also its raw tokens and EMA snapshots: with OTI's constant learning rate the EMA after
50 of 350 steps is a 50-step run's, up to the template and phrase draws), OTI of φ's unlabeled images, and φ."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from searle_core.datasets.base import UnlabeledImages
from searle_core.infra.errors import InputError
from searle_core.infra.files import digest
from searle_core.inversion.phi_files import load_phi
from searle_core.jobs import artifacts
from searle_core.jobs.artifacts import TrainedPhi
from searle_core.jobs.evaluation import evaluate
from searle_core.method.oti import InvertedBatch, OTIConfig, invert_images
from searle_core.methods.context import MethodContext, NetworkSetup, PhiRecipe
from searle_core.notebook.study import Study
from searle_core.world.setup import world_phi_recipe

#: Steps at which a benchmark OTI run keeps the EMA tokens (the step ablation reads them).
SNAPSHOT_STEPS: tuple[int, ...] = (10, 25, 50, 100, 150, 200, 250, 300)
#: How many times over its training φ is validated (scoring every epoch would cost more than training).
VALIDATIONS = 10


@dataclass
class OTIRun:
    """OTI tokens of named images: the EMA ``tokens`` (``searle-oti``'s), the last ``raw`` ones (benchmark
    runs only), EMA ``snapshots`` by step, the OTI's ``seconds`` and whether this call ran it."""

    names: list[str]
    tokens: torch.Tensor
    raw: torch.Tensor | None = None
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0
    trained_now: bool = False

    def stack(self, names: list[str], which: str | int = "ema") -> torch.Tensor:
        return torch.stack([self.as_dict(which)[n] for n in names])

    def as_dict(self, which: str | int = "ema") -> dict[str, torch.Tensor]:
        """name -> token: ``"ema"`` (final), ``"raw"``, or a snapshot step."""
        if which == "raw" and self.raw is None:
            raise InputError("this OTI run kept no raw tokens (only benchmark runs do)")
        rows = self.tokens if which == "ema" else self.raw if which == "raw" else self.snapshots[int(which)]
        return dict(zip(self.names, rows))


def benchmark_oti(
    study: Study, config: OTIConfig, vocabulary=None, batch_size: int | None = None, progress: bool | None = None
) -> OTIRun:
    """``searle-oti``'s tokens of every reference image of ``study.bench``, cached; ``vocabulary``,
    ``batch_size`` (part of the key: batches are seeded) and ``progress`` default to the study's."""
    vocabulary = study.vocabulary if vocabulary is None else vocabulary
    batch_size = study.oti_batch_size if batch_size is None else batch_size
    progress = study.progress if progress is None else progress
    bench, names = study.bench, study.bench.reference_names()
    data_id = f"{bench.name}-{bench.split}-{bench.extra.get('cache_key', '')}-refs-" + digest(names)
    vocabulary_id = artifacts.vocabulary_id(vocabulary) if vocabulary is not None else None
    key = {"oti": config, "seed": study.seed, "batch_size": batch_size, "vocabulary": vocabulary_id}
    key["snapshots"] = SNAPSHOT_STEPS

    def train() -> dict:
        features = study.features(names)
        regularise = config.lambda_gpt > 0 and vocabulary is not None
        concepts = vocabulary.associate(study.backbone, features, config.top_concepts) if regularise else None
        keep = [s for s in SNAPSHOT_STEPS if s < config.steps]
        raw, snaps = {}, {s: {} for s in keep}

        def collect(batch: InvertedBatch) -> None:
            raw.update(zip(batch.names, batch.result.raw_tokens.float().cpu()))
            for s in keep:  # trajectory[i] is the EMA after i + 1 updates
                snaps[s].update(zip(batch.names, batch.result.trajectory[s - 1].float().cpu()))

        bank = vocabulary.phrase_bank if regularise else None
        run = {"batch_size": batch_size, "seed": study.seed, "progress": progress}
        run |= {"on_batch": collect, "trajectory_every": 1 if keep else 0}
        tokens = invert_images(study.backbone, features, names, concepts, bank, config, **run)
        stack = lambda by_name: torch.stack([by_name[n] for n in names])
        snapshots = {str(s): stack(v) for s, v in snaps.items()}
        return {"names": names, "tokens": stack(tokens), "raw": stack(raw), "snapshots": snapshots}

    art = artifacts.load_or_train("oti-benchmark", study.backbone, data_id, key, train)
    c, seconds = art.content, float(art.meta.get("train_seconds") or 0.0)
    snapshots = {int(k): v for k, v in c["snapshots"].items()}
    return OTIRun(list(c["names"]), c["tokens"], c["raw"], snapshots, seconds, art.trained_now)


def prefill_oti(study: Study, ctx: MethodContext) -> None:
    """Give ``ctx`` the cached benchmark OTI tokens of its settings (``searle-oti`` then skips its inversion)."""
    run = benchmark_oti(study, ctx.oti_config, ctx.vocabulary, ctx.oti_batch_size)
    ctx.give_tokens("searle-oti", run.as_dict(), seconds=run.seconds)


def _unlabeled(study: Study, max_images: int | None = None) -> UnlabeledImages:
    if study.unlabeled is None:
        raise InputError("φ trains on unlabeled images: set unlabeled (the paper: the ImageNet1K test images)")
    source, names = study.unlabeled[0], list(study.unlabeled[1])[: max_images or None]
    root = study.world.config.cache_key() if study.world is not None else str(getattr(source, "root", ""))
    return UnlabeledImages(source, names, root)


def unlabeled_oti(
    study: Study, config: OTIConfig, max_images: int | None = None, progress: bool | None = None
) -> tuple[OTIRun, torch.Tensor]:
    """OTI tokens of φ's unlabeled images (its targets, the file ``searle table`` uses too) and their raw features."""
    unlabeled, progress = _unlabeled(study, max_images), study.progress if progress is None else progress
    art = artifacts.unlabeled_oti_tokens(
        study.backbone, unlabeled, config, study.vocabulary, study.seed, study.oti_batch_size, progress
    )
    seconds = float(art.meta.get("train_seconds") or 0.0)
    run = OTIRun(list(art.content["names"]), art.content["tokens"], seconds=seconds, trained_now=art.trained_now)
    return run, study.raw_features(unlabeled.names, unlabeled.source)


def phi_recipe(study: Study, epochs: int, images: int | None = None) -> PhiRecipe:
    """φ's recipe in a study: the world's sizes on ``shapes``, else the paper's, with these epochs and images."""
    return world_phi_recipe(epochs, images or 0) if study.world is not None else PhiRecipe(epochs, images or 0)


def subset_indices(n: int, fraction: float, seed: int) -> list[int]:
    """A seeded random subset of ``max(1, round(n * fraction))`` indices, sorted; nested across fractions
    (the 1 % images are among the 3 %), so curves compare more data, not other data."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[: max(1, round(n * fraction))])


def train_study_phi(
    study: Study,
    oti_config: OTIConfig,
    epochs: int,
    images: int | None = None,
    loss_overrides: dict | None = None,
    fraction: float = 1.0,
    validate: bool = True,
    progress: bool | None = None,
) -> TrainedPhi:
    """φ on the OTI tokens of the study's first ``images`` unlabeled images, the file ``searle table`` reuses;
    ``validate`` scores ``searle`` :data:`VALIDATIONS` times (a φ cached without this benchmark's curve retrains)."""
    unlabeled = _unlabeled(study, images)
    rows = None if fraction >= 1.0 else subset_indices(len(unlabeled.names), fraction, study.seed)
    every, calls = max(1, epochs // VALIDATIONS), []

    def check(phi) -> dict:
        calls.append(None)  # train_phi calls this after every epoch; score every ``every``-th and the last
        if len(calls) % every and len(calls) != epochs:
            return {}
        ctx = study.context(phi=phi, steps=oti_config.steps)
        return evaluate("searle", study.bench, study.backbone, ctx, gallery=study.gallery()).metrics

    # the validation curve belongs to one benchmark: its queries, not only its name
    bench_id = digest(study.bench.name, study.bench.split, [q.query_id for q in study.bench.queries])
    validation = {"validate": check, "validated_on": bench_id} if validate else {}
    progress = study.progress if progress is None else progress
    options = {"progress": progress, "loss_overrides": loss_overrides, "rows": rows, **validation}
    recipe = phi_recipe(study, epochs)
    return artifacts.unlabeled_phi(
        study.backbone, unlabeled, recipe, oti_config, study.vocabulary, study.seed, study.oti_batch_size, **options
    )


def study_phi(study: Study, validate: bool = False) -> TrainedPhi | None:
    """The φ a notebook uses for ``searle``: the ``phi_checkpoint`` file, else :func:`train_study_phi` with the
    study's settings, else ``None`` (real data without unlabeled images)."""
    s = study.settings
    if s.phi_checkpoint:
        phi = load_phi(s.phi_checkpoint, study.backbone).to(study.backbone.device).eval()
        return TrainedPhi(phi, [], 0.0, 0.0, False, 0)
    if study.unlabeled is None:
        return None
    config = study.context().oti_config
    return train_study_phi(study, config, s.phi_epochs, s.phi_images or None, validate=validate)


def use_phi(ctx: MethodContext, phi: TrainedPhi) -> None:
    """Give ``searle`` this φ with its training time (its targets' OTI included) for the table."""
    setup = NetworkSetup("searle", 0.0, phi.train_seconds + phi.oti_seconds, phi.trained_now) if phi.history else None
    ctx.give_network("searle", phi.phi, setup)
