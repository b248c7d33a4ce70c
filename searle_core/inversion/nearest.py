"""The vocabulary words nearest to a pseudo-word token (what S* "means")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from searle_core.clip.backbone import Backbone
from searle_core.infra.errors import InputError


def _text(backbone: Backbone, entry: str) -> str | None:
    """The text a byte-level BPE entry stands for ("cat</w>" -> "cat", "cafÃ©</w>" -> "café"), or ``None``
    when its bytes are not whole UTF-8 characters (a piece of a multi-byte character, such as "ãĢ")."""
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
    text = _text(backbone, decoder[token_id])
    return decoder[token_id].replace("</w>", "") if text is None else text


def word_token_ids(backbone: Backbone, words: list[str]) -> list[int]:
    """Ids of words that are single BPE tokens (multi-token words are skipped)."""
    ids = []
    for word in words:
        toks = backbone.tokenizer([word])[0].tolist()
        inner = [t for t in toks if t not in (0, toks[0], max(toks))]
        if len(inner) == 1:
            ids.append(inner[0])
    return sorted(set(ids))


def whole_word_ids(backbone: Backbone) -> list[int]:
    """Every vocabulary entry that is a whole word: it ends a word and its text is letters only.

    CLIP's BPE is byte-level: an entry such as "ãĢij" is the three UTF-8 bytes of "】" shown as
    Latin-1 look-alikes, and "ãĢ" is part of a character. Read as characters, the first is not a
    letter and the second is not text, so neither is a word; "cafÃ©" (café) is.
    """
    decoder = backbone.tokenizer.decoder
    ids = []
    for i, entry in decoder.items():
        if entry.endswith("</w>"):
            text = _text(backbone, entry)
            if text is not None and text.isalpha():
                ids.append(i)
    return ids


@torch.no_grad()
def nearest_words(
    backbone: Backbone, tokens: torch.Tensor, k: int = 10, allowed_ids: list[int] | None = None
) -> list[list[tuple[str, float]]]:
    """For each token, the ``k`` vocabulary words with the highest cosine similarity.

    Args:
        backbone: the CLIP whose token-embedding table is searched.
        tokens: (N, token_dim) pseudo-word tokens.
        k: words per token.
        allowed_ids: restrict the search to these token ids (e.g. the words a small model was
            trained on; untrained rows of a large table are noise). Default: whole words.
    """
    ids = torch.tensor(allowed_ids if allowed_ids is not None else whole_word_ids(backbone))
    table = F.normalize(backbone.model.token_embedding.weight[ids.to(backbone.device)].float(), dim=-1)
    sims = F.normalize(tokens.to(table).reshape(-1, table.shape[1]), dim=-1) @ table.T
    top = sims.topk(min(k, len(ids)), dim=1)
    return [
        [(token_word(backbone, int(ids[j])), float(s)) for s, j in zip(vals, idx)]
        for vals, idx in zip(top.values.cpu(), top.indices.cpu())
    ]
