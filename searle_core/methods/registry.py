"""Every method of the paper's tables as one function: benchmark queries -> query features.

``image-only``, ``text-only``, ``image+text`` need only features; ``searle-oti`` inverts each
reference image with OTI; ``searle`` uses φ's tokens; ``captioning``, ``pic2word``, ``palavra`` and
``lincir`` are the baselines of :mod:`searle_core.baselines`, called here with what they take from the
:class:`~searle_core.methods.context.MethodContext`. A method that needs a trained network (φ,
Pic2Word's mapper, PALAVRA's inverter) takes it from the context; training or loading it is the job of
:func:`searle_core.jobs.prepare.prepare`, above.
"""

from __future__ import annotations

import torch

from searle_core.baselines.captioning import captioning_query_features, reference_captions
from searle_core.baselines.lincir import lincir_query_features, lincir_reference_tokens
from searle_core.baselines.palavra import PalavraConfig, palavra_query_features, palavra_reference_tokens
from searle_core.baselines.pic2word import pic2word_query_features, pic2word_reference_tokens
from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRBenchmark
from searle_core.datasets.features import image_features, reference_features
from searle_core.infra.device import eval_precision
from searle_core.infra.errors import InputError
from searle_core.method.oti import invert_images
from searle_core.methods.context import MethodContext
from searle_core.retrieval.queries import SEARLE_PROMPT, image_plus_text, pseudo_query_features, text_query_features

BASE_METHODS = ("image-only", "text-only", "image+text", "searle-oti", "searle")
#: The baselines, in the paper's table order, then LinCIR (a successor, CVPR 2024).
BASELINE_METHODS = ("captioning", "palavra", "pic2word", "lincir")
#: Every method the harness runs.
METHODS = BASE_METHODS + BASELINE_METHODS


def regulariser_variant(ctx: MethodContext) -> str | None:
    """How the OTI of ``ctx`` differs from the paper's, as a table label; ``None`` when it does not.

    ``"templates"``: the phrase regulariser ran on offline template phrases instead of GPT phrases;
    ``"no phrases"``: it did not run (λ_gpt = 0, e.g. no concepts given).
    """
    if ctx.vocabulary is None or ctx.oti_config.lambda_gpt <= 0:
        return "no phrases"
    return "templates" if ctx.vocabulary.phrases == "templates" else None


def oti_reference_tokens(backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> dict[str, torch.Tensor]:
    """OTI tokens of every reference image of the benchmark (computed once per context)."""
    if "searle-oti" not in ctx.tokens:
        names, feats = reference_features(backbone, bench, ctx.progress)
        concepts = None
        if ctx.oti_config.lambda_gpt > 0:
            if ctx.vocabulary is None:
                raise InputError(
                    "searle-oti needs a vocabulary (concepts and phrases) for its regulariser; "
                    "pass one or set lambda_gpt=0"
                )
            concepts = ctx.vocabulary.associate(backbone, feats, ctx.oti_config.top_concepts)
        ctx.tokens["searle-oti"] = invert_images(
            backbone,
            feats,
            names,
            concepts,
            ctx.vocabulary.phrase_bank if ctx.vocabulary else None,
            ctx.oti_config,
            ctx.oti_batch_size,
            ctx.seed,
            ctx.progress,
        )
    return ctx.tokens["searle-oti"]


@torch.no_grad()
def phi_reference_tokens(backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> dict[str, torch.Tensor]:
    if ctx.phi is None:
        raise InputError(
            "method 'searle' needs φ: train one (`searle train-phi`) or pass the authors' "
            "checkpoint with --phi-checkpoint"
        )
    names = bench.reference_names()
    # φ takes raw encode_image features (the authors' extract_pseudo_tokens_with_phi), so their
    # released checkpoints and one trained here are interchangeable.
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
    """(n_queries, embed_dim) normalised query features of ``method``.

    Args:
        method: one of :data:`METHODS`.
        backbone: the frozen CLIP.
        bench: the benchmark whose queries are encoded.
        ctx: resources the method may use.
    """
    queries = bench.queries
    if method in ("image-only", "image+text"):
        names, feats = reference_features(backbone, bench, ctx.progress)
        row = {n: i for i, n in enumerate(names)}
        image = feats[[row[q.reference] for q in queries]]
        if method == "image-only":
            return image
        return image_plus_text(image, text_query_features(backbone, queries))
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
        captions = reference_captions(backbone, bench, ctx.captioner, ctx.captions, ctx.progress)
        return captioning_query_features(backbone, bench, captions)
    if method == "pic2word":
        tokens = pic2word_reference_tokens(backbone, bench, ctx.networks.get("pic2word"), ctx.progress)
        ctx.tokens.setdefault("pic2word", {}).update(tokens)
        return pic2word_query_features(backbone, bench, ctx.tokens["pic2word"])
    if method == "lincir":
        config = ctx.lincir_config
        tokens = lincir_reference_tokens(
            backbone, bench, ctx.networks.get("lincir"), ctx.progress, bool(config and config.l2_normalize)
        )
        ctx.tokens.setdefault("lincir", {}).update(tokens)
        return lincir_query_features(backbone, bench, ctx.tokens["lincir"])
    if method == "palavra":
        config = ctx.palavra_config or PalavraConfig()
        tokens = palavra_reference_tokens(
            backbone,
            bench,
            ctx.networks.get("palavra"),
            config,
            ctx.oti_config.steps,
            config.token_batch_size or ctx.oti_batch_size,
            ctx.seed,
            ctx.tokens.setdefault("palavra", {}),
            ctx.progress,
        )
        return palavra_query_features(backbone, bench, tokens)
    raise InputError(f"unknown method {method!r}; expected one of {list(METHODS)}")
