"""The vocabulary words nearest to a pseudo-word token (what S* "means")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..backbone import Backbone


def token_word(backbone: Backbone, token_id: int) -> str:
    """Readable text of a BPE token ("cat</w>" -> "cat")."""
    decoder = getattr(backbone.tokenizer, "decoder", None)
    if decoder is None:
        raise ValueError(f"the tokenizer of {backbone.name} has no BPE decoder table")
    return decoder[token_id].replace("</w>", "")


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
    """Every vocabulary entry that is a whole alphabetic word (ends a word, letters only)."""
    decoder = backbone.tokenizer.decoder
    return [i for i, w in decoder.items() if w.endswith("</w>") and w[:-4].isalpha()]


@torch.no_grad()
def nearest_words(backbone: Backbone, tokens: torch.Tensor, k: int = 10,
                  allowed_ids: list[int] | None = None) -> list[list[tuple[str, float]]]:
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
    return [[(token_word(backbone, int(ids[j])), float(s)) for s, j in zip(vals, idx)]
            for vals, idx in zip(top.values.cpu(), top.indices.cpu())]
