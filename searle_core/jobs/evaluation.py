"""A method on a benchmark, end to end: :func:`prepare` gives the method the trained network the caller did not
(a checkpoint in ``ctx.checkpoints``, else one cached by :mod:`.artifacts`), then the core ``run_method`` runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from searle_core.baselines.lincir import LincirConfig, load_lincir, train_lincir
from searle_core.baselines.palavra import PalavraConfig, train_inverter
from searle_core.baselines.pic2word import Pic2WordConfig, Pic2WordMapper, load_mapper, train_pic2word
from searle_core.baselines.training import unlabeled_images
from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRBenchmark
from searle_core.infra.errors import InputError
from searle_core.inversion.phi_files import load_phi
from searle_core.jobs.artifacts import load_or_train, unlabeled_phi, vocabulary_id
from searle_core.method.phi import Phi
from searle_core.methods.context import MethodContext, NetworkSetup
from searle_core.methods.pipeline import MethodResult, run_method
from searle_core.world import setup as world


def _cached(method: str, backbone: Backbone, data_id: str, key, train, load: Callable) -> tuple[Any, NetworkSetup]:
    """The network ``load`` reads from the method's artifact (trained on first use), on the device; its cost."""
    start = time.perf_counter()
    artifact = load_or_train(method, backbone, data_id, key, train)
    total = float(artifact.meta.get("train_seconds") or 0.0)
    setup = NetworkSetup(method, float(time.perf_counter() - start), total, artifact.trained_now)
    return load(artifact.path).to(backbone.device), setup


def dataset_phi(backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> tuple[Phi, NetworkSetup] | None:
    """φ for ``searle`` on a dataset that brings its unlabeled images (the world), trained on first use with
    the world's recipe and ``ctx``'s OTI settings (as the notebooks' φ); ``None`` on real datasets."""
    if bench.unlabeled is None:
        return None
    start = time.perf_counter()
    recipe = world.world_phi_recipe(ctx.phi_epochs, ctx.phi_images)
    vocabulary = ctx.vocabulary or world.world_vocabulary()
    trained = unlabeled_phi(
        backbone, bench.unlabeled, recipe, ctx.oti_config, vocabulary, ctx.seed, ctx.oti_batch_size, ctx.progress
    )
    total = trained.train_seconds + trained.oti_seconds  # with the OTI of its distillation targets
    return trained.phi, NetworkSetup("searle", time.perf_counter() - start, float(total), trained.trained_now)


def _world_images(bench: CIRBenchmark) -> int | None:
    """The unlabeled images' number on a dataset that brings its own text corpus (the world, whose baselines
    train with its shorter recipes); ``None`` elsewhere (the authors' recipes)."""
    if bench.text_corpus is None:
        return None
    return len(bench.unlabeled.names) if bench.unlabeled is not None else 0


def pic2word_network(
    backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext
) -> tuple[Pic2WordMapper, NetworkSetup | None]:
    """Pic2Word's mapper: ``ctx.checkpoints['pic2word']``, else cached or trained on first use."""
    images = _world_images(bench)
    config = ctx.pic2word_config or (Pic2WordConfig() if images is None else world.world_pic2word_config(images))
    if ctx.checkpoints.get("pic2word"):
        return load_mapper(ctx.checkpoints["pic2word"], backbone, config), None
    data = unlabeled_images(backbone, bench, ctx.unlabeled, "pic2word", ctx.progress, normalize=False)

    def train() -> dict:
        mapper, history = train_pic2word(backbone, data.features, config, ctx.progress)
        return {"Pic2WordMapper": mapper.cpu().state_dict(), "meta": {"history": history}}

    return _cached("pic2word", backbone, data.data_id, config, train, lambda path: load_mapper(path, backbone, config))


def lincir_config(bench: CIRBenchmark, ctx: MethodContext) -> LincirConfig:
    """``ctx.lincir_config``, else the world's recipe on a dataset that brings its corpus, else the official one."""
    if ctx.lincir_config is not None:
        return ctx.lincir_config
    return LincirConfig(seed=ctx.seed) if _world_images(bench) is None else world.world_lincir_config(seed=ctx.seed)


def lincir_network(backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> tuple[Phi, NetworkSetup | None]:
    """LinCIR's φ: ``ctx.checkpoints['lincir']``, else cached or trained on first use on the dataset's
    text corpus (the world's grammar captions) or ``ctx.captions_corpus`` (``--captions``)."""
    config = lincir_config(bench, ctx)
    if ctx.checkpoints.get("lincir"):
        return load_lincir(ctx.checkpoints["lincir"], backbone, config), None
    if (corpus := bench.text_corpus or ctx.captions_corpus) is None:
        raise InputError(
            "method 'lincir' trains its φ on captions: pass a text corpus (`--captions FILE`, one caption "
            "per line, or MethodContext.captions_corpus) or its checkpoint (`--lincir-checkpoint`)"
        )

    def train() -> dict:
        phi, meta = train_lincir(backbone, corpus.captions(), config, ctx.progress)
        return {"Phi": phi.cpu().state_dict(), "meta": meta}

    return _cached("lincir", backbone, corpus.data_id, config, train, lambda path: load_lincir(path, backbone, config))


def palavra_network(backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> tuple[Phi, NetworkSetup | None]:
    """PALAVRA's pre-trained inverter: ``ctx.checkpoints['palavra']``, else cached or trained on first use."""
    images = _world_images(bench)
    config = ctx.palavra_config or (PalavraConfig() if images is None else world.world_palavra_config(images))
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
        return {"Phi": inverter.cpu().state_dict(), "meta": {"history": history}}  # φ's layout: load_phi reads it

    return _cached("palavra", backbone, data.data_id, key, train, lambda path: load_phi(path, backbone))


def prepare(method: str, backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> NetworkSetup | None:
    """Put into ``ctx`` the trained network ``method`` needs unless the caller gave it (``ctx.phi``,
    ``ctx.networks[method]``); returns what that cost, ``None`` when nothing was trained or loaded here."""
    if method == "searle" and ctx.phi is None and (found := dataset_phi(backbone, bench, ctx)) is not None:
        ctx.phi, setup = found
        return setup
    networks = {"pic2word": pic2word_network, "lincir": lincir_network, "palavra": palavra_network}
    given = ctx.computed.tokens.get("palavra", {})
    if method == "palavra" and all(n in given for n in bench.reference_names()):
        return None  # tokens given: no inverter needed
    if method in networks and method not in ctx.networks:
        ctx.networks[method], setup = networks[method](backbone, bench, ctx)
        return setup
    return None


def evaluate(
    method: str, bench: CIRBenchmark, backbone: Backbone, ctx: MethodContext | None = None, gallery: dict | None = None
) -> MethodResult:
    """Run ``method`` on ``bench`` and score it, training or loading its network first (``gallery``: features
    reused across methods); the result's ``seconds`` include getting the network, its ``setup`` says how much."""
    ctx, start = ctx or MethodContext(), time.perf_counter()
    setup = prepare(method, backbone, bench, ctx)
    spent = time.perf_counter() - start
    result = run_method(method, bench, backbone, ctx, gallery)
    result.seconds, result.setup = result.seconds + spent, setup
    return result
