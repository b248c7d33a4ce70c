"""Pic2Word (Saito et al., CVPR 2023): a mapping network from image features to a pseudo-word, trained on
unlabeled images: ``a photo of $`` with ``$`` = mapper(image) must pick out its own image among the batch's
(CLIP's symmetric contrastive loss). Queries: ``a photo of $ , {relative caption}``.

As the official code: ``IM2TEXT`` on raw ``encode_image`` features, its AdamW, warm-up then cosine per step,
fp16 + GradScaler on CUDA, CLIP's preprocessing (``searle evaluate``'s default on real data). Where it differs,
for a like-for-like table: φ's unlabeled images, epochs and batch, a warm-up capped at a tenth of the run, and
negatives from the batch only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from searle_core.baselines.training import cosine_with_warmup, fit
from searle_core.clip.backbone import Backbone
from searle_core.infra.files import load_torch_file
from searle_core.method.prefix_cache import PrefixCachedEncoder
from searle_core.method.regulariser import TokenCache

PIC2WORD_TRAIN_PROMPT = "a photo of $"


def symmetric_infonce_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """CLIP's symmetric cross-entropy between two aligned batches (Pic2Word's mapping loss)."""
    logits = logit_scale * F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T
    labels = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class Pic2WordMapper(nn.Module):
    """Pic2Word's ``IM2TEXT``: image features -> token, ``n_layer`` hidden blocks (Linear, Dropout, ReLU)."""

    def __init__(
        self, embed_dim: int, middle_dim: int = 512, output_dim: int = 512, n_layer: int = 2, dropout: float = 0.1
    ):
        super().__init__()
        block = lambda d: nn.Sequential(nn.Linear(d, middle_dim), nn.Dropout(dropout), nn.ReLU())
        self.layers = nn.Sequential(*(block(embed_dim if i == 0 else middle_dim) for i in range(n_layer)))
        self.fc_out = nn.Linear(middle_dim, output_dim)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.layers(image_features))


@dataclass(frozen=True)
class Pic2WordConfig:
    """Pic2Word's mapper and its training (defaults: the authors' recipe)."""

    epochs: int = 100
    batch_size: int = 256  # the contrastive loss's negatives are the batch
    lr: float = 1e-4
    weight_decay: float = 0.1
    middle_dim: int = 512
    n_layer: int = 2
    dropout: float = 0.1
    seed: int = 42  # initialisation and shuffling
    betas: tuple[float, float] = (0.9, 0.98)  # the official ones for ViT backbones
    eps: float = 1e-6
    warmup_steps: int = 10_000  # capped at a tenth of the run's steps
    precision: str = "auto"  # fp16 + GradScaler on CUDA; on a CPU as OTI (bf16 for wide towers where native)

    def build(self, backbone: Backbone) -> Pic2WordMapper:
        return Pic2WordMapper(backbone.embed_dim, self.middle_dim, backbone.token_dim, self.n_layer, self.dropout)


def pic2word_loss(
    mapper: nn.Module, backbone: Backbone, image_features: torch.Tensor, tokenize: TokenCache, encoder=None
) -> torch.Tensor:
    """Symmetric contrastive loss between the batch's raw image features and ``a photo of $``, ``$`` = mapper(image)."""
    image_features = image_features.to(backbone.device).float()
    tokens = mapper(image_features)
    prompts = tokenize([PIC2WORD_TRAIN_PROMPT] * len(tokens))
    encoder = encoder or PrefixCachedEncoder(backbone.model, backbone.dollar_token_id)
    text = encoder(prompts, tokens)  # under the training autocast of the caller, if any
    return symmetric_infonce_loss(image_features, text.float(), backbone.model.logit_scale.exp().float())


def train_pic2word(
    backbone: Backbone, image_features: torch.Tensor, config: Pic2WordConfig = Pic2WordConfig(), progress: bool = True
) -> tuple[Pic2WordMapper, list[dict]]:
    """Train the mapper on raw unlabeled image features; returns it (eval mode) and per-epoch losses."""
    torch.manual_seed(config.seed)
    mapper = config.build(backbone).to(backbone.device)
    tokenize, encoder = TokenCache(backbone), PrefixCachedEncoder(backbone.model, backbone.dollar_token_id)
    total = config.epochs * ((len(image_features) + config.batch_size - 1) // config.batch_size)
    schedule = cosine_with_warmup(config.lr, min(config.warmup_steps, max(1, total // 10)), total)
    # No weight decay on biases and norm gains (1-d parameters): open_clip's ``gain_or_bias`` group.
    named = list(mapper.named_parameters())
    gain_or_bias = lambda k, p: p.ndim < 2 or "bias" in k
    groups = [
        {"params": [p for k, p in named if gain_or_bias(k, p)], "weight_decay": 0.0},
        {"params": [p for k, p in named if not gain_or_bias(k, p)]},
    ]
    optimizer = torch.optim.AdamW(
        groups, lr=config.lr, weight_decay=config.weight_decay, betas=tuple(config.betas), eps=config.eps
    )
    loss = lambda idx: pic2word_loss(mapper, backbone, image_features[idx], tokenize, encoder)
    history = fit(
        mapper, len(image_features), loss, config, "Pic2Word mapper", progress, optimizer, schedule, backbone.token_dim
    )
    return mapper.eval(), history


def load_mapper(path, backbone: Backbone, config: Pic2WordConfig = Pic2WordConfig()) -> Pic2WordMapper:
    """A saved mapper (``{"Pic2WordMapper": state_dict, ...}``) in eval mode on the backbone's device."""
    state = load_torch_file(path, "Pic2Word mapper checkpoint")
    mapper = config.build(backbone)
    mapper.load_state_dict(state["Pic2WordMapper"] if "Pic2WordMapper" in state else state)
    return mapper.to(backbone.device).eval()


def pic2word_captions(query) -> list[str]:
    """One caption, or FashionIQ's two as ``"{caption 2} and {caption 1}"`` (Pic2Word's ``data.py``)."""
    caps = list(query.captions)
    return [f"{caps[1]} and {caps[0]}"] if len(caps) == 2 else caps[:1]
