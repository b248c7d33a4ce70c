"""SEARLE's φ and LinCIR's φ side by side (notebook 4): the same map, learnt from images or from text.

SEARLE distils φ from OTI tokens of unlabeled *images*; LinCIR trains φ on *captions* only and meets
image features first at query time. Both give one token per reference image; this module puts the
two tokens of the same images next to each other: their nearest words, how close they are to each
other, and LinCIR's modality gap (its token of an image against its token of that image's caption).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from searle_core.baselines.lincir import benchmark_modality_gap, lincir_reference_tokens
from searle_core.inversion.nearest import nearest_words
from searle_core.methods.registry import phi_reference_tokens
from searle_core.notebook.results import Setting
from searle_core.plotting.common import wrap


@dataclass
class TwoPhis:
    """The two φ's tokens of a few reference images.

    Args:
        names: the reference images.
        images: their pictures.
        captions: what each shows (the world's caption), for titles.
        searle_words: nearest words of SEARLE's φ token, per image.
        lincir_words: nearest words of LinCIR's φ token, per image.
        cosine: mean cosine between the two tokens of the same image, over every reference image.
        modality_gap: LinCIR's ``token_cosine`` (φ(image) vs φ(caption)) and CLIP's ``feature_cosine``
            (image vs caption features), where the dataset knows its images' captions.
    """

    names: list[str]
    images: list[Image.Image]
    captions: list[str]
    searle_words: list[list[tuple[str, float]]]
    lincir_words: list[list[tuple[str, float]]]
    cosine: float
    modality_gap: dict[str, float] | None


@torch.no_grad()
def two_phis(setting: Setting, n: int = 4, k: int = 5) -> TwoPhis | None:
    """SEARLE's and LinCIR's φ tokens of ``n`` example references (``None`` unless both ran).

    Args:
        setting: a benchmark and backbone of notebook 4, evaluated with ``searle`` and ``lincir``.
        n: example images.
        k: nearest words per token.
    """
    ctx, study = setting.ctx, setting.study
    if ctx is None or ctx.phi is None or "lincir" not in ctx.networks:
        return None
    backbone, bench = study.backbone, study.bench
    searle = phi_reference_tokens(backbone, bench, ctx)
    lincir = lincir_reference_tokens(backbone, bench, ctx.networks["lincir"], progress=False)
    names = bench.reference_names()
    a = torch.stack([searle[m] for m in names]).float()
    b = torch.stack([lincir[m] for m in names]).float()
    cosine = float(F.cosine_similarity(a, b, dim=-1).mean())
    picked = [bench.queries[i].reference for i in study.pick_queries(n)]
    picked = list(dict.fromkeys(picked))
    rows = [names.index(m) for m in picked]
    allowed = study.allowed_word_ids
    return TwoPhis(
        names=picked,
        images=study.images(picked),
        captions=[wrap(study.caption(m), 24) for m in picked],  # titles on two lines, not overlapping
        searle_words=nearest_words(backbone, a[rows], k, allowed),
        lincir_words=nearest_words(backbone, b[rows], k, allowed),
        cosine=cosine,
        modality_gap=benchmark_modality_gap(backbone, bench, ctx.networks["lincir"]),
    )
