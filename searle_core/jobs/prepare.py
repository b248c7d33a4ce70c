"""A method on a benchmark, end to end: its trained networks first (cached), then the core pipeline.

The core (:mod:`searle_core.retrieval`) ranks and scores a method whose networks are in its
:class:`~searle_core.methods.registry.MethodContext`; it never trains or caches them. This module
does: :func:`prepare` gives each method what it needs and the caller did not give (a checkpoint
named in ``ctx.checkpoints``, else a network trained on first use and stored by
:mod:`searle_core.jobs.trained`) and says what that cost (:class:`NetworkSetup`), and
:func:`evaluate` is ``prepare`` followed by :func:`searle_core.methods.pipeline.run_method`. The CLI,
the tables and the notebooks call this one.
"""

from __future__ import annotations

import time

import torch

from searle_core.baselines.lincir import LincirConfig, load_lincir, train_lincir
from searle_core.baselines.palavra import PalavraConfig, train_inverter
from searle_core.baselines.pic2word import Pic2WordConfig, Pic2WordMapper, load_mapper, train_pic2word
from searle_core.baselines.training import unlabeled_images
from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRBenchmark
from searle_core.infra.errors import InputError
from searle_core.inversion.phi_files import load_phi
from searle_core.jobs.trained import Artifact, artifact_path, describe, load_or_train, unlabeled_phi, vocabulary_id
from searle_core.method.phi import Phi
from searle_core.methods.context import MethodContext, NetworkSetup
from searle_core.methods.pipeline import MethodResult, run_method
from searle_core.world.recipes import world_phi_recipe
from searle_core.world.setup import world_vocabulary


def _setup(method: str, artifact: Artifact, spent: float, train_seconds: float | None = None) -> NetworkSetup:
    total = train_seconds if train_seconds is not None else (artifact.meta.get("train_seconds") or 0.0)
    return NetworkSetup(method, float(spent), float(total), artifact.trained_now)


def dataset_phi(backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> tuple[Phi, NetworkSetup] | None:
    """φ for ``searle`` on a dataset that brings its unlabeled images (the ``shapes`` world), trained on
    first use; ``None`` on real datasets (φ is given there: trained with ``searle train-phi`` or the
    authors' checkpoint).

    :func:`searle_core.jobs.trained.unlabeled_phi` with the world's recipe sized by ``ctx.phi_epochs``
    and ``ctx.phi_images``, from OTI tokens of the unlabeled images with ``ctx``'s OTI settings,
    vocabulary and seed: the φ notebooks 2-5 train with the same settings.
    """
    if bench.unlabeled is None:
        return None
    start = time.perf_counter()
    trained = unlabeled_phi(
        backbone,
        bench.unlabeled,
        world_phi_recipe(ctx.phi_epochs, ctx.phi_images),
        ctx.oti_config,
        ctx.vocabulary or world_vocabulary(),
        ctx.seed,
        ctx.oti_batch_size,
        ctx.progress,
    )
    # φ's cost includes the OTI of its unlabeled images (its distillation targets).
    return trained.phi, _setup(
        "searle", trained.artifact, time.perf_counter() - start, trained.train_seconds + trained.oti_seconds
    )


def _world_recipes(bench: CIRBenchmark) -> bool:
    """Whether the baselines train with the offline world's shorter recipes (``for_world``): the world
    is the benchmark that brings its own text corpus."""
    return bench.text_corpus is not None


def _baseline_config(config_class, bench: CIRBenchmark):
    """A trained baseline's default config: its world recipe for the world's unlabeled images (their number
    sets its epochs), else the authors' recipe."""
    if not _world_recipes(bench):
        return config_class()
    return config_class.for_world(len(bench.unlabeled.names) if bench.unlabeled is not None else 0)


def pic2word_network(
    backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext
) -> tuple[Pic2WordMapper, NetworkSetup | None]:
    """Pic2Word's mapper: ``ctx.checkpoints['pic2word']``, else cached or trained on first use."""
    config = ctx.pic2word_config or _baseline_config(Pic2WordConfig, bench)
    if ctx.checkpoints.get("pic2word"):
        return load_mapper(ctx.checkpoints["pic2word"], backbone, config), None
    data = unlabeled_images(backbone, bench, ctx.unlabeled, "pic2word", ctx.progress, normalize=False)

    def train() -> dict:
        mapper, history = train_pic2word(backbone, data.features, config, ctx.progress)
        return {"Pic2WordMapper": mapper.cpu().state_dict(), "meta": {"history": history}}

    start = time.perf_counter()
    artifact = load_or_train(
        artifact_path("pic2word", backbone, data.data_id, config), train, describe(backbone, data.data_id, config)
    )
    setup = _setup("pic2word", artifact, time.perf_counter() - start)
    return load_mapper(artifact.path, backbone, config), setup


def lincir_config(bench: CIRBenchmark, ctx: MethodContext) -> LincirConfig:
    """``ctx.lincir_config``, else the world's short recipe on a dataset that brings its corpus, else
    the official one."""
    if ctx.lincir_config is not None:
        return ctx.lincir_config
    return LincirConfig.for_world(seed=ctx.seed) if _world_recipes(bench) else LincirConfig(seed=ctx.seed)


def lincir_network(backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> tuple[Phi, NetworkSetup | None]:
    """LinCIR's φ: ``ctx.checkpoints['lincir']``, else cached or trained on first use on the dataset's
    text corpus (the world's grammar captions) or ``ctx.captions_corpus`` (``--captions``)."""
    config = lincir_config(bench, ctx)
    if ctx.checkpoints.get("lincir"):
        return load_lincir(ctx.checkpoints["lincir"], backbone, config), None
    corpus = bench.text_corpus or ctx.captions_corpus
    if corpus is None:
        raise InputError(
            "method 'lincir' trains its φ on captions: pass a text corpus (`--captions FILE`, one caption "
            "per line, or MethodContext.captions_corpus) or its checkpoint (`--lincir-checkpoint`)"
        )

    def train() -> dict:
        phi, meta = train_lincir(backbone, corpus.captions(), config, ctx.progress)
        return {"Phi": phi.cpu().state_dict(), "meta": meta}

    start = time.perf_counter()
    artifact = load_or_train(
        artifact_path("lincir", backbone, corpus.data_id, config), train, describe(backbone, corpus.data_id, config)
    )
    setup = _setup("lincir", artifact, time.perf_counter() - start)
    return load_lincir(artifact.path, backbone, config), setup


def palavra_network(backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> tuple[Phi, NetworkSetup | None]:
    """PALAVRA's pre-trained inverter: ``ctx.checkpoints['palavra']``, else cached or trained on first use."""
    config = ctx.palavra_config or _baseline_config(PalavraConfig, bench)
    if ctx.checkpoints.get("palavra"):
        return load_phi(ctx.checkpoints["palavra"], backbone).to(backbone.device), None
    if ctx.vocabulary is None:
        raise InputError(
            "palavra pre-trains its inverter on phrases about each image's concept: it needs a "
            "vocabulary (--concepts and --phrases, or the shapes world's)"
        )
    data = unlabeled_images(backbone, bench, ctx.unlabeled, "palavra", ctx.progress)
    key = {"palavra": config.pretraining(), "vocabulary": vocabulary_id(ctx.vocabulary)}

    def train() -> dict:
        concepts = ctx.vocabulary.associate(backbone, data.features, config.top_concepts)
        inverter, history = train_inverter(
            backbone, data.features, concepts, ctx.vocabulary.phrase_bank, config, ctx.progress
        )
        # Saved in φ's layout ("Phi"), so load_phi reads it.
        return {"Phi": inverter.cpu().state_dict(), "meta": {"history": history}}

    start = time.perf_counter()
    artifact = load_or_train(
        artifact_path("palavra", backbone, data.data_id, key), train, describe(backbone, data.data_id, key)
    )
    setup = _setup("palavra", artifact, time.perf_counter() - start)
    return load_phi(artifact.path, backbone).to(backbone.device), setup


def prepare(method: str, backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> NetworkSetup | None:
    """Put into ``ctx`` the trained network ``method`` needs, unless the caller gave it.

    Args:
        method: any method of :mod:`searle_core.methods.registry`; those without a network are left alone.
        backbone: the frozen CLIP.
        bench: the benchmark (on ``shapes`` the networks train on the world's unlabeled images; on
            real datasets on ``ctx.unlabeled``).
        ctx: filled in place: ``ctx.phi`` (``searle``), ``ctx.networks[method]`` (``pic2word``, ``palavra``,
            ``lincir``).

    Returns:
        What getting the network cost; ``None`` when nothing was trained or cached here.
    """
    if method == "searle" and ctx.phi is None:
        found = dataset_phi(backbone, bench, ctx)
        if found is not None:
            ctx.phi, setup = found
            return setup
    elif method == "pic2word" and "pic2word" not in ctx.networks:
        ctx.networks["pic2word"], setup = pic2word_network(backbone, bench, ctx)
        return setup
    elif method == "lincir" and "lincir" not in ctx.networks:
        ctx.networks["lincir"], setup = lincir_network(backbone, bench, ctx)
        return setup
    elif method == "palavra" and "palavra" not in ctx.networks:
        tokens = ctx.tokens.get("palavra", {})
        if not all(n in tokens for n in bench.reference_names()):  # tokens given: no inverter needed
            ctx.networks["palavra"], setup = palavra_network(backbone, bench, ctx)
            return setup
    return None


def evaluate(
    method: str,
    bench: CIRBenchmark,
    backbone: Backbone,
    ctx: MethodContext | None = None,
    gallery: dict[str, torch.Tensor] | None = None,
) -> MethodResult:
    """Run ``method`` on ``bench`` and score it, training or loading its network first.

    Args:
        method: ``image-only``, ``text-only``, ``image+text``, ``searle-oti``, ``searle``, or a baseline.
        bench: the benchmark (validation split for metrics; test splits have no ground truths).
        backbone: the frozen CLIP.
        ctx: method resources (vocabulary, φ, networks, OTI settings); created empty if omitted.
        gallery: precomputed :func:`~searle_core.methods.pipeline.gallery_features` (reuse it across methods).

    Returns:
        The :class:`~searle_core.methods.pipeline.MethodResult`; its ``seconds`` include getting the
        method's network, and its ``setup`` says how much of it that was.
    """
    ctx = ctx or MethodContext()
    start = time.perf_counter()
    setup = prepare(method, backbone, bench, ctx)
    spent = time.perf_counter() - start
    result = run_method(method, bench, backbone, ctx, gallery)
    result.seconds += spent
    result.setup = setup
    return result
