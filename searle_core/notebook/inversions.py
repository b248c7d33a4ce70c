"""Cached inversions the notebooks share: OTI of a benchmark's reference images, OTI of φ's unlabeled
images, and φ trained from the latter.

OTI is the expensive step of every notebook (hundreds of text-tower passes per image), and several
notebooks need the same tokens: the results table, φ's comparison with OTI and the ablations. Each
result is therefore an artifact (``trained.load_or_train``) keyed by everything that determines it,
so the second notebook that asks loads it in milliseconds, and a changed setting never reuses a
stale one.

A benchmark OTI run also keeps the EMA tokens at a few intermediate steps and the raw (non-averaged)
final tokens. OTI's learning rate is constant, so the EMA after 50 steps of a 350-step run is the
result of a 50-step run (up to the random template and phrase draws): the step and no-EMA ablations
are read from the full run instead of being recomputed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from searle_core.datasets.base import UnlabeledImages
from searle_core.infra.errors import InputError
from searle_core.inversion.concepts import Vocabulary
from searle_core.inversion.phi_files import load_phi
from searle_core.jobs import trained
from searle_core.jobs.prepare import evaluate
from searle_core.jobs.trained import TrainedPhi
from searle_core.method.oti import InvertedBatch, OTIConfig, invert_images
from searle_core.methods.context import MethodContext, NetworkSetup, PhiRecipe
from searle_core.notebook.study import Study
from searle_core.world.recipes import world_phi_recipe

#: Steps at which a benchmark OTI run keeps the EMA tokens (the step ablation reads them).
SNAPSHOT_STEPS: tuple[int, ...] = (10, 25, 50, 100, 150, 200, 250, 300)


@dataclass
class OTIRun:
    """OTI tokens of named images.

    Args:
        names: the images, in order.
        tokens: (N, token_dim) the EMA tokens (what ``searle-oti`` uses).
        raw: (N, token_dim) the last raw tokens (the no-EMA ablation); kept by benchmark runs only.
        snapshots: step -> (N, token_dim) EMA tokens after that many steps (steps < the run's).
        seconds: wall time of the OTI when it ran.
        trained_now: whether this call ran it (else it was loaded).
    """

    names: list[str]
    tokens: torch.Tensor
    raw: torch.Tensor | None = None
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0
    trained_now: bool = False

    def stack(self, names: list[str], which: str | int = "ema") -> torch.Tensor:
        """(len(names), token_dim) tokens of the named images (see :meth:`as_dict` for ``which``)."""
        tokens = self.as_dict(which)
        return torch.stack([tokens[n] for n in names])

    def as_dict(self, which: str | int = "ema") -> dict[str, torch.Tensor]:
        """name -> token: ``"ema"`` (final), ``"raw"``, or a snapshot step."""
        if which == "raw" and self.raw is None:
            raise InputError("this OTI run kept no raw tokens (only benchmark runs do)")
        rows = self.tokens if which == "ema" else self.raw if which == "raw" else self.snapshots[int(which)]
        return dict(zip(self.names, rows))


def _vocabulary_key(vocabulary: Vocabulary | None) -> str | None:
    return trained.vocabulary_id(vocabulary) if vocabulary is not None else None


def invert_with_trajectories(
    study: Study,
    names: list[str],
    features: torch.Tensor,
    config: OTIConfig,
    vocabulary: Vocabulary | None,
    batch_size: int = 32,
    snapshots: tuple[int, ...] = (),
    progress: bool = False,
) -> dict:
    """OTI over ``names`` with :func:`~searle_core.method.oti.invert_images` (the tokens of
    ``searle-oti``), keeping each image's raw tokens and its EMA tokens at the ``snapshots`` steps.

    Returns:
        The artifact dict: ``names``, ``tokens`` and ``raw`` (N, token_dim), ``snapshots`` {step: (N, token_dim)}.
    """
    regularise = config.lambda_gpt > 0 and vocabulary is not None
    concepts = vocabulary.associate(study.backbone, features, config.top_concepts) if regularise else None
    keep = [s for s in snapshots if s < config.steps]
    raw: dict[str, torch.Tensor] = {}
    snaps: dict[int, dict[str, torch.Tensor]] = {s: {} for s in keep}

    def collect(batch: InvertedBatch) -> None:
        raw.update(zip(batch.names, batch.result.raw_tokens.float().cpu()))
        for s in keep:  # trajectory[i] is the EMA after i + 1 updates
            snaps[s].update(zip(batch.names, batch.result.trajectory[s - 1].float().cpu()))

    tokens = invert_images(
        study.backbone,
        features,
        names,
        concepts,
        vocabulary.phrase_bank if regularise else None,
        config,
        batch_size,
        study.seed,
        progress,
        on_batch=collect,
        trajectory_every=1 if keep else 0,
    )
    return {
        "names": names,
        "tokens": torch.stack([tokens[n] for n in names]),
        "raw": torch.stack([raw[n] for n in names]),
        "snapshots": {str(s): torch.stack([v[n] for n in names]) for s, v in snaps.items()},
    }


def benchmark_oti(
    study: Study,
    config: OTIConfig,
    vocabulary: Vocabulary | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> OTIRun:
    """OTI tokens of every reference image of ``study.bench``, cached.

    Args:
        study: the study.
        config: OTI settings.
        vocabulary: the regulariser's vocabulary (default: the study's; ablations pass another).
        batch_size: images per OTI batch (default: the study's, ``study.oti_batch_size``; part of the key,
            since batches are seeded).
        progress: progress bar (default: the study's).
    """
    vocabulary = study.vocabulary if vocabulary is None else vocabulary
    progress = study.progress if progress is None else progress
    batch_size = study.oti_batch_size if batch_size is None else batch_size
    names = study.bench.reference_names()
    data_id = f"{study.bench.name}-{study.bench.split}-{study.bench.extra.get('cache_key', '')}-refs-" + trained.digest(
        names
    )
    key = {
        "oti": config,
        "seed": study.seed,
        "batch_size": batch_size,
        "vocabulary": _vocabulary_key(vocabulary),
        "snapshots": SNAPSHOT_STEPS,
    }

    def train() -> dict:
        return invert_with_trajectories(
            study, names, study.features(names), config, vocabulary, batch_size, SNAPSHOT_STEPS, progress
        )

    art = trained.load_or_train(
        trained.artifact_path("oti-benchmark", study.backbone, data_id, key),
        train,
        trained.describe(study.backbone, data_id, key),
    )
    c = art.content
    return OTIRun(
        list(c["names"]),
        c["tokens"],
        c["raw"],
        {int(k): v for k, v in c["snapshots"].items()},
        float(art.meta.get("train_seconds") or 0.0),
        art.trained_now,
    )


def prefill_oti(study: Study, ctx: MethodContext) -> OTIRun:
    """Give ``ctx`` the cached benchmark OTI tokens of ``ctx.oti_config`` (``searle-oti`` then skips
    its inversion), with their compute time."""
    run = benchmark_oti(study, ctx.oti_config, ctx.vocabulary, ctx.oti_batch_size)
    ctx.give_tokens("searle-oti", run.as_dict(), seconds=run.seconds)
    return run


def study_unlabeled(study: Study, max_images: int | None = None) -> UnlabeledImages:
    """The study's unlabeled images (the first ``max_images`` of them), as φ's recipe takes them."""
    if study.unlabeled is None:
        raise InputError("φ trains on unlabeled images: set unlabeled (the paper: the ImageNet1K test images)")
    source, names = study.unlabeled
    names = list(names)[:max_images] if max_images else list(names)
    root = study.world.config.cache_key() if study.world is not None else str(getattr(source, "root", ""))
    return UnlabeledImages(source, names, root)


def unlabeled_oti(
    study: Study,
    config: OTIConfig,
    max_images: int | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> tuple[OTIRun, torch.Tensor]:
    """OTI tokens of φ's unlabeled images (the first ``max_images`` of them): the targets φ distils, cached
    (:func:`searle_core.jobs.trained.unlabeled_oti_tokens`, the same file ``searle table`` uses).

    Returns:
        ``(run, features)``: the tokens and the images' raw (N, embed_dim) ``encode_image`` features
        (φ's input; OTI and the concept association normalise them).
    """
    progress = study.progress if progress is None else progress
    batch_size = study.oti_batch_size if batch_size is None else batch_size
    unlabeled = study_unlabeled(study, max_images)
    art = trained.unlabeled_oti_tokens(
        study.backbone, unlabeled, config, study.vocabulary, study.seed, batch_size, progress
    )
    c = art.content
    run = OTIRun(
        list(c["names"]), c["tokens"], seconds=float(art.meta.get("train_seconds") or 0.0), trained_now=art.trained_now
    )
    return run, study.raw_features(unlabeled.names, unlabeled.source)


def phi_recipe(study: Study, epochs: int, images: int | None = None) -> PhiRecipe:
    """φ's recipe in a study: the world's on ``shapes``, else the paper's, with these epochs and images."""
    if study.world is not None:
        return world_phi_recipe(epochs, images or 0)
    return PhiRecipe(epochs, images or 0)


#: How many times over its training φ is validated (scoring every epoch would cost more than training).
VALIDATIONS = 10


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
    """φ trained on the OTI tokens of the study's first ``images`` unlabeled images, cached: the one
    recipe (:func:`searle_core.jobs.trained.unlabeled_phi`), so ``searle table`` with the same settings
    trains (or reuses) the same φ.

    Args:
        study: the study (its benchmark validates φ after every epoch when ``validate``).
        oti_config: OTI of the targets (the same as ``searle-oti``'s, so the caches are shared).
        epochs: φ's epochs.
        images: how many unlabeled images (``None``: all).
        loss_overrides: ``PhiLossConfig`` changes (ablations).
        fraction: train on a seeded, nested subset of this share of the images (data ablation).
        validate: score ``searle`` with the current φ on the benchmark :data:`VALIDATIONS` times
            over training, the last epoch included (a cached φ validated on another benchmark, or not
            at all, is retrained so its curve is this benchmark's).
        progress: progress bars.
    """
    progress = study.progress if progress is None else progress
    unlabeled = study_unlabeled(study, images)
    n = len(unlabeled.names)
    rows = None if fraction >= 1.0 else subset_indices(n, fraction, study.seed)
    every = max(1, epochs // VALIDATIONS)
    calls = []

    def check(phi) -> dict:
        calls.append(None)  # train_phi calls this after every epoch; score every ``every``-th and the last
        if len(calls) % every and len(calls) != epochs:
            return {}
        ctx = study.context(oti_steps=oti_config.steps, phi=phi)
        return evaluate("searle", study.bench, study.backbone, ctx, gallery=study.gallery()).metrics

    # the validation curve belongs to one benchmark: its queries, not only its name
    bench_id = trained.digest(study.bench.name, study.bench.split, [q.query_id for q in study.bench.queries])
    return trained.unlabeled_phi(
        study.backbone,
        unlabeled,
        phi_recipe(study, epochs),
        oti_config,
        study.vocabulary,
        study.seed,
        study.oti_batch_size,
        progress=progress,
        loss_overrides=loss_overrides,
        rows=rows,
        validate=check if validate else None,
        validated_on=bench_id if validate else None,
    )


def study_phi(
    study: Study, oti_steps: int, epochs: int, images: int | None = None, checkpoint: str = "", validate: bool = False
) -> TrainedPhi | None:
    """The φ a notebook uses for ``searle``: a checkpoint file when given, else one trained here
    (:func:`train_study_phi`, the same cached φ in every notebook), else ``None`` (real data
    without unlabeled images)."""

    if checkpoint:
        return TrainedPhi(load_phi(checkpoint, study.backbone).to(study.backbone.device).eval(), [], 0.0, 0.0, False, 0)
    if study.unlabeled is None:
        return None
    return train_study_phi(study, study.context(oti_steps=oti_steps).oti_config, epochs, images, validate=validate)


def use_phi(ctx: MethodContext, phi: TrainedPhi) -> None:
    """Give ``searle`` this φ with its training time (with its targets' OTI) for the table."""
    setup = NetworkSetup("searle", 0.0, phi.train_seconds + phi.oti_seconds, phi.trained_now) if phi.history else None
    ctx.give_network("searle", phi.phi, setup)


def subset_indices(n: int, fraction: float, seed: int) -> list[int]:
    """A seeded random subset of ``max(1, round(n * fraction))`` indices, sorted; nested across
    fractions (the 1 % images are among the 3 %), so curves compare more data, not other data."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[: max(1, round(n * fraction))])
