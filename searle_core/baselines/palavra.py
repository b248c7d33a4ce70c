"""PALAVRA-style inversion (Cohen et al., "This is my unicorn, Fluffy", ECCV 2022), as in SEARLE's table.

1. *Inverter pre-training.* A network maps image features to a token such that phrases about the image's
   concept, the concept replaced by the token, keep the original phrase's text features (1 - cosine).
   Only this stage sees phrases.
2. *Per-image optimisation.* Each reference's token starts at the inverter's prediction and is optimised
   so that a template with ``$`` = the token picks out its own image among the batch's. No phrase
   regulariser.

Choices where the original's details are unknown or do not apply to single-image queries:

- *Inverter.* PALAVRA's set encoder degenerates to an MLP for one image; φ's MLP is used, so PALAVRA
  and SEARLE differ only in their objectives.
- *The image's concept.* Zero-shot there are no labelled classes: it is the image's top-1 vocabulary
  concept by CLIP similarity, its phrases from SEARLE's phrase bank; trained on φ's unlabeled images
  with φ's epochs and batch.
- *Contrastive loss.* Text → image cross-entropy, one random template of the 24 per image and step,
  temperature = CLIP's logit scale; negatives are the batch's other references (balanced batches of at
  most ``token_batch_size``, by default the run's OTI batch: here the batch is part of the objective;
  a batch of one image keeps its initial token).
- *Optimiser.* OTI's: AdamW, lr 2e-2, weight decay 0.01, ``--oti-steps`` steps; the last tokens are
  used (no EMA, which is SEARLE's addition).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from searle_core.baselines.training import fit
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


@dataclass(frozen=True)
class PalavraConfig:
    """PALAVRA's two stages: the inverter's pre-training, then the per-image optimisation (``token_*``)."""

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.01
    dropout: float = 0.5
    top_concepts: int = 1  # concepts per image its pre-training phrases are drawn from
    seed: int = 42
    steps: int | None = None  # per-image steps (None: the run's OTI steps)
    token_lr: float = 2e-2
    token_weight_decay: float = 0.01
    token_batch_size: int | None = None  # images optimised together, each other's negatives (None: OTI's batch)
    templates: tuple[str, ...] = TEMPLATES

    def pretraining(self) -> dict:
        """The fields that determine the inverter (its artifact key)."""
        fields = ("epochs", "batch_size", "lr", "weight_decay", "dropout", "top_concepts", "seed")
        return {k: getattr(self, k) for k in fields}


def palavra_contrastive_loss(
    text_features: torch.Tensor, image_features: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Cross-entropy of text i over the batch's images, image i being its positive."""
    logits = logit_scale * F.normalize(text_features.float(), dim=-1) @ F.normalize(image_features.float(), dim=-1).T
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def palavra_pretraining_loss(
    inverter: Phi, backbone: Backbone, image_features: torch.Tensor, batch_indices: list[int], sampler, cache, tokenize
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
    config=PalavraConfig(),
    progress=True,
) -> tuple[Phi, list[dict]]:
    """Pre-train the inverter on unlabeled image features and their concepts."""
    torch.manual_seed(config.seed)
    inverter = Phi.for_backbone(backbone, config.dropout).to(backbone.device)
    sampler = phi_sampler(concepts, phrase_bank, config.top_concepts, config.seed, replace_all=False)
    cache, tokenize = PhraseFeatureCache(backbone), TokenCache(backbone)
    feats = image_features.to(backbone.device).float()
    loss = lambda idx: palavra_pretraining_loss(inverter, backbone, feats[idx], idx, sampler, cache, tokenize)
    history = fit(inverter, len(feats), loss, config, "PALAVRA inverter", progress)
    return inverter.eval(), history


def optimise_tokens(
    backbone: Backbone, image_features: torch.Tensor, initial: torch.Tensor, steps: int, config=PalavraConfig(), seed=0
) -> torch.Tensor:
    """Stage 2 for one batch: contrastive optimisation of ``initial`` (B, token_dim) tokens against the
    batch's (B, embed_dim) image features, each other's negatives; ``seed`` draws the templates."""
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
    inverter,
    config,
    oti_steps: int,
    batch_size: int,
    seed: int,
    known: dict,
    progress=True,
) -> dict[str, torch.Tensor]:
    """PALAVRA tokens of every reference image: the inverter's, optimised ``config.steps`` (else
    ``oti_steps``) steps in balanced batches of at most ``batch_size``, each seeded from the run ``seed``
    and its names. ``known``: tokens computed before, by image name, filled in place (``inverter`` may
    then be ``None``)."""
    names, feats = reference_features(backbone, bench, progress)
    if all(n in known for n in names):
        return known
    steps = config.steps if config.steps is not None else oti_steps
    if inverter is None:
        raise InputError(
            "method 'palavra' needs its pre-trained inverter in MethodContext.networks['palavra']: "
            "load one (load_phi) or let searle_core.jobs.evaluation.prepare train it"
        )
    with torch.no_grad(), torch.autocast(backbone.device.type, enabled=False):
        initial = inverter(feats.to(backbone.device).float()).float().cpu()
    # Balanced batches (e.g. 400 images -> 13 of 30-31), so no batch is left with one or two images.
    n_batches = max(1, math.ceil(len(names) / batch_size))
    bounds = [round(i * len(names) / n_batches) for i in range(n_batches + 1)]
    bar = tqdm(total=len(names), desc="PALAVRA", unit="img", disable=not progress)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        batch = batch_seed(seed, names[lo:hi])
        known.update(zip(names[lo:hi], optimise_tokens(backbone, feats[lo:hi], initial[lo:hi], steps, config, batch)))
        bar.update(hi - lo)
    bar.close()
    return known
