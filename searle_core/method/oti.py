"""OTI: optimisation-based textual inversion (SEARLE, Sec. 4.1), and the same over many images.

For a batch of images, one pseudo-word token per image is optimised so that templates containing it
("a photo of $") match the image, while a regulariser keeps it word-like: phrases about the image's
concepts with the concept replaced by ``$`` must keep their meaning. Only the tokens are optimised;
CLIP stays frozen. The EMA of the tokens is the result.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from searle_core.infra.device import grad_scaler, scaled_step, train_autocast
from searle_core.infra.errors import InputError
from searle_core.method.losses import cosine_loss
from searle_core.method.prefix_cache import PrefixCachedEncoder
from searle_core.method.regulariser import (
    PhraseBank,
    PhraseFeatureCache,
    PhraseSampler,
    StablePhraseFeatures,
    TokenCache,
)
from searle_core.method.templates import TEMPLATES, fill


@dataclass(frozen=True)
class OTIConfig:
    """OTI's hyper-parameters; the defaults are the paper's.

    ``lambda_gpt`` 0 turns the regulariser off; ``use_ema`` False returns the last raw tokens (an
    ablation); ``top_concepts``: the concepts of each image the regulariser draws from; ``precision``: fp32,
    fp16, bf16 or ``auto`` (``training_precision``: fp16 autocast on CUDA as the authors, on a CPU bf16 where it
    pays); ``prefix_cache``: encode prompts with the prefix cache (same numbers up to rounding, faster).
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
    prefix_cache: bool = True


@dataclass
class OTIResult:
    """``tokens`` (N, token_dim): the EMA (or raw) tokens; ``raw_tokens``: the last optimised ones;
    ``history``: per-step mean losses ``cos``, ``gpt``, ``total``; ``trajectory``: (T, N, token_dim) EMA
    tokens every ``trajectory_every`` steps (``None`` if off)."""

    tokens: torch.Tensor
    raw_tokens: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)
    trajectory: torch.Tensor | None = None


def oti(
    backbone,
    image_features: torch.Tensor,
    concepts: list[list[str]] | None = None,
    phrase_bank: PhraseBank | None = None,
    config: OTIConfig = OTIConfig(),
    seed: int = 42,
    progress: bool = False,
    trajectory_every: int = 0,
    phrase_cache: PhraseFeatureCache | None = None,
) -> OTIResult:
    """Invert a batch of images, (N, embed_dim) CLIP features, into pseudo-word tokens. ``concepts`` (per
    image, best first) and ``phrase_bank`` feed the regulariser (``None``: off); ``seed`` seeds the initial
    tokens and every draw; ``phrase_cache`` reuses plain-phrase features across batches."""
    device = backbone.device
    n = image_features.shape[0]
    targets = image_features.detach().to(device, torch.float32)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    tokens = (torch.randn(n, backbone.token_dim, generator=gen) * config.init_std).to(device).requires_grad_()
    ema = tokens.detach().clone()
    optimizer = torch.optim.AdamW([tokens], lr=config.lr, weight_decay=config.weight_decay)
    scaler, width = grad_scaler(device, config.precision), backbone.token_dim
    tokenize = TokenCache(backbone)
    encoder = PrefixCachedEncoder(backbone.model, backbone.dollar_token_id, enabled=config.prefix_cache)
    template_prompts = [fill(t, "$") for t in config.templates]
    template_ids = [[rng.randrange(len(template_prompts)) for _ in range(n)] for _ in range(config.steps)]

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
        with train_autocast(device, config.precision, width):
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
        with train_autocast(device, config.precision, width):
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


def batch_seed(seed: int, names: list[str]) -> int:
    """A 63-bit seed derived from the run seed and the batch's image names."""
    digest = hashlib.sha256(f"{seed}\n".encode() + "\n".join(map(str, names)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class InvertedBatch:
    """One batch of :func:`invert_images` as its ``on_batch`` hook sees it: its index, image names,
    (B, token_dim) CPU tokens, OTI's full result and wall time."""

    index: int
    names: list[str]
    tokens: torch.Tensor
    result: OTIResult
    seconds: float


def invert_images(
    backbone,
    features: torch.Tensor,
    names: list[str],
    concepts: list[list[str]] | None,
    phrase_bank: PhraseBank | None,
    config: OTIConfig = OTIConfig(),
    batch_size: int = 32,
    seed: int = 42,
    progress: bool = True,
    done: dict[str, torch.Tensor] | None = None,
    on_batch: Callable[[InvertedBatch], None] | None = None,
    batches: list[int] | None = None,
    trajectory_every: int = 0,
    desc: str = "OTI",
) -> dict[str, torch.Tensor]:
    """OTI tokens for every named image: name -> (token_dim,) CPU token.

    Batches are consecutive slices of ``names``, each seeded from ``(seed, its names)`` and reading
    phrase features that do not depend on earlier batches, so an interrupted and resumed run, or one
    split across processes (``batches``: a rank's shard), gives the tokens of one uninterrupted run.
    ``done`` holds tokens already computed (their batches are skipped); ``on_batch`` is called after
    each batch (to checkpoint or log).
    """
    if len(features) != len(names):
        raise InputError(f"{len(features)} feature rows for {len(names)} names")
    tokens = dict(done or {})
    phrases = None
    if concepts and phrase_bank is not None and config.lambda_gpt > 0:
        phrases = StablePhraseFeatures(
            backbone, [c[: config.top_concepts] for c in concepts], phrase_bank, precision=config.precision
        )
    starts = list(range(0, len(names), batch_size))
    todo = range(len(starts)) if batches is None else batches
    bar = tqdm(
        total=sum(len(names[starts[b] : starts[b] + batch_size]) for b in todo),
        desc=desc,
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
    )
    for b in todo:
        start = starts[b]
        batch = names[start : start + batch_size]
        if all(n in tokens for n in batch):
            bar.update(len(batch))
            continue
        began = time.perf_counter()
        result = oti(
            backbone,
            features[start : start + batch_size],
            concepts[start : start + batch_size] if phrases else None,
            phrase_bank,
            config,
            seed=batch_seed(seed, batch),
            trajectory_every=trajectory_every,
            phrase_cache=phrases.cache() if phrases else None,
        )
        batch_tokens = result.tokens.float().cpu()
        tokens.update(zip(batch, batch_tokens))
        if on_batch is not None:
            on_batch(InvertedBatch(b, batch, batch_tokens, result, time.perf_counter() - began))
        bar.update(len(batch))
    bar.close()
    return tokens
