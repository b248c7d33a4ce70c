"""Every method of the paper's tables as one function: benchmark queries -> query features.

``image-only``, ``text-only``, ``image+text`` need only features; ``searle-oti`` inverts each
reference image with OTI; ``searle`` uses φ's tokens. The baselines ``captioning``, ``pic2word``
and ``palavra`` are :data:`EXTRA_METHODS` (see their modules). A method that needs a trained network
(φ, Pic2Word's mapper, PALAVRA's inverter) takes it from the :class:`MethodContext`; training or
loading it is the job of :func:`searle_core.jobs.evaluation.prepare`, above the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from searle_core.backbone import Backbone
from searle_core.baselines.captioning import captioning_query_features
from searle_core.baselines.palavra import palavra_query_features
from searle_core.baselines.pic2word import pic2word_query_features
from searle_core.concepts import Vocabulary
from searle_core.datasets.base import CIRBenchmark
from searle_core.device import eval_precision
from searle_core.inversion import OTIConfig, Phi
from searle_core.inversion.batch import invert_images
from searle_core.retrieval.features import image_features, reference_features
from searle_core.retrieval.queries import SEARLE_PROMPT, image_plus_text, pseudo_query_features, text_query_features

BASE_METHODS = ("image-only", "text-only", "image+text", "searle-oti", "searle")
#: The baselines: name -> query-feature function ``(backbone, bench, ctx) -> (Q, D)`` features.
EXTRA_METHODS: dict[str, Callable] = {
    "captioning": captioning_query_features,
    "palavra": palavra_query_features,
    "pic2word": pic2word_query_features,
}


@dataclass
class MethodContext:
    """What a method may use besides the benchmark and the backbone.

    Args:
        vocabulary: concepts and phrases (needed by ``searle-oti`` and the φ training path).
        oti_config: OTI hyper-parameters.
        oti_batch_size: images per OTI batch.
        phi: a trained φ (``searle``).
        phi_epochs: φ's epochs when it is trained here (``searle`` on ``shapes``; default: the world's
            recipe, :class:`~searle_core.inversion.phi_training.PhiRecipe`).
        phi_images: the unlabeled images it trains on (0: all; default: the world's recipe).
        networks: the baselines' trained networks by method (``"pic2word"``: the mapper,
            ``"palavra"``: the pre-trained inverter), filled by :func:`searle_core.jobs.evaluation.prepare`.
        seed: run seed.
        progress: progress bars.
        tokens: pseudo-word tokens computed so far, by method (reused, e.g. by notebooks).
    """

    vocabulary: Vocabulary | None = None
    oti_config: OTIConfig = OTIConfig()
    oti_batch_size: int = 32
    phi: Phi | None = None
    phi_epochs: int | None = None
    phi_images: int | None = None
    networks: dict[str, torch.nn.Module] = field(default_factory=dict)
    seed: int = 42
    progress: bool = True
    tokens: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    extras: dict = field(default_factory=dict)


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
                raise ValueError("searle-oti needs a vocabulary (concepts and phrases) for its regulariser; "
                                 "pass one or set lambda_gpt=0")
            concepts = ctx.vocabulary.associate(backbone, feats, ctx.oti_config.top_concepts)
        ctx.tokens["searle-oti"] = invert_images(backbone, feats, names, concepts,
                                                 ctx.vocabulary.phrase_bank if ctx.vocabulary else None,
                                                 ctx.oti_config, ctx.oti_batch_size, ctx.seed, ctx.progress)
    return ctx.tokens["searle-oti"]


@torch.no_grad()
def phi_reference_tokens(backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> dict[str, torch.Tensor]:
    if ctx.phi is None:
        raise ValueError("method 'searle' needs φ: train one (`searle train-phi`) or pass the authors' "
                         "checkpoint with --phi-checkpoint")
    names = bench.reference_names()
    # φ takes raw encode_image features (the authors' extract_pseudo_tokens_with_phi), so their
    # released checkpoints and one trained here are interchangeable.
    feats = image_features(backbone, bench.images, names, progress=ctx.progress, normalize=False)
    phi = ctx.phi.to(backbone.device).eval()
    with eval_precision(backbone.device):
        tokens = phi(feats.to(backbone.device)).float().cpu()
    bad = (~torch.isfinite(tokens).all(dim=1)).nonzero().flatten().tolist()
    if bad:  # NaN tokens would rank the gallery arbitrarily and still print metrics
        raise ValueError(f"φ produced NaN or infinite tokens for {len(bad)} reference image(s) (first: "
                         f"{names[bad[0]]!r}); its checkpoint or the image features are damaged")
    return dict(zip(names, tokens))


def query_features(method: str, backbone: Backbone, bench: CIRBenchmark, ctx: MethodContext) -> torch.Tensor:
    """(n_queries, embed_dim) normalised query features of ``method``.

    Args:
        method: one of :data:`BASE_METHODS` or a registered extra method.
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
            raise ValueError(f"φ produced unusable tokens: {err}") from None
    if method in EXTRA_METHODS:
        return EXTRA_METHODS[method](backbone, bench, ctx)
    raise ValueError(f"unknown method {method!r}; expected one of {list(BASE_METHODS) + sorted(EXTRA_METHODS)}")
