"""Pic2Word (Saito et al., CVPR 2023): a mapping network from image features to a pseudo-word.

The mapper is trained on unlabeled images only: the text features of ``a photo of $`` with
``$`` = mapper(image) must pick out their own image among the batch's images, and vice versa
(CLIP's symmetric contrastive loss with CLIP's own logit scale; CLIP stays frozen). Queries are
``a photo of $ , {relative caption}`` (Pic2Word's composition prompt, space included).

Layout and recipe follow the authors' ``IM2TEXT``: ``n_layer`` blocks Linear-Dropout-ReLU of
width ``middle_dim`` (512), then a Linear to the token width; AdamW, lr 1e-4, weight decay 0.1.
Differences, for a like-for-like table: it trains on the same unlabeled images as φ (the paper's
Pic2Word used ~3M CC3M images), from the same cached, L2-normalised image features, for the same
number of epochs and batch size as φ on the world.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from ..artifacts import artifact_path, describe, load_or_train
from ..backbone import Backbone
from ..datasets.base import CIRBenchmark
from ..device import autocast
from ..inversion.losses import symmetric_infonce_loss
from ..inversion.regularizer import TokenCache
from ..retrieval.queries import PIC2WORD_PROMPT, pseudo_query_features
from ..prefix_encoding import PrefixCachedEncoder
from .training import fit, record_training, unlabeled_images

#: The prompt the mapper is trained with.
PIC2WORD_TRAIN_PROMPT = "a photo of $"


class Pic2WordMapper(nn.Module):
    """Pic2Word's ``IM2TEXT``: image features -> pseudo-word token.

    Args:
        embed_dim: CLIP feature width.
        middle_dim: hidden width (512 in Pic2Word).
        output_dim: token-embedding width.
        n_layer: hidden blocks (2).
        dropout: dropout after each hidden Linear (0.1).
    """

    def __init__(self, embed_dim: int, middle_dim: int = 512, output_dim: int = 512, n_layer: int = 2,
                 dropout: float = 0.1):
        super().__init__()
        blocks, dim = [], embed_dim
        for _ in range(n_layer):
            blocks.append(nn.Sequential(nn.Linear(dim, middle_dim), nn.Dropout(dropout), nn.ReLU()))
            dim = middle_dim
        self.layers = nn.Sequential(*blocks)
        self.fc_out = nn.Linear(middle_dim, output_dim)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.layers(image_features))


@dataclass(frozen=True)
class Pic2WordConfig:
    """Pic2Word's mapper and its training (defaults: the authors' recipe, φ's epochs on the world).

    Args:
        epochs: passes over the unlabeled images.
        batch_size: images per step (the contrastive loss's negatives are the batch).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        middle_dim: mapper hidden width.
        n_layer: mapper hidden blocks.
        dropout: mapper dropout.
        seed: initialisation and shuffling.
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.1
    middle_dim: int = 512
    n_layer: int = 2
    dropout: float = 0.1
    seed: int = 42

    def build(self, backbone: Backbone) -> Pic2WordMapper:
        return Pic2WordMapper(backbone.embed_dim, self.middle_dim, backbone.token_dim, self.n_layer, self.dropout)


def pic2word_loss(mapper: nn.Module, backbone: Backbone, image_features: torch.Tensor, tokenize: TokenCache,
                  encoder: PrefixCachedEncoder | None = None) -> torch.Tensor:
    """Symmetric contrastive loss between images and ``a photo of $`` with ``$`` = mapper(image).

    Args:
        mapper: the mapping network.
        backbone: frozen CLIP (its text tower and logit scale).
        image_features: (N, embed_dim) image features of the batch.
        tokenize: memoised tokenizer.
        encoder: reuses the encoded "a photo of" prefix across steps (default: a fresh one).
    """
    image_features = image_features.to(backbone.device).float()
    tokens = mapper(image_features)
    prompts = tokenize([PIC2WORD_TRAIN_PROMPT] * len(tokens))
    encoder = encoder or PrefixCachedEncoder(backbone.model, backbone.dollar_token_id)
    with autocast(backbone.device):
        text = encoder(prompts, tokens)
    return symmetric_infonce_loss(image_features, text.float(), backbone.model.logit_scale.exp().float())


def train_pic2word(backbone: Backbone, image_features: torch.Tensor, config: Pic2WordConfig = Pic2WordConfig(),
                   progress: bool = True) -> tuple[Pic2WordMapper, list[dict]]:
    """Train the mapper on unlabeled image features; returns it (eval mode) and per-epoch losses."""
    torch.manual_seed(config.seed)
    mapper = config.build(backbone).to(backbone.device)
    tokenize, encoder = TokenCache(backbone), PrefixCachedEncoder(backbone.model, backbone.dollar_token_id)
    history = fit(mapper, len(image_features),
                  lambda idx: pic2word_loss(mapper, backbone, image_features[idx], tokenize, encoder),
                  config.epochs, config.batch_size, config.lr, config.weight_decay, config.seed,
                  "Pic2Word mapper", progress)
    return mapper.eval(), history


def load_mapper(path, backbone: Backbone, config: Pic2WordConfig = Pic2WordConfig()) -> Pic2WordMapper:
    """A saved mapper (``{"Pic2WordMapper": state_dict, ...}``) in eval mode on the backbone's device."""
    from ..errors import load_torch_file

    state = load_torch_file(path, "Pic2Word mapper checkpoint")
    mapper = config.build(backbone)
    mapper.load_state_dict(state["Pic2WordMapper"] if "Pic2WordMapper" in state else state)
    return mapper.to(backbone.device).eval()


def pic2word_mapper(backbone: Backbone, bench: CIRBenchmark, ctx) -> Pic2WordMapper:
    """The mapper for ``backbone``: ``extras['pic2word_checkpoint']``, else cached or trained on first use."""
    config = ctx.extras.get("pic2word_config") or Pic2WordConfig()
    if ctx.extras.get("pic2word_checkpoint"):
        return load_mapper(ctx.extras["pic2word_checkpoint"], backbone, config)
    data = unlabeled_images(backbone, bench, ctx.extras, "pic2word", ctx.progress)

    def train() -> dict:
        mapper, history = train_pic2word(backbone, data.features, config, ctx.progress)
        return {"Pic2WordMapper": mapper.cpu().state_dict(), "meta": {"history": history}}

    start = time.perf_counter()
    artifact = load_or_train(artifact_path("pic2word", backbone, data.data_id, config), train,
                             describe(backbone, data.data_id, config))
    record_training(ctx.extras, "pic2word", artifact, time.perf_counter() - start)
    return load_mapper(artifact.path, backbone, config)


def pic2word_query_features(backbone: Backbone, bench: CIRBenchmark, ctx) -> torch.Tensor:
    """``pic2word``: ``a photo of $ , {caption}`` with ``$`` = mapper(reference features)."""
    from ..methods import reference_features

    mapper = pic2word_mapper(backbone, bench, ctx)  # may train it: outside no_grad
    names, feats = reference_features(backbone, bench, ctx.progress)
    with torch.no_grad():
        tokens = mapper(feats.to(backbone.device).float()).float().cpu()
    ctx.tokens.setdefault("pic2word", {}).update(zip(names, tokens))
    return pseudo_query_features(backbone, bench.queries, ctx.tokens["pic2word"], PIC2WORD_PROMPT)
