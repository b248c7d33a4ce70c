"""The vocabulary words nearest to a pseudo-word token (what S* "means")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from searle_core.clip.backbone import Backbone
from searle_core.infra.errors import InputError


def _text(backbone: Backbone, entry: str) -> str | None:
    """The text of a byte-level BPE entry ("cafÃ©</w>" -> "café"), ``None`` for a piece of a character."""
    byte_decoder = getattr(backbone.tokenizer, "byte_decoder", None)
    entry = entry.replace("</w>", "")
    if byte_decoder is None:
        return entry
    try:
        return bytes(byte_decoder[c] for c in entry).decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return None


def token_word(backbone: Backbone, token_id: int) -> str:
    """Readable text of a BPE token ("cat</w>" -> "cat"; byte-level entries decoded to their characters)."""
    decoder = getattr(backbone.tokenizer, "decoder", None)
    if decoder is None:
        raise InputError(f"the tokenizer of {backbone.name} has no BPE decoder table")
    return _text(backbone, decoder[token_id]) or decoder[token_id].replace("</w>", "")


def word_token_ids(backbone: Backbone, words: list[str]) -> list[int]:
    """Ids of words that are single BPE tokens (multi-token words are skipped)."""
    inner = [[t for t in toks if t not in (0, toks[0], max(toks))] for toks in backbone.tokenizer(list(words)).tolist()]
    return sorted({ids[0] for ids in inner if len(ids) == 1})


def whole_word_ids(backbone: Backbone) -> list[int]:
    """Every vocabulary entry that ends a word and reads as letters only. CLIP's BPE is byte-level:
    "ãĢij" is the UTF-8 bytes of "】" (not a letter) and "ãĢ" part of a character, while "cafÃ©" is café."""
    entries = backbone.tokenizer.decoder.items()
    return [i for i, entry in entries if entry.endswith("</w>") and (_text(backbone, entry) or "").isalpha()]


@torch.no_grad()
def nearest_words(
    backbone: Backbone, tokens: torch.Tensor, k: int = 10, allowed_ids: list[int] | None = None
) -> list[list[tuple[str, float]]]:
    """For each (N, token_dim) token, the ``k`` words of the embedding table with the highest cosine, among
    ``allowed_ids`` (a small model's trained words: untrained rows are noise) or else whole words."""
    ids = torch.tensor(allowed_ids if allowed_ids is not None else whole_word_ids(backbone))
    table = F.normalize(backbone.model.token_embedding.weight[ids.to(backbone.device)].float(), dim=-1)
    sims = F.normalize(tokens.to(table).reshape(-1, table.shape[1]), dim=-1) @ table.T
    top = sims.topk(min(k, len(ids)), dim=1)
    return [
        [(token_word(backbone, int(ids[j])), float(s)) for s, j in zip(vals, idx)]
        for vals, idx in zip(top.values.cpu(), top.indices.cpu())
    ]
