"""OTI over many images, in batches, each batch seeded by its own image names: the one loop.

``searle-oti``, φ's distillation targets, the notebooks' cached runs and ``searle oti`` (the
dataset-scale, resumable, sharded run) all invert images through :func:`invert_images`.

Seeding a batch from ``(seed, its names)`` instead of a global random stream, and reading phrase
features from a :class:`StablePhraseFeatures` instead of a cache filled in batch order, makes a
batch's tokens independent of which batches ran before it: an interrupted and resumed run, or a run
split across processes, gives the same tokens as one uninterrupted run.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from searle_core.clip.backbone import Backbone
from searle_core.infra.errors import InputError
from searle_core.inversion.oti import OTIConfig, OTIResult, oti
from searle_core.inversion.regulariser import PhraseBank, StablePhraseFeatures


def batch_seed(seed: int, names: list[str]) -> int:
    """A 63-bit seed derived from the run seed and the batch's image names."""
    digest = hashlib.sha256(f"{seed}\n".encode() + "\n".join(map(str, names)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class InvertedBatch:
    """One batch of :func:`invert_images`, as its ``on_batch`` hook sees it.

    Args:
        index: the batch's index (batches are consecutive slices of ``batch_size`` names).
        names: its images.
        tokens: (B, token_dim) CPU float tokens (the EMA tokens, what ``searle-oti`` uses).
        result: OTI's full result (raw tokens, per-step losses, EMA trajectory when asked).
        seconds: wall time of the batch.
    """

    index: int
    names: list[str]
    tokens: torch.Tensor
    result: OTIResult
    seconds: float


def invert_images(
    backbone: Backbone,
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
    """OTI tokens for every named image.

    Args:
        backbone: the frozen CLIP.
        features: (N, embed_dim) image features, row i for ``names[i]`` (OTI's cosine ignores their scale).
        names: image names (batches are consecutive slices of this list).
        concepts: per image, its concepts (best first), or ``None`` for no regulariser.
        phrase_bank: concept -> phrases.
        config: OTI hyper-parameters.
        batch_size: images optimised together (32 in the paper).
        seed: run seed.
        progress: progress bar over images, with images/s.
        done: tokens already computed (from a checkpoint); their batches are skipped.
        on_batch: called after each batch with its :class:`InvertedBatch`, e.g. to checkpoint or log.
        batches: only these batch indices (a rank's shard); default: all.
        trajectory_every: keep the EMA tokens every this many steps in each batch's ``result`` (0: off).
        desc: progress-bar label.

    Returns:
        name -> (token_dim,) CPU token, for ``done`` and the batches run.
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
