"""A method on a benchmark, end to end: its trained networks first (cached), then the core pipeline.

The core (:mod:`searle_core.retrieval`) ranks and scores a method whose networks are in its
:class:`~searle_core.retrieval.methods.MethodContext`; it never trains or caches them. This module
does: :func:`prepare` gives each method what it needs and the caller did not give (a checkpoint
named in ``ctx.extras``, else a network trained on first use and stored by
:mod:`searle_core.jobs.trained`), and :func:`evaluate` is ``prepare`` followed by
:func:`searle_core.retrieval.evaluate.run_method`. The CLI, the tables and the notebooks call this one.
"""

from __future__ import annotations

import time

import torch

from searle_core.backbone import Backbone
from searle_core.baselines.palavra import PalavraConfig, train_inverter
from searle_core.baselines.pic2word import Pic2WordConfig, Pic2WordMapper, load_mapper, train_pic2word
from searle_core.baselines.training import unlabeled_images, world_of
from searle_core.datasets.base import CIRBenchmark
from searle_core.inversion import Phi, load_phi
from searle_core.datasets.shapes.opening import world_vocabulary
from searle_core.inversion.phi_training import PhiRecipe
from searle_core.jobs.trained import (UnlabeledImages, artifact_path, describe, load_or_train, record_training, unlabeled_phi,
                                      vocabulary_id)
from searle_core.retrieval.evaluate import Evaluation, run_method
from searle_core.retrieval.methods import MethodContext


def world_phi(backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> Phi | None:
    """φ for ``searle`` on the ``shapes`` world (``None`` on real datasets), trained on first use.

    :func:`searle_core.jobs.trained.unlabeled_phi` with the world's recipe sized by ``ctx.phi_epochs``
    and ``ctx.phi_images``, from OTI tokens of the world's unlabeled images with ``ctx``'s OTI settings,
    vocabulary and seed: the φ notebooks 2-5 train with the same settings.
    """
    world = world_of(bench)
    if world is None:
        return None  # real datasets: retrieval.methods says how to get φ
    start = time.perf_counter()
    unlabeled = UnlabeledImages(world.images, world.pretrain_names(), world.config.cache_key())
    trained = unlabeled_phi(backbone, unlabeled, PhiRecipe.for_world(ctx.phi_epochs, ctx.phi_images), ctx.oti_config,
                            ctx.vocabulary or world_vocabulary(), ctx.seed, ctx.oti_batch_size, ctx.progress)
    # φ's cost includes the OTI of its unlabeled images (its distillation targets).
    record_training(ctx.extras, "searle", trained.artifact, time.perf_counter() - start,
                    trained.train_seconds + trained.oti_seconds)
    return trained.phi


def pic2word_network(backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> Pic2WordMapper:
    """Pic2Word's mapper: ``extras['pic2word_checkpoint']``, else cached or trained on first use."""
    config = ctx.extras.get("pic2word_config") or Pic2WordConfig()
    if ctx.extras.get("pic2word_checkpoint"):
        return load_mapper(ctx.extras["pic2word_checkpoint"], backbone, config)
    data = unlabeled_images(backbone, bench, ctx.extras, "pic2word", ctx.progress, normalize=False)

    def train() -> dict:
        mapper, history = train_pic2word(backbone, data.features, config, ctx.progress)
        return {"Pic2WordMapper": mapper.cpu().state_dict(), "meta": {"history": history}}

    start = time.perf_counter()
    artifact = load_or_train(artifact_path("pic2word", backbone, data.data_id, config), train,
                             describe(backbone, data.data_id, config))
    record_training(ctx.extras, "pic2word", artifact, time.perf_counter() - start)
    return load_mapper(artifact.path, backbone, config)


def palavra_network(backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> Phi:
    """PALAVRA's pre-trained inverter: ``extras['palavra_checkpoint']``, else cached or trained on first use."""
    config = ctx.extras.get("palavra_config") or PalavraConfig()
    if ctx.extras.get("palavra_checkpoint"):
        return load_phi(ctx.extras["palavra_checkpoint"], backbone).to(backbone.device)
    if ctx.vocabulary is None:
        raise ValueError("palavra pre-trains its inverter on phrases about each image's concept: it needs a "
                         "vocabulary (--concepts and --phrases, or the shapes world's)")
    data = unlabeled_images(backbone, bench, ctx.extras, "palavra", ctx.progress)
    key = {"palavra": config.pretraining(), "vocabulary": vocabulary_id(ctx.vocabulary)}

    def train() -> dict:
        concepts = ctx.vocabulary.associate(backbone, data.features, config.top_concepts)
        inverter, history = train_inverter(backbone, data.features, concepts, ctx.vocabulary.phrase_bank, config,
                                           ctx.progress)
        # Saved in φ's layout ("Phi"), so load_phi reads it.
        return {"Phi": inverter.cpu().state_dict(), "meta": {"history": history}}

    start = time.perf_counter()
    artifact = load_or_train(artifact_path("palavra", backbone, data.data_id, key), train,
                             describe(backbone, data.data_id, key))
    record_training(ctx.extras, "palavra", artifact, time.perf_counter() - start)
    return load_phi(artifact.path, backbone).to(backbone.device)


def prepare(method: str, backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> None:
    """Put into ``ctx`` the trained network ``method`` needs, unless the caller gave it.

    Args:
        method: any method of :mod:`searle_core.retrieval.methods`; those without a network are left alone.
        backbone: the frozen CLIP.
        bench: the benchmark (on ``shapes`` the networks train on the world's unlabeled images; on
            real datasets on ``ctx.extras["unlabeled"]``).
        ctx: filled in place: ``ctx.phi`` (``searle``), ``ctx.networks[method]`` (``pic2word``, ``palavra``).
    """
    if method == "searle" and ctx.phi is None:
        ctx.phi = world_phi(backbone, bench, ctx)
    elif method == "pic2word" and "pic2word" not in ctx.networks:
        ctx.networks["pic2word"] = pic2word_network(backbone, bench, ctx)
    elif method == "palavra" and "palavra" not in ctx.networks:
        tokens = ctx.tokens.get("palavra", {})
        if not all(n in tokens for n in bench.reference_names()):  # tokens given: no inverter needed
            ctx.networks["palavra"] = palavra_network(backbone, bench, ctx)


def evaluate(method: str, bench: CIRBenchmark, backbone: Backbone, ctx: MethodContext | None = None,
             gallery: dict[str, torch.Tensor] | None = None) -> Evaluation:
    """Run ``method`` on ``bench`` and score it, training or loading its network first.

    Args:
        method: ``image-only``, ``text-only``, ``image+text``, ``searle-oti``, ``searle``, or a baseline.
        bench: the benchmark (validation split for metrics; test splits have no ground truths).
        backbone: the frozen CLIP.
        ctx: method resources (vocabulary, φ, networks, OTI settings); created empty if omitted.
        gallery: precomputed :func:`~searle_core.retrieval.evaluate.gallery_features` (reuse it across methods).

    Returns:
        The :class:`~searle_core.retrieval.evaluate.Evaluation`; its ``seconds`` include getting the
        method's network (``ctx.extras["setup_seconds"]`` says how much of it that was).
    """
    ctx = ctx or MethodContext()
    start = time.perf_counter()
    prepare(method, backbone, bench, ctx)
    setup = time.perf_counter() - start
    result = run_method(method, bench, backbone, ctx, gallery)
    result.seconds += setup
    return result
