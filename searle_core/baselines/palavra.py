"""PALAVRA-style inversion (Cohen et al., ECCV 2022), as in SEARLE's table.

1. *Inverter pre-training* on φ's unlabeled images: phrases about the image's top-1 concept, the concept replaced
   by the predicted token, keep the phrase's text features (1 - cosine). The inverter is φ's MLP (PALAVRA's set
   encoder degenerates to one for a single image), so PALAVRA and SEARLE differ only in their objectives.
2. *Per-image optimisation* from the inverter's token: text → image cross-entropy, one random template per image
   and step, the batch's other references as negatives; OTI's optimiser and steps, no EMA, no regulariser.
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


def palavra_contrastive_loss(text_features: torch.Tensor, image_features: torch.Tensor, logit_scale) -> torch.Tensor:
    """Cross-entropy of text i over the batch's images, image i being its positive."""
    logits = logit_scale * F.normalize(text_features.float(), dim=-1) @ F.normalize(image_features.float(), dim=-1).T
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def palavra_pretraining_loss(
    inverter: Phi, backbone: Backbone, image_features: torch.Tensor, batch_indices: list[int], sampler, cache, tokenize
) -> torch.Tensor:
    """Stage 1: φ's phrase term alone (no distillation, weight 1)."""
    predicted = inverter(image_features.float())
    plain = PrefixCachedEncoder(backbone.model, backbone.dollar_token_id, enabled=False)
    config = PhiLossConfig(lambda_distil=0.0, lambda_gpt=1.0)
    return phi_loss(predicted, image_features, None, sampler.draw(batch_indices), cache, plain, tokenize, config)[1]


def train_inverter(
    backbone: Backbone, features: torch.Tensor, concepts: list[list[str]], phrase_bank: dict, config, progress=True
) -> tuple[Phi, list[dict]]:
    """Pre-train the inverter on unlabeled image features and their concepts."""
    torch.manual_seed(config.seed)
    inverter = Phi.for_backbone(backbone, config.dropout).to(backbone.device)
    sampler = phi_sampler(concepts, phrase_bank, config.top_concepts, config.seed, replace_all=False)
    cache, tokenize = PhraseFeatureCache(backbone), TokenCache(backbone)
    feats = features.to(backbone.device).float()
    loss = lambda idx: palavra_pretraining_loss(inverter, backbone, feats[idx], idx, sampler, cache, tokenize)
    history = fit(inverter, len(feats), loss, config, "PALAVRA inverter", progress, width=backbone.token_dim)
    return inverter.eval(), history


def optimise_tokens(
    backbone: Backbone, image_features: torch.Tensor, initial: torch.Tensor, steps: int, config=PalavraConfig(), seed=0
) -> torch.Tensor:
    """Stage 2 for one batch: ``initial`` tokens optimised against the batch's image features."""
    device = backbone.device
    targets = image_features.to(device).float()
    tokens = initial.detach().to(device).float().clone().requires_grad_()
    optimizer = torch.optim.AdamW([tokens], lr=config.token_lr, weight_decay=config.token_weight_decay)
    rng, prompts_all, tokenize = random.Random(seed), [fill(t, "$") for t in config.templates], TokenCache(backbone)
    # As in OTI: the templates' text before '$' is encoded once, each step runs only the rest.
    encoder = PrefixCachedEncoder(backbone.model, backbone.dollar_token_id)
    scale = backbone.model.logit_scale.exp().float()
    scaler = grad_scaler(device)  # the same mixed precision as OTI (fp16 + scaler on CUDA; bf16 or fp32 on a CPU)
    for _ in range(steps):
        prompts = tokenize([prompts_all[rng.randrange(len(prompts_all))] for _ in range(len(tokens))])
        with train_autocast(device, "auto", backbone.token_dim):
            text = encoder(prompts, tokens)
        loss = palavra_contrastive_loss(text, targets, scale)
        optimizer.zero_grad(set_to_none=True)
        scaled_step(loss, optimizer, scaler)
    return tokens.detach().cpu()


def palavra_reference_tokens(
    backbone: Backbone, bench: CIRBenchmark, inverter, config, oti_steps, batch_size, seed, known: dict, progress=True
) -> dict[str, torch.Tensor]:
    """PALAVRA tokens of every reference image, optimised from the inverter's in balanced, seeded batches of at
    most ``batch_size``; ``known``: tokens computed before, filled in place (then no inverter is needed)."""
    names, feats = reference_features(backbone, bench, progress)
    if all(n in known for n in names):
        return known
    if inverter is None:
        raise InputError(
            "method 'palavra' needs its pre-trained inverter in MethodContext.networks['palavra']: "
            "load one (load_phi) or let searle_core.jobs.evaluation.prepare train it"
        )
    with torch.no_grad(), torch.autocast(backbone.device.type, enabled=False):
        initial = inverter(feats.to(backbone.device).float()).float().cpu()
    steps = config.steps if config.steps is not None else oti_steps
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
