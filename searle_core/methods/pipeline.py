"""A method from benchmark queries to scores: every method of the paper's tables as query features, then
rankings and metrics. A method's trained network (φ, the baselines') comes from the context; training or
loading it is :func:`searle_core.jobs.evaluation.prepare`'s job, above."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from searle_core.baselines.captioning import CAPTION_PROMPT, reference_captions
from searle_core.baselines.palavra import PalavraConfig, palavra_reference_tokens
from searle_core.baselines.pic2word import pic2word_captions
from searle_core.baselines.training import reference_tokens
from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRBenchmark
from searle_core.datasets.features import image_features, reference_features
from searle_core.infra.device import eval_precision
from searle_core.infra.errors import InputError
from searle_core.method.oti import invert_images
from searle_core.methods.context import MethodContext, NetworkSetup
from searle_core.retrieval.queries import (
    PIC2WORD_PROMPT,
    SEARLE_PROMPT,
    image_plus_text,
    pseudo_query_features,
    text_query_features,
)
from searle_core.retrieval.ranking import benchmark_metrics, benchmark_rankings, ranking_length

BASE_METHODS = ("image-only", "text-only", "image+text", "searle-oti", "searle")
#: Then the baselines, in the paper's table order, and LinCIR (a successor, CVPR 2024).
METHODS = BASE_METHODS + ("captioning", "palavra", "pic2word", "lincir")
#: How a baseline's missing network is got, for its error message.
_NETWORK_HINTS = {"pic2word": "its mapper (load_mapper)", "lincir": "its φ (--lincir-checkpoint, load_lincir)"}


def regulariser_variant(ctx: MethodContext) -> str | None:
    """How the OTI of ``ctx`` differs from the paper's, as a table label: ``"templates"`` (offline template
    phrases instead of GPT phrases), ``"no phrases"`` (λ_gpt = 0, e.g. no concepts), or ``None``."""
    if ctx.vocabulary is None or ctx.oti_config.lambda_gpt <= 0:
        return "no phrases"
    return "templates" if ctx.vocabulary.phrases == "templates" else None


def oti_reference_tokens(backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> dict[str, torch.Tensor]:
    """OTI tokens of every reference image of the benchmark (computed once per context)."""
    computed = ctx.computed.tokens
    if "searle-oti" not in computed:
        names, feats = reference_features(backbone, bench, ctx.progress)
        regularised = ctx.oti_config.lambda_gpt > 0
        if regularised and ctx.vocabulary is None:
            raise InputError(
                "searle-oti needs a vocabulary (concepts and phrases) for its regulariser; pass one or set lambda_gpt=0"
            )
        concepts = ctx.vocabulary.associate(backbone, feats, ctx.oti_config.top_concepts) if regularised else None
        phrases = ctx.vocabulary.phrase_bank if ctx.vocabulary else None
        computed["searle-oti"] = invert_images(
            backbone, feats, names, concepts, phrases, ctx.oti_config, ctx.oti_batch_size, ctx.seed, ctx.progress
        )
    return computed["searle-oti"]


@torch.no_grad()
def phi_reference_tokens(backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> dict[str, torch.Tensor]:
    """φ's tokens of the reference images' raw ``encode_image`` features (as the authors'
    ``extract_pseudo_tokens_with_phi``, so their checkpoints and one trained here are interchangeable)."""
    if ctx.phi is None:
        raise InputError(
            "method 'searle' needs φ: train one (`searle train-phi`) or pass the authors' "
            "checkpoint with --phi-checkpoint"
        )
    names = bench.reference_names()
    feats = image_features(backbone, bench.images, names, progress=ctx.progress, normalize=False)
    phi = ctx.phi.to(backbone.device).eval()
    with eval_precision(backbone.device):
        tokens = phi(feats.to(backbone.device)).float().cpu()
    bad = (~torch.isfinite(tokens).all(dim=1)).nonzero().flatten().tolist()
    if bad:  # NaN tokens would rank the gallery arbitrarily and still print metrics
        raise InputError(
            f"φ produced NaN or infinite tokens for {len(bad)} reference image(s) (first: "
            f"{names[bad[0]]!r}); its checkpoint or the image features are damaged"
        )
    return dict(zip(names, tokens))


def query_features(method: str, backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> torch.Tensor:
    """(n_queries, embed_dim) normalised query features of ``method``, one of :data:`METHODS`."""
    queries = bench.queries
    if method in ("image-only", "image+text"):
        names, feats = reference_features(backbone, bench, ctx.progress)
        row = {n: i for i, n in enumerate(names)}
        image = feats[[row[q.reference] for q in queries]]
        return image if method == "image-only" else image_plus_text(image, text_query_features(backbone, queries))
    if method == "text-only":
        return text_query_features(backbone, queries)
    if method == "searle-oti":
        return pseudo_query_features(backbone, queries, oti_reference_tokens(backbone, bench, ctx), SEARLE_PROMPT)
    if method == "searle":
        tokens = phi_reference_tokens(backbone, bench, ctx)
        try:
            return pseudo_query_features(backbone, queries, tokens, SEARLE_PROMPT)
        except ValueError as err:
            raise InputError(f"φ produced unusable tokens: {err}") from None
    if method == "captioning":
        captions = reference_captions(backbone, bench, ctx.captioner, ctx.computed.captions, ctx.progress)
        return text_query_features(backbone, queries, CAPTION_PROMPT, [captions[q.reference] for q in queries])
    if method in ("pic2word", "lincir"):
        if (network := ctx.networks.get(method)) is None:
            raise InputError(
                f"method {method!r} needs {_NETWORK_HINTS[method]} in MethodContext.networks[{method!r}]: load "
                "one or let searle_core.jobs.evaluation.prepare train it"
            )
        l2 = method == "lincir" and bool(ctx.lincir_config and ctx.lincir_config.l2_normalize)
        tokens = ctx.computed.tokens.setdefault(method, {})
        tokens.update(reference_tokens(backbone, bench, network, ctx.progress, l2))
        if method == "pic2word":
            return pseudo_query_features(backbone, queries, tokens, PIC2WORD_PROMPT, variants=pic2word_captions)
        return pseudo_query_features(backbone, queries, tokens, SEARLE_PROMPT)
    if method == "palavra":
        config = ctx.palavra_config or PalavraConfig()
        batch, known = config.token_batch_size or ctx.oti_batch_size, ctx.computed.tokens.setdefault("palavra", {})
        rest = (ctx.oti_config.steps, batch, ctx.seed, known, ctx.progress)
        tokens = palavra_reference_tokens(backbone, bench, ctx.networks.get("palavra"), config, *rest)
        return pseudo_query_features(backbone, queries, tokens, SEARLE_PROMPT)
    raise InputError(f"unknown method {method!r}; expected one of {list(METHODS)}")


@dataclass
class MethodResult:
    """One method on one benchmark: its metrics in percent, each query's ranked gallery names, the (Q, D)
    normalised query features, the query side's wall time (inversion included, gallery features not)."""

    method: str
    metrics: dict
    rankings: list[list[str]]
    query_features: torch.Tensor
    seconds: float
    setup: NetworkSetup | None = None  # what getting its network cost (None: it needs none, or it was given)


def gallery_features(
    backbone: Backbone, bench: CIRBenchmark, progress: bool = True, **kwargs
) -> dict[str, torch.Tensor]:
    """Gallery features keyed ``"all"``, or by category where each query ranks its own category's gallery
    (FashionIQ), cached on disk and reused; ``kwargs`` go to :func:`image_features`."""
    feats = lambda names: image_features(backbone, bench.images, names, progress=progress, **kwargs)
    by_category = bench.extra.get("gallery_by_category")
    return {c: feats(names) for c, names in by_category.items()} if by_category else {"all": feats(bench.gallery)}


def run_method(
    method: str, bench: CIRBenchmark, backbone: Backbone, ctx: MethodContext | None = None, gallery: dict | None = None
) -> MethodResult:
    """Run ``method`` on ``bench`` with the networks ``ctx`` holds and score it where it has ground truths;
    ``gallery``: precomputed :func:`gallery_features`, reused across methods."""
    ctx = ctx or MethodContext()
    gallery = gallery if gallery is not None else gallery_features(backbone, bench, ctx.progress)
    start = time.perf_counter()
    feats = query_features(method, backbone, bench, ctx)
    seconds = time.perf_counter() - start
    rankings = benchmark_rankings(bench, feats, gallery, ranking_length(bench))
    metrics = benchmark_metrics(bench, rankings) if all(q.target is not None for q in bench.queries) else {}
    return MethodResult(method, metrics, rankings, feats, seconds)
