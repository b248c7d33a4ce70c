"""OTI: optimisation-based textual inversion (SEARLE, Sec. 4.1).

For a batch of images, one pseudo-word token per image is optimised so that templates containing
it ("a photo of $") match the image, while a regulariser keeps it word-like: phrases about the
image's concepts with the concept replaced by ``$`` must keep their meaning. Only the tokens are
optimised; CLIP stays frozen and untouched. The EMA of the tokens is the result.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from searle_core.clip.backbone import Backbone
from searle_core.clip.prefix_encoding import PrefixCachedEncoder
from searle_core.clip.templates import TEMPLATES, fill
from searle_core.infra.device import grad_scaler, scaled_step, train_autocast
from searle_core.infra.errors import InputError
from searle_core.inversion.losses import cosine_loss
from searle_core.inversion.regulariser import PhraseBank, PhraseFeatureCache, PhraseSampler, TokenCache


@dataclass(frozen=True)
class OTIConfig:
    """OTI hyper-parameters; the defaults are the paper's.

    Args:
        steps: optimisation steps per batch.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        lambda_cos: weight of the template-to-image cosine loss.
        lambda_gpt: weight of the phrase regulariser (0 disables it).
        ema_decay: decay of the token EMA that is returned.
        use_ema: return the EMA (paper) or the last raw tokens (ablation).
        init_std: standard deviation of the random initial tokens.
        templates: prompt templates for the cosine loss, ``{}`` marks the pseudo-word.
        top_concepts: how many of each image's concepts the regulariser draws from (the first 15
            of the whole vocabulary's ranking; those without usable phrases are then skipped, so an
            image may be regularised with fewer, as in the authors' code).
        precision: ``auto`` (fp16 autocast + GradScaler on CUDA, the authors' recipe; fp32 on CPU),
            ``fp32``, ``fp16`` or ``bf16`` (see :mod:`searle_core.infra.device`).
    """

    steps: int = 350
    lr: float = 2e-2
    weight_decay: float = 0.01
    lambda_cos: float = 1.0
    lambda_gpt: float = 0.5
    ema_decay: float = 0.99
    use_ema: bool = True
    init_std: float = 0.02
    templates: tuple[str, ...] = TEMPLATES
    top_concepts: int = 15
    precision: str = "auto"


@dataclass
class OTIResult:
    """Tokens and what happened while finding them.

    Args:
        tokens: (N, token_dim) the result (EMA tokens unless ``use_ema`` is False).
        raw_tokens: (N, token_dim) the last optimised tokens.
        history: per-step mean losses: ``cos``, ``gpt`` and ``total``.
        trajectory: (T, N, token_dim) EMA tokens every ``trajectory_every`` steps (empty if off).
    """

    tokens: torch.Tensor
    raw_tokens: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)
    trajectory: torch.Tensor | None = None


def _draw_templates(rng: random.Random, n_templates: int, steps: int, n: int) -> list[list[int]]:
    return [[rng.randrange(n_templates) for _ in range(n)] for _ in range(steps)]


def oti(
    backbone: Backbone,
    image_features: torch.Tensor,
    concepts: list[list[str]] | None = None,
    phrase_bank: PhraseBank | None = None,
    config: OTIConfig = OTIConfig(),
    seed: int = 42,
    progress: bool = False,
    trajectory_every: int = 0,
    phrase_cache: PhraseFeatureCache | None = None,
) -> OTIResult:
    """Invert a batch of images into pseudo-word tokens.

    Args:
        backbone: the frozen CLIP (its parameters are never changed).
        image_features: (N, embed_dim) CLIP image features of the batch.
        concepts: per image, its associated concepts, best first (``None``: no regulariser).
        phrase_bank: concept -> phrases (``None``: no regulariser).
        config: hyper-parameters.
        seed: seeds the initial tokens and every random draw, so a batch's result depends only on
            the seed, the features and the concepts.
        progress: show a progress bar over steps.
        trajectory_every: record the EMA tokens every this many steps (0: off).
        phrase_cache: reuse features of plain phrases across batches.

    Returns:
        An :class:`OTIResult`.
    """
    device = backbone.device
    n = image_features.shape[0]
    targets = image_features.detach().to(device, torch.float32)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    tokens = (torch.randn(n, backbone.token_dim, generator=gen) * config.init_std).to(device).requires_grad_()
    ema = tokens.detach().clone()
    optimizer = torch.optim.AdamW([tokens], lr=config.lr, weight_decay=config.weight_decay)
    scaler = grad_scaler(device, config.precision)
    tokenize = TokenCache(backbone)
    encoder = PrefixCachedEncoder(backbone.model, backbone.dollar_token_id)
    template_prompts = [fill(t, "$") for t in config.templates]
    template_ids = _draw_templates(rng, len(template_prompts), config.steps, n)

    regularise = config.lambda_gpt > 0 and concepts is not None and phrase_bank is not None
    draws = []
    if regularise:
        if len(concepts) != n:
            raise InputError(f"got concepts for {len(concepts)} images but features for {n}")
        # One phrase uniformly from the flat list of each image's phrases (the authors' OTI draw).
        sampler = PhraseSampler([c[: config.top_concepts] for c in concepts], phrase_bank, rng, draw="phrase")
        draws = [sampler.draw() for _ in range(config.steps)]
        cache = phrase_cache or PhraseFeatureCache(backbone)
        # One no-grad pass over every phrase the run will use, instead of re-encoding each step
        # (under the training autocast, where the authors encode them).
        with train_autocast(device, config.precision):
            cache.features(sorted({p for d in draws for p in d.phrases}))

    history: dict[str, list[torch.Tensor]] = {"cos": [], "gpt": [], "total": []}
    trajectory = []
    lam = config.lambda_cos + (config.lambda_gpt if regularise else 0.0)
    for step in tqdm(range(config.steps), desc="OTI", disable=not progress, leave=False):
        prompts = [template_prompts[i] for i in template_ids[step]]
        rows = list(range(n))
        draw = draws[step] if regularise else None
        if draw is not None:
            prompts += draw.pseudo_phrases
            rows += draw.rows
        with train_autocast(device, config.precision):
            # Templates and pseudo-phrases go through one call; the encoder runs only the part of
            # each prompt from its first '$' on (the prefix is cached) and splits the batch in two
            # passes by length when that saves enough padding.
            feats = encoder(tokenize(prompts), tokens[rows])
            cos = cosine_loss(feats[:n], targets)
            if draw is not None and draw.rows:
                gpt = cosine_loss(feats[n:], cache.features(draw.phrases))
            else:
                gpt = torch.zeros((), device=device)
            loss = (config.lambda_cos * cos + (config.lambda_gpt * gpt if regularise else 0.0)) / lam
        optimizer.zero_grad(set_to_none=True)
        scaled_step(loss, optimizer, scaler)
        with torch.no_grad():
            ema.mul_(config.ema_decay).add_(tokens.detach(), alpha=1 - config.ema_decay)
        for key, value in (("cos", cos), ("gpt", gpt), ("total", loss)):
            history[key].append(value.detach())
        if trajectory_every and (step % trajectory_every == 0 or step == config.steps - 1):
            trajectory.append(ema.detach().cpu().clone())

    raw = tokens.detach()
    return OTIResult(
        tokens=(ema if config.use_ema else raw).clone(),
        raw_tokens=raw.clone(),
        history={k: torch.stack(v).float().cpu().tolist() if v else [] for k, v in history.items()},
        trajectory=torch.stack(trajectory) if trajectory else None,
    )
