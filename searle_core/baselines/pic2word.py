"""Pic2Word (Saito et al., CVPR 2023): a mapping network from image features to a pseudo-word.

The mapper is trained on unlabeled images only: the text features of ``a photo of $`` with
``$`` = mapper(image) must pick out their own image among the batch's images, and vice versa
(CLIP's symmetric contrastive loss with CLIP's own logit scale; CLIP stays frozen). Queries are
``a photo of $ , {relative caption}`` (Pic2Word's composition prompt, space included); on
FashionIQ ``a photo of $ , {caption 2} and {caption 1}``, one order only, as its ``data.py``.

What follows the official code (google-research/composed_image_retrieval: ``model.IM2TEXT``,
``main.py``, ``params.py``, ``trainer.py``, the README's training command):

- the mapper: ``n_layer`` blocks Linear-Dropout-ReLU of width ``middle_dim`` (512), then a Linear
  to the token width; its input is the *raw* ``encode_image`` output (normalised only for the loss);
- AdamW with betas (0.9, 0.98), eps 1e-6 (``params.py`` for ViT models), lr 1e-4 and weight decay
  0.1 (the README's command), no weight decay on biases and gains (``main.py``'s ``exclude``);
- a linear warm-up then a cosine decay of the learning rate per step (``cosine_lr``);
- mixed precision (``--precision amp``: fp16 autocast + GradScaler on CUDA; fp32 on CPU).

What still differs, for a like-for-like table:

- data: the same unlabeled images as φ (the paper's ImageNet1K test images; the world's pretrain
  images on ``shapes``), not Pic2Word's ~3M CC3M images, and the same preprocessing as every
  other method (targetpad), not Pic2Word's CLIP transform;
- length: φ's epochs and batch (100 × 256) instead of 30 epochs at 128 per GPU (the world: about φ's
  image presentations, :meth:`Pic2WordConfig.for_world`);
- warm-up: 10,000 steps in the official run, a small share of its ~hundreds of thousands of steps;
  here ``warmup_steps`` is capped at a tenth of the run, so a short run is not all warm-up;
- no distributed feature gathering (its ``--aggregate``): negatives are the batch's;
- FashionIQ captions go through this project's loader (stripped as SEARLE's are).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from searle_core.baselines.training import fit, world_epochs
from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRBenchmark
from searle_core.datasets.features import image_features
from searle_core.infra.device import eval_precision
from searle_core.infra.errors import InputError, load_torch_file
from searle_core.method.prefix_cache import PrefixCachedEncoder
from searle_core.method.regulariser import TokenCache
from searle_core.retrieval.queries import PIC2WORD_PROMPT, pseudo_query_features

#: The prompt the mapper is trained with.
PIC2WORD_TRAIN_PROMPT = "a photo of $"


def symmetric_infonce_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """CLIP's symmetric cross-entropy between two aligned batches (Pic2Word's mapping loss)."""
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = logit_scale * a @ b.T
    labels = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class Pic2WordMapper(nn.Module):
    """Pic2Word's ``IM2TEXT``: image features -> pseudo-word token.

    Args:
        embed_dim: CLIP feature width.
        middle_dim: hidden width (512 in Pic2Word).
        output_dim: token-embedding width.
        n_layer: hidden blocks (2).
        dropout: dropout after each hidden Linear (0.1).
    """

    def __init__(
        self, embed_dim: int, middle_dim: int = 512, output_dim: int = 512, n_layer: int = 2, dropout: float = 0.1
    ):
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
    """Pic2Word's mapper and its training (defaults: the authors' recipe; :meth:`for_world` on the world).

    Args:
        epochs: passes over the unlabeled images.
        batch_size: images per step (the contrastive loss's negatives are the batch).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        middle_dim: mapper hidden width.
        n_layer: mapper hidden blocks.
        dropout: mapper dropout.
        seed: initialisation and shuffling.
        betas: AdamW betas (the official ones for ViT backbones).
        eps: AdamW epsilon.
        warmup_steps: linear warm-up steps before the cosine decay (the official 10,000), capped
            at a tenth of the run's steps.
        precision: training precision (``auto``: fp16 + GradScaler on CUDA, fp32 on CPU).
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.1
    middle_dim: int = 512
    n_layer: int = 2
    dropout: float = 0.1
    seed: int = 42
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 10_000
    precision: str = "auto"

    @classmethod
    def for_world(cls, images: int, **overrides) -> Pic2WordConfig:
        """The offline world's recipe for ``images`` unlabeled images: about as many image presentations
        as φ's there (:func:`~searle_core.baselines.training.world_epochs`: 10 epochs over the default
        world's 2,000; the authors' 100 stay the default elsewhere). On the default world 10, 20 and 40
        epochs gave 74.7, 75.1 and 75.6 mAP@10 on the val split, within its noise, in 5, 8 and 16 s."""
        return cls(**{"epochs": world_epochs(images), **overrides})

    def build(self, backbone: Backbone) -> Pic2WordMapper:
        return Pic2WordMapper(backbone.embed_dim, self.middle_dim, backbone.token_dim, self.n_layer, self.dropout)


def pic2word_loss(
    mapper: nn.Module,
    backbone: Backbone,
    image_features: torch.Tensor,
    tokenize: TokenCache,
    encoder: PrefixCachedEncoder | None = None,
) -> torch.Tensor:
    """Symmetric contrastive loss between images and ``a photo of $`` with ``$`` = mapper(image).

    Args:
        mapper: the mapping network.
        backbone: frozen CLIP (its text tower and logit scale).
        image_features: (N, embed_dim) raw image features of the batch (the mapper's input; the loss
            normalises them).
        tokenize: memoised tokenizer.
        encoder: reuses the encoded "a photo of" prefix across steps (default: a fresh one).
    """
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
    history = fit(
        mapper,
        len(image_features),
        lambda idx: pic2word_loss(mapper, backbone, image_features[idx], tokenize, encoder),
        config.epochs,
        config.batch_size,
        config.lr,
        config.weight_decay,
        config.seed,
        "Pic2Word mapper",
        progress,
        betas=tuple(config.betas),
        eps=config.eps,
        decay_biases_and_gains=False,
        warmup_steps=min(config.warmup_steps, max(1, total // 10)),
        precision=config.precision,
    )
    return mapper.eval(), history


def load_mapper(path, backbone: Backbone, config: Pic2WordConfig = Pic2WordConfig()) -> Pic2WordMapper:
    """A saved mapper (``{"Pic2WordMapper": state_dict, ...}``) in eval mode on the backbone's device."""

    state = load_torch_file(path, "Pic2Word mapper checkpoint")
    mapper = config.build(backbone)
    mapper.load_state_dict(state["Pic2WordMapper"] if "Pic2WordMapper" in state else state)
    return mapper.to(backbone.device).eval()


@torch.no_grad()
def pic2word_reference_tokens(
    backbone: Backbone, bench: CIRBenchmark, mapper: torch.nn.Module | None, progress: bool = True
) -> dict[str, torch.Tensor]:
    """``$`` of every reference image: the mapper applied to its raw ``encode_image`` features."""
    if mapper is None:
        raise InputError(
            "method 'pic2word' needs its mapper in MethodContext.networks['pic2word']: load one "
            "(load_mapper) or let searle_core.jobs.prepare.prepare train it"
        )
    names = bench.reference_names()
    feats = image_features(backbone, bench.images, names, progress=progress, normalize=False)
    with eval_precision(backbone.device):
        tokens = mapper(feats.to(backbone.device).float()).float().cpu()
    return dict(zip(names, tokens))


def pic2word_query_features(backbone: Backbone, bench: CIRBenchmark, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
    """``pic2word``: ``a photo of $ , {caption}`` with ``$`` = mapper(raw reference features)."""
    return pseudo_query_features(backbone, bench.queries, tokens, PIC2WORD_PROMPT, variants=pic2word_captions)


def pic2word_captions(query) -> list[str]:
    """One caption, or FashionIQ's two as ``"{caption 2} and {caption 1}"`` (Pic2Word's ``data.py``)."""
    caps = list(query.captions)
    return [f"{caps[1]} and {caps[0]}"] if len(caps) == 2 else caps[:1]
