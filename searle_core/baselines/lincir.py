"""LinCIR (Gu et al., CVPR 2024): φ trained from text alone by self-masking projection.

For a caption with text features t (the projected EOT output, not normalised), φ maps
``t + u·ε`` (u ~ U(0, 1) per caption, ε ~ N(0, I)) to a token; the caption with its keywords replaced
by ``$`` (:mod:`~searle_core.baselines.lincir_masking`) is encoded with that token in every ``$``
row, and the loss is the MSE between its features and t, over batch and dimensions. At query time
the reference image's *raw* ``encode_image`` features go through φ (the official
``extract_pseudo_tokens_with_phi``: ``l2_normalize`` is off by default, as in training) and the query
is SEARLE's ``a photo of $ that {caption}`` (FashionIQ: both caption orders, as the official
``validate.py``, which is SEARLE's).

What follows the official code (navervision/lincir ``train_phi.py``, ``models.py``, ``loader.py``):
φ is SEARLE's network (d → 4d → 4d → d_tok, GELU, dropout 0.5, PyTorch's default initialisation);
AdamW, lr 1e-4, weight decay 0.01, batch 256 with drop_last over a shuffled corpus, a constant
learning rate (the default ``--lr_scheduler constant``: its warm-up steps are ignored); noise scale 1;
fp32 (the official mixed precision is optional). Checkpoints are ``{"epoch": step, "Phi": state}``,
so the official ``phi_best.pt`` loads with :func:`load_lincir`.

Choices where the paper or its code leaves them open, or the harness differs:

- the corpus: ``--captions FILE`` on real datasets (the official run uses several million CC3M,
  Stable Diffusion and Midjourney captions); on ``shapes`` the world's grammar captions;
- the keyword tagger: closed-class words instead of spaCy by default (see ``lincir_masking``);
- the random-word fallback is drawn once per caption (seeded) instead of at every visit;
- length: ``steps`` (official 50,000); the world's recipe is :meth:`LincirConfig.for_world`;
- no CIRR validation during training and no ``phi_best``: the last φ is kept (a held-out
  benchmark choosing the checkpoint would not be zero-shot on it); no EMA (off by default there too);
- the original features t of the corpus are computed once (CLIP is frozen, so they never change).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from searle_core.baselines.lincir_masking import FALLBACK_PROMPT, PSEUDO_WORD, mask_corpus
from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRBenchmark
from searle_core.datasets.features import image_features
from searle_core.infra.device import eval_precision
from searle_core.infra.errors import InputError, load_torch_file
from searle_core.method.encoding import encode_text, encode_token_embeddings
from searle_core.method.phi import Phi
from searle_core.retrieval.queries import SEARLE_PROMPT, pseudo_query_features


@dataclass(frozen=True)
class LincirConfig:
    """LinCIR's φ and its training (defaults: the official recipe but its length).

    Args:
        steps: optimisation steps (official: 50,000).
        batch_size: captions per step (drop_last: a corpus smaller than a batch is one batch).
        lr: AdamW learning rate (constant).
        weight_decay: AdamW weight decay.
        noise: scale of the noise added to the text features (official 1.0).
        dropout: φ's dropout.
        l2_normalize: normalise φ's input after the noise (official flag, off), and at query time.
        keywords: keyword tagger, ``closed-class`` or ``spacy``.
        max_captions: captions of the corpus used (0: all).
        seed: initialisation, shuffling, noise and the keyword fallback.
    """

    steps: int = 50_000
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.01
    noise: float = 1.0
    dropout: float = 0.5
    l2_normalize: bool = False
    keywords: str = "closed-class"
    max_captions: int = 0
    seed: int = 42

    @classmethod
    def for_world(cls, **overrides) -> LincirConfig:
        """The offline world's recipe: short enough for ``make run`` on two CPU cores."""
        return cls(**{"steps": 100, "batch_size": 32, "lr": 1e-3, **overrides})

    def build(self, backbone: Backbone) -> Phi:
        return Phi.for_backbone(backbone, self.dropout)


def encode_masked(backbone: Backbone, tokens: torch.Tensor, pseudo_tokens: torch.Tensor) -> torch.Tensor:
    """Features of tokenised prompts with φ's token in *every* ``$`` row (the official
    ``encode_with_pseudo_tokens_HF``; the harness's encoder fills only the first)."""
    embeddings = backbone.model.token_embedding(tokens)
    is_pseudo = (tokens == backbone.dollar_token_id).unsqueeze(-1)
    filled = torch.where(is_pseudo, pseudo_tokens.to(embeddings.dtype).unsqueeze(1).expand_as(embeddings), embeddings)
    return encode_token_embeddings(backbone.model, tokens, filled)


def phi_input(text: torch.Tensor, noise: float, generator: torch.Generator | None, l2: bool) -> torch.Tensor:
    """``t + noise · u · ε``, u ~ U(0, 1) per row, ε ~ N(0, I) (normalised after if ``l2``)."""
    u = torch.rand(text.shape[0], 1, generator=generator).to(text.device)
    eps = torch.randn(text.shape, generator=generator).to(text.device)
    out = text + noise * u * eps
    return F.normalize(out, dim=-1) if l2 else out


def lincir_loss(
    phi: torch.nn.Module,
    backbone: Backbone,
    original: torch.Tensor,
    masked_tokens: torch.Tensor,
    config: LincirConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MSE between the masked captions' features (``$`` = φ(t + noise)) and the originals' t.

    Args:
        phi: the network.
        backbone: frozen CLIP.
        original: (N, embed_dim) raw text features t of the original captions.
        masked_tokens: (N, L) tokenised masked captions, each with at least one ``$``.
        config: noise and normalisation.
        generator: the noise's generator (``None``: the global one).
    """
    tokens = phi(phi_input(original, config.noise, generator, config.l2_normalize))
    return F.mse_loss(encode_masked(backbone, masked_tokens, tokens).float(), original.float())


@dataclass
class CorpusTensors:
    """A text corpus ready for training: t of each caption, its masked tokens, the fallback share."""

    original: torch.Tensor
    masked_tokens: torch.Tensor
    flagged_share: float


@torch.no_grad()
def prepare_corpus(backbone: Backbone, captions: list[str], config: LincirConfig, batch: int = 1024) -> CorpusTensors:
    """Mask every caption and compute its original features once (raw, CPU)."""
    if config.max_captions:
        captions = captions[: config.max_captions]
    if not captions:
        raise InputError("LinCIR trains on captions: the corpus is empty")
    masked = mask_corpus(captions, config.seed, config.keywords)
    fallback = backbone.tokenize([FALLBACK_PROMPT]).cpu()
    originals, tokens, flagged = [], [], sum(m.flagged for m in masked)
    for start in range(0, len(masked), batch):
        chunk = masked[start : start + batch]
        with eval_precision(backbone.device):
            originals.append(encode_text(backbone.model, backbone.tokenize([m.caption for m in chunk])).float().cpu())
        ids = backbone.tokenize([m.masked for m in chunk]).cpu()
        # the official check: a `$` cut off by the 77-token context gives "a photo of $" (flagged)
        lost = ~(ids == backbone.dollar_token_id).any(dim=1)
        ids[lost] = fallback
        flagged += int(lost.sum())
        tokens.append(ids)
    return CorpusTensors(torch.cat(originals), torch.cat(tokens), flagged / len(masked))


def train_lincir(
    backbone: Backbone, captions: list[str], config: LincirConfig = LincirConfig(), progress: bool = True
) -> tuple[Phi, dict]:
    """Train φ on a text corpus; returns it (eval mode) and ``{"history", "train_seconds", ...}``."""
    start = time.perf_counter()
    corpus = prepare_corpus(backbone, captions, config)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    phi = config.build(backbone).to(backbone.device).train()
    optimizer = torch.optim.AdamW(phi.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(corpus.original)
    batch = min(config.batch_size, n)
    history, order, cursor = [], torch.randperm(n, generator=generator), 0
    for step in tqdm(range(config.steps), desc="LinCIR φ", disable=not progress):
        if cursor + batch > n:  # drop_last, then a fresh shuffle
            order, cursor = torch.randperm(n, generator=generator), 0
        idx = order[cursor : cursor + batch]
        cursor += batch
        loss = lincir_loss(
            phi,
            backbone,
            corpus.original[idx].to(backbone.device),
            corpus.masked_tokens[idx].to(backbone.device),
            config,
            generator,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % max(1, config.steps // 200) == 0 or step == 0:  # ≤ 200 points in the record
            history.append({"step": step + 1, "loss": float(loss.detach())})
    meta = {
        "history": history,
        "train_seconds": time.perf_counter() - start,
        "captions": n,
        "fallback_share": corpus.flagged_share,
    }
    return phi.eval(), meta


def load_lincir(path, backbone: Backbone, config: LincirConfig = LincirConfig()) -> Phi:
    """A LinCIR φ: the official ``phi_best.pt`` / ``phi_latest.pt`` (``{"epoch", "Phi"}``), ours, or a
    plain state dict; its widths must match the backbone (the official ones are ViT-L/14, H/14, G/14)."""
    state = load_torch_file(path, "LinCIR φ checkpoint")
    state = state.get("Phi", state) if isinstance(state, dict) else state
    phi = config.build(backbone)
    try:
        phi.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, AttributeError) as err:
        raise InputError(
            f"{path}: not a LinCIR φ for {backbone.name} (expected {{'Phi': state_dict}} with widths "
            f"{backbone.embed_dim} -> {backbone.token_dim}): {str(err).splitlines()[0]}"
        ) from None
    return phi.to(backbone.device).eval()


@torch.no_grad()
def lincir_tokens(backbone: Backbone, network: torch.nn.Module, features: torch.Tensor, l2: bool = False):
    """φ's tokens of raw CLIP features (image or text), on CPU."""
    feats = features.to(backbone.device).float()
    with eval_precision(backbone.device):
        return network(F.normalize(feats, dim=-1) if l2 else feats).float().cpu()


def lincir_reference_tokens(
    backbone: Backbone, bench: CIRBenchmark, network: torch.nn.Module | None, progress: bool = True, l2: bool = False
) -> dict[str, torch.Tensor]:
    """``$`` of every reference image: φ applied to its raw ``encode_image`` features."""
    if network is None:
        raise InputError(
            "method 'lincir' needs its φ in MethodContext.networks['lincir']: load one "
            "(--lincir-checkpoint, load_lincir) or let searle_core.jobs.prepare.prepare train it on captions"
        )
    names = bench.reference_names()
    feats = image_features(backbone, bench.images, names, progress=progress, normalize=False)
    return dict(zip(names, lincir_tokens(backbone, network, feats, l2)))


def lincir_query_features(backbone: Backbone, bench: CIRBenchmark, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
    """``lincir``: ``a photo of $ that {caption}`` with ``$`` = φ(raw reference features)."""
    return pseudo_query_features(backbone, bench.queries, tokens, SEARLE_PROMPT)


@torch.no_grad()
def modality_gap(
    backbone: Backbone, network: torch.nn.Module, image_feats: torch.Tensor, captions: list[str], l2: bool = False
) -> dict[str, float]:
    """How far φ's token of an image is from its token of that image's caption.

    Args:
        backbone: frozen CLIP.
        network: LinCIR's φ.
        image_feats: (N, embed_dim) raw image features.
        captions: the N images' captions.

    Returns:
        ``token_cosine``: mean cosine between φ(image) and φ(caption); ``feature_cosine``: mean
        cosine between the image and caption features themselves (CLIP's own gap), for scale.
    """
    with eval_precision(backbone.device):
        text = encode_text(backbone.model, backbone.tokenize(captions)).float().cpu()
    image_tokens = lincir_tokens(backbone, network, image_feats, l2)
    text_tokens = lincir_tokens(backbone, network, text, l2)
    return {
        "token_cosine": float(F.cosine_similarity(image_tokens, text_tokens, dim=-1).mean()),
        "feature_cosine": float(F.cosine_similarity(image_feats.float(), text, dim=-1).mean()),
        "images": len(captions),
    }


def benchmark_modality_gap(
    backbone: Backbone, bench: CIRBenchmark, network: torch.nn.Module, progress: bool = False
) -> dict[str, float] | None:
    """:func:`modality_gap` on the reference images whose caption the dataset knows (the offline
    world's); ``None`` where it knows none (real datasets)."""
    described = bench.text_corpus.described if bench.text_corpus is not None else {}
    names = [n for n in bench.reference_names() if n in described]
    if not names:
        return None
    feats = image_features(backbone, bench.images, names, progress=progress, normalize=False)
    return modality_gap(backbone, network, feats, [described[n] for n in names])


__all__ = [
    "PSEUDO_WORD",
    "LincirConfig",
    "load_lincir",
    "train_lincir",
    "lincir_loss",
    "modality_gap",
    "benchmark_modality_gap",
]
