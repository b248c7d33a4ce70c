"""PALAVRA-style inversion (Cohen et al., "This is my unicorn, Fluffy", ECCV 2022), as in SEARLE's table.

Two stages, as the SEARLE paper describes the baseline:

1. *Inverter pre-training.* A network maps image features to a token such that phrases about the
   image's concept, with the concept replaced by the token, keep the text features of the original
   phrase (1 - cosine). Only this stage sees phrases.
2. *Per-image optimisation.* Each reference's token starts at the inverter's prediction and is
   optimised with a contrastive loss: the text features of a template with ``$`` = the token must
   pick out its own image among the other images of the batch. No phrase regulariser.

Choices where the original's details are unknown or do not apply to single-image queries (the
spirit kept: contrastive per-image objective, no GPT-phrase regularisation):

- *Inverter.* PALAVRA's set encoder (deep sets over a few images of a concept) degenerates to an
  MLP for one reference image; we use φ's MLP shape (d → 4d → 4d → token width, GELU, dropout 0.5),
  so PALAVRA and SEARLE differ only in their objectives.
- *The image's concept.* PALAVRA pre-trains on labelled classes; zero-shot there are none, so the
  concept is the image's top-1 vocabulary concept by CLIP similarity (``top_concepts=1``), and its
  phrases come from the same phrase bank as SEARLE's regulariser (GPT-Neo phrases; the world's
  grammar phrases on ``shapes``). Trained on the same unlabeled images as φ, with φ's epochs and batch
  size (the world: about as many image presentations as φ's; :meth:`PalavraConfig.for_world`).
- *Contrastive loss.* Text → image cross-entropy, one random template of the 24 (PALAVRA's own
  set) per image and step, temperature = CLIP's logit scale. Negatives are the other reference
  images of the batch (balanced batches of at most ``token_batch_size``, by default the run's OTI batch;
  32 on the world, whose OTI runs 128 a batch for speed, since here the batch is part of the objective;
  a batch of one image has no negatives and keeps its initial token). Two references with the same
  content in one batch are pushed apart too: that is the objective's nature.
- *Optimiser.* OTI's: AdamW, lr 2e-2, weight decay 0.01, ``--oti-steps`` steps (350); the last
  tokens are used (no EMA, which is SEARLE's addition).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from searle_core.baselines.training import fit, world_epochs
from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRBenchmark
from searle_core.datasets.features import reference_features
from searle_core.infra.device import grad_scaler, scaled_step, train_autocast
from searle_core.infra.errors import InputError
from searle_core.method.oti import batch_seed
from searle_core.method.phi import Phi, PhiLossConfig, phi_loss, phi_sampler
from searle_core.method.prefix_cache import PrefixCachedEncoder
from searle_core.method.regulariser import PhraseFeatureCache, TokenCache
from searle_core.method.templates import TEMPLATES, fill
from searle_core.retrieval.queries import SEARLE_PROMPT, pseudo_query_features


@dataclass(frozen=True)
class PalavraConfig:
    """PALAVRA's two stages.

    Args:
        epochs: inverter pre-training epochs (φ's on the world).
        batch_size: inverter pre-training batch.
        lr: inverter learning rate.
        weight_decay: inverter weight decay.
        dropout: inverter dropout.
        top_concepts: concepts per image the pre-training phrases are drawn from (1: its top concept).
        seed: pre-training seed.
        steps: per-image optimisation steps (``None``: the context's OTI steps).
        token_lr: per-image learning rate.
        token_weight_decay: per-image weight decay.
        token_batch_size: images optimised together, each other's negatives (``None``: the run's OTI
            batch, ``--oti-batch-size``).
        templates: the contrastive loss's templates.
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.01
    dropout: float = 0.5
    top_concepts: int = 1
    seed: int = 42
    steps: int | None = None
    token_lr: float = 2e-2
    token_weight_decay: float = 0.01
    token_batch_size: int | None = None
    templates: tuple[str, ...] = TEMPLATES

    @classmethod
    def for_world(cls, images: int, **overrides) -> PalavraConfig:
        """The offline world's recipe for ``images`` unlabeled images: pre-training for about as many image
        presentations as φ's there (:func:`~searle_core.baselines.training.world_epochs`: 10 epochs over
        the default world's 2,000; 100 stay the default elsewhere), and the
        paper's 32 images a contrastive batch (the world's OTI batch of 128 is a speed setting; here the
        batch sets the negatives). 10, 20 and 40 epochs gave 58.3, 58.7 and 59.5 mAP@10 on the world's
        val split (``PalavraConfig.for_world(epochs=...)``, the same per-image step), within its noise; 40
        pre-trained for 63 s of ``make run``'s notebook 4, 10 for a quarter of that."""
        return cls(**{"epochs": world_epochs(images), "token_batch_size": 32, **overrides})

    def pretraining(self) -> dict:
        """The fields that determine the inverter (its artifact key)."""
        return {
            k: getattr(self, k)
            for k in ("epochs", "batch_size", "lr", "weight_decay", "dropout", "top_concepts", "seed")
        }


def palavra_contrastive_loss(
    text_features: torch.Tensor, image_features: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Cross-entropy of text i over the batch's images, image i being its positive."""
    logits = logit_scale * F.normalize(text_features.float(), dim=-1) @ F.normalize(image_features.float(), dim=-1).T
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def palavra_pretraining_loss(
    inverter: Phi,
    backbone: Backbone,
    image_features: torch.Tensor,
    batch_indices: list[int],
    sampler,
    cache: PhraseFeatureCache,
    tokenize: TokenCache,
) -> torch.Tensor:
    """Stage 1: phrases of the image's concept with the concept replaced by the predicted token keep
    their features (φ's phrase term alone: no distillation, weight 1)."""
    predicted = inverter(image_features.float())
    plain = PrefixCachedEncoder(backbone.model, backbone.dollar_token_id, enabled=False)
    config = PhiLossConfig(lambda_distil=0.0, lambda_gpt=1.0)
    draw = sampler.draw(batch_indices)
    return phi_loss(predicted, image_features, None, draw, cache, plain, tokenize, config)[1]


def train_inverter(
    backbone: Backbone,
    image_features: torch.Tensor,
    concepts: list[list[str]],
    phrase_bank: dict,
    config: PalavraConfig = PalavraConfig(),
    progress: bool = True,
) -> tuple[Phi, list[dict]]:
    """Pre-train the inverter on unlabeled image features and their concepts."""
    torch.manual_seed(config.seed)
    inverter = Phi.for_backbone(backbone, config.dropout).to(backbone.device)
    sampler = phi_sampler(concepts, phrase_bank, config.top_concepts, config.seed, replace_all=False)
    cache, tokenize = PhraseFeatureCache(backbone), TokenCache(backbone)
    feats = image_features.to(backbone.device).float()
    history = fit(
        inverter,
        len(feats),
        lambda idx: palavra_pretraining_loss(inverter, backbone, feats[idx], idx, sampler, cache, tokenize),
        config.epochs,
        config.batch_size,
        config.lr,
        config.weight_decay,
        config.seed,
        "PALAVRA inverter",
        progress,
    )
    return inverter.eval(), history


def optimise_tokens(
    backbone: Backbone,
    image_features: torch.Tensor,
    initial: torch.Tensor,
    steps: int,
    config: PalavraConfig = PalavraConfig(),
    seed: int = 0,
) -> torch.Tensor:
    """Stage 2 for one batch: contrastive per-image optimisation from the inverter's tokens.

    Args:
        backbone: frozen CLIP.
        image_features: (B, embed_dim) the batch's image features (each other's negatives).
        initial: (B, token_dim) starting tokens.
        steps: optimisation steps.
        config: optimiser and templates.
        seed: template draws.
    """
    device = backbone.device
    targets = image_features.to(device).float()
    tokens = initial.detach().to(device).float().clone().requires_grad_()
    optimizer = torch.optim.AdamW([tokens], lr=config.token_lr, weight_decay=config.token_weight_decay)
    rng = random.Random(seed)
    prompts_all = [fill(t, "$") for t in config.templates]
    tokenize = TokenCache(backbone)
    # As in OTI: the templates' text before '$' is encoded once, each step runs only the rest.
    encoder = PrefixCachedEncoder(backbone.model, backbone.dollar_token_id)
    scale = backbone.model.logit_scale.exp().float()
    scaler = grad_scaler(device)  # the same mixed precision as OTI (fp16 + scaler on CUDA, fp32 on CPU)
    for _ in range(steps):
        prompts = tokenize([prompts_all[rng.randrange(len(prompts_all))] for _ in range(len(tokens))])
        with train_autocast(device):
            text = encoder(prompts, tokens)
        loss = palavra_contrastive_loss(text, targets, scale)
        optimizer.zero_grad(set_to_none=True)
        scaled_step(loss, optimizer, scaler)
    return tokens.detach().cpu()


def palavra_reference_tokens(
    backbone: Backbone,
    bench: CIRBenchmark,
    inverter: torch.nn.Module | None,
    config: PalavraConfig,
    oti_steps: int,
    batch_size: int,
    seed: int,
    known: dict[str, torch.Tensor],
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """PALAVRA tokens of every reference image (inverter, then per-image contrastive optimisation).

    Args:
        backbone: the frozen CLIP.
        bench: the benchmark whose reference images are inverted.
        inverter: the pre-trained inverter (``None``: only ``known`` tokens can be used).
        config: PALAVRA's settings; ``config.steps`` ``None`` takes ``oti_steps``.
        oti_steps: OTI's step count, the default of the per-image optimisation.
        batch_size: images optimised together.
        seed: run seed (each batch's seed is drawn from it and the batch's names).
        known: tokens computed before, by image name; filled in place.
        progress: progress bar.
    """
    names, feats = reference_features(backbone, bench, progress)
    if all(n in known for n in names):
        return known
    steps = config.steps if config.steps is not None else oti_steps
    if inverter is None:
        raise InputError(
            "method 'palavra' needs its pre-trained inverter in MethodContext.networks['palavra']: "
            "load one (load_phi) or let searle_core.jobs.prepare.prepare train it"
        )
    with torch.no_grad(), torch.autocast(backbone.device.type, enabled=False):
        initial = inverter(feats.to(backbone.device).float()).float().cpu()
    # Balanced batches (e.g. 400 images -> 13 of 30-31), so no batch is left with one or two images.
    n_batches = max(1, math.ceil(len(names) / batch_size))
    bounds = [round(i * len(names) / n_batches) for i in range(n_batches + 1)]
    bar = tqdm(total=len(names), desc="PALAVRA", unit="img", disable=not progress)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        out = optimise_tokens(
            backbone, feats[lo:hi], initial[lo:hi], steps, config, seed=batch_seed(seed, names[lo:hi])
        )
        known.update(zip(names[lo:hi], out))
        bar.update(hi - lo)
    bar.close()
    return known


def palavra_query_features(backbone: Backbone, bench: CIRBenchmark, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
    """``palavra``: the paper's prompt ``a photo of $ that {caption}`` with PALAVRA's tokens."""
    return pseudo_query_features(backbone, bench.queries, tokens, SEARLE_PROMPT)
