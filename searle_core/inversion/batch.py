"""OTI over many images, in batches, each batch seeded by its own image names.

Seeding a batch from ``(seed, its names)`` instead of a global random stream, and reading phrase
features from a :class:`StablePhraseFeatures` instead of a cache filled in batch order, makes a
batch's tokens independent of which batches ran before it: an interrupted and resumed run, or a run
split across processes, gives the same tokens as one uninterrupted run.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import torch
from tqdm.auto import tqdm

from searle_core.backbone import Backbone
from searle_core.inversion.oti import OTIConfig, oti
from searle_core.inversion.regularizer import PhraseBank, StablePhraseFeatures


def batch_seed(seed: int, names: list[str]) -> int:
    """A 63-bit seed derived from the run seed and the batch's image names."""
    digest = hashlib.sha256(f"{seed}\n".encode() + "\n".join(map(str, names)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def invert_images(backbone: Backbone, features: torch.Tensor, names: list[str],
                  concepts: list[list[str]] | None, phrase_bank: PhraseBank | None,
                  config: OTIConfig = OTIConfig(), batch_size: int = 32, seed: int = 42, progress: bool = True,
                  done: dict[str, torch.Tensor] | None = None,
                  on_batch: Callable[[int, list[str], torch.Tensor], None] | None = None) -> dict[str, torch.Tensor]:
    """OTI tokens for every named image.

    Args:
        backbone: the frozen CLIP.
        features: (N, embed_dim) image features, row i for ``names[i]``.
        names: image names (batches are consecutive slices of this list).
        concepts: per image, its concepts (best first), or ``None`` for no regulariser.
        phrase_bank: concept -> phrases.
        config: OTI hyper-parameters.
        batch_size: images optimised together (32 in the paper).
        seed: run seed.
        progress: progress bar over images, with images/s.
        done: tokens already computed (from a checkpoint); their batches are skipped.
        on_batch: called after each batch with (batch index, names, tokens), e.g. to checkpoint.

    Returns:
        name -> (token_dim,) CPU token.
    """
    if len(features) != len(names):
        raise ValueError(f"{len(features)} feature rows for {len(names)} names")
    tokens = dict(done or {})
    phrases = None
    if concepts and phrase_bank is not None and config.lambda_gpt > 0:
        phrases = StablePhraseFeatures(backbone, [c[:config.top_concepts] for c in concepts], phrase_bank)
    bar = tqdm(total=len(names), desc="OTI", unit="img", disable=not progress)
    for b, start in enumerate(range(0, len(names), batch_size)):
        batch = names[start:start + batch_size]
        if all(n in tokens for n in batch):
            bar.update(len(batch))
            continue
        result = oti(backbone, features[start:start + batch_size], concepts[start:start + batch_size] if concepts else None,
                     phrase_bank, config, seed=batch_seed(seed, batch),
                     phrase_cache=phrases.cache() if phrases else None)
        batch_tokens = result.tokens.float().cpu()
        tokens.update(zip(batch, batch_tokens))
        if on_batch is not None:
            on_batch(b, batch, batch_tokens)
        bar.update(len(batch))
    bar.close()
    return tokens
