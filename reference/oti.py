"""OTI as one would first write it from the paper: the yardstick the library's OTI is held to.

Every text pass runs CLIP's full 77-token context, plain phrases are re-encoded and prompts tokenized at
every step. The random draws are OTI's, so both give the same tokens up to rounding. The benchmarks time
the library against it and the tests compare with it; nothing computes results with it.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from searle_core.infra.device import grad_scaler, scaled_step, train_autocast
from searle_core.method.encoding import encode_text, encode_with_pseudo_tokens
from searle_core.method.losses import cosine_loss
from searle_core.method.oti import OTIConfig
from searle_core.method.regulariser import PhraseBank, PhraseSampler
from searle_core.method.templates import fill


def reference_oti(
    backbone,
    image_features: torch.Tensor,
    concepts: list[list[str]] | None,
    phrase_bank: PhraseBank | None,
    config: OTIConfig = OTIConfig(),
    seed: int = 42,
) -> torch.Tensor:
    """OTI's (N, token_dim) EMA tokens: initial tokens from ``torch.Generator(seed)``, then per step each
    image's template and the phrase draw from ``random.Random(seed)``, as the library draws them."""
    device, model = backbone.device, backbone.model
    n = image_features.shape[0]
    targets = image_features.to(device, torch.float32)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    tokens = (torch.randn(n, backbone.token_dim, generator=gen) * config.init_std).to(device).requires_grad_()
    ema = tokens.detach().clone()
    optimizer = torch.optim.AdamW([tokens], lr=config.lr, weight_decay=config.weight_decay)
    scaler = grad_scaler(device, config.precision)
    template_ids = [[rng.randrange(len(config.templates)) for _ in range(n)] for _ in range(config.steps)]
    regularise = config.lambda_gpt > 0 and concepts is not None and phrase_bank is not None
    draws = []
    if regularise:
        sampler = PhraseSampler([c[: config.top_concepts] for c in concepts], phrase_bank, rng, draw="phrase")
        draws = [sampler.draw() for _ in range(config.steps)]
    lam = config.lambda_cos + (config.lambda_gpt if regularise else 0.0)
    for step in range(config.steps):
        prompts = [fill(config.templates[i], "$") for i in template_ids[step]]
        with train_autocast(device, config.precision):
            feats = encode_with_pseudo_tokens(
                model, backbone.tokenize(prompts), tokens, backbone.dollar_token_id, truncate=False
            )
            loss = config.lambda_cos * cosine_loss(feats, targets)
            if regularise and draws[step].rows:
                draw = draws[step]
                pseudo = encode_with_pseudo_tokens(
                    model,
                    backbone.tokenize(draw.pseudo_phrases),
                    tokens[draw.rows],
                    backbone.dollar_token_id,
                    truncate=False,
                )
                with torch.no_grad():
                    plain = F.normalize(
                        encode_text(model, backbone.tokenize(draw.phrases), truncate=False).float(), dim=-1
                    )
                loss = loss + config.lambda_gpt * cosine_loss(pseudo, plain)
            loss = loss / lam
        optimizer.zero_grad(set_to_none=True)
        scaled_step(loss, optimizer, scaler)
        with torch.no_grad():
            ema.mul_(config.ema_decay).add_(tokens.detach(), alpha=1 - config.ema_decay)
    return (ema if config.use_ema else tokens.detach()).clone()
