"""φ: the network that inverts an image in one forward pass, and its one loss (SEARLE, Sec. 4.2).

The module layout (``layers.0/3/6``) is that of the authors' released checkpoints, so their files load
unchanged (:mod:`searle_core.inversion.phi_files`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from searle_core.infra.distributed import split_evenly
from searle_core.method.losses import nt_xent_loss
from searle_core.method.regulariser import PhraseBank, PhraseDraw, PhraseFeatureCache, PhraseSampler


class Phi(nn.Module):
    """MLP image features -> pseudo-word token: Linear-GELU-Dropout ×2, then Linear; its input is the raw
    ``encode_image`` output (not normalised), in training and at inference, as in the authors' code."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, dropout: float = 0.5):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, output_dim),
        )

    @classmethod
    def for_backbone(cls, backbone, dropout: float = 0.5) -> Phi:
        """The paper's φ for a backbone: feature width → 4× → token width."""
        return cls(backbone.embed_dim, 4 * backbone.embed_dim, backbone.token_dim, dropout)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.layers(image_features)

    @property
    def input_dim(self) -> int:
        return self.layers[0].in_features

    @property
    def output_dim(self) -> int:
        return self.layers[6].out_features


@dataclass(frozen=True)
class PhiLossConfig:
    """λ_distil · NT-Xent(φ(x), OTI tokens) + λ_gpt · phrase regulariser. ``distil_to_image``, the ablation
    "no distillation", replaces NT-Xent by a cosine loss between "a photo of $" with the predicted token and
    the image; ``top_concepts``: the concepts of each image the regulariser draws from."""

    lambda_distil: float = 1.0
    lambda_gpt: float = 0.75
    temperature: float = 0.25
    distil_to_image: bool = False
    top_concepts: int = 150


def phi_sampler(concepts: list[list[str]], bank: PhraseBank, top_concepts: int, seed: int, replace_all: bool = True):
    """φ's phrase draw: a concept of the image's top ones, then one of its phrases; every occurrence of
    the concept becomes ``$`` (the authors' ``train_phi.py``; PALAVRA replaces only the first)."""
    top = [c[:top_concepts] for c in concepts]
    return PhraseSampler(top, bank, random.Random(seed), draw="concept", replace_all=replace_all)


def phi_loss(
    predicted: torch.Tensor,
    image_features: torch.Tensor,
    oti_tokens: torch.Tensor | None,
    draw: PhraseDraw | None,
    plain: PhraseFeatureCache | None,
    encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    tokenize: Callable[[list[str]], torch.Tensor],
    config: PhiLossConfig = PhiLossConfig(),
    world_size: int = 1,
    rank: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(distillation loss, phrase loss) of one batch.

    ``predicted`` are φ's tokens of the batch, ``image_features`` and ``oti_tokens`` its rows, ``draw``
    one phrase per image, ``plain`` the features of the plain phrases and ``encode(tokens, pseudo)`` a
    pseudo-token text encoder. Under DDP (``world_size`` > 1) every rank holds the whole batch and encodes
    only its share of the text; each returns W × its share, so DDP's gradient mean is the batch's.
    """
    zero = predicted.sum() * 0  # keeps every parameter in the graph (DDP needs it)
    n = len(predicted)
    if config.distil_to_image:
        mine = split_evenly(list(range(n)), rank, world_size)
        distil = zero
        if mine:
            text = encode(tokenize(["a photo of $"] * len(mine)), predicted[mine])
            cos = F.cosine_similarity(text.float(), image_features[mine].float(), dim=-1)
            distil = distil + (1 - cos).sum() / n * world_size
    elif config.lambda_distil > 0:
        distil = nt_xent_loss(predicted, oti_tokens.to(predicted), config.temperature)
    else:
        distil = zero
    gpt = zero
    if draw is not None and plain is not None:
        mine = split_evenly(list(range(len(draw.rows))), rank, world_size)
        if mine:
            text = encode(tokenize([draw.pseudo_phrases[i] for i in mine]), predicted[[draw.rows[i] for i in mine]])
            target = plain.features([draw.phrases[i] for i in mine])
            gpt = gpt + (1 - F.cosine_similarity(text.float(), target.float(), dim=-1)).sum() / len(draw.rows)
    return distil, gpt
