"""CLIP text features of prompts whose ``$`` rows hold pseudo-word tokens.

CLIP's text transformer is causal and its feature is read at the end-of-text (EOT) position, so
positions after the longest EOT in a batch never influence the result: running the transformer on
``tokens[:, :max_eot + 1]`` is exact, and for short prompts it is several times cheaper than the
77-token context. Every text pass of the package goes through :func:`encode_token_embeddings`.
:mod:`.prefix_cache` is a switchable speed-up of :func:`encode_with_pseudo_tokens` for OTI and φ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from searle_core.infra.errors import InputError


def encode_token_embeddings(
    model: torch.nn.Module, tokens: torch.Tensor, embeddings: torch.Tensor, truncate: bool = True
) -> torch.Tensor:
    """CLIP's text tower on (N, L, width) input embeddings, read at EOT and projected: (N, embed_dim)
    unnormalised features. ``truncate`` cuts the context after the longest EOT (exact for a causal tower)."""
    if getattr(model, "text_pool_type", "argmax") != "argmax":
        raise InputError(
            f"pseudo-token encoding needs a CLIP whose text features are read at the EOT "
            f"token (text_pool_type 'argmax'); this model uses {model.text_pool_type!r}."
        )
    eot = tokens.argmax(dim=-1)  # CLIP's EOT has the largest id
    length = int(eot.max()) + 1 if truncate else tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = embeddings[:, :length].to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    mask = model.attn_mask[:length, :length] if model.attn_mask is not None else None
    x = model.transformer(x, attn_mask=mask)
    return text_head(model, x, eot)


def text_head(model: torch.nn.Module, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
    """The text tower's output ``x`` (N, L, width) read at each row's ``eot``: final norm, then projection."""
    x, proj = model.ln_final(x)[torch.arange(x.shape[0], device=x.device), eot], model.text_projection
    return x if proj is None else proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def require_pseudo_word(is_pseudo: torch.Tensor, pseudo_token_id: int) -> None:
    """Every prompt holds the pseudo-word: the rows of ``is_pseudo`` (N, L) without one are an input error."""
    if missing := (~is_pseudo.any(dim=1)).nonzero().flatten().tolist():
        raise InputError(
            f"prompts {missing[:10]} contain no pseudo-word token (id {pseudo_token_id}); "
            "write '$' where the pseudo-word goes, e.g. 'a photo of $ that is red'."
        )


def encode_text(model: torch.nn.Module, tokens: torch.Tensor, truncate: bool = True) -> torch.Tensor:
    """``model.encode_text`` with the exact causal truncation (unnormalised features)."""
    return encode_token_embeddings(model, tokens, model.token_embedding(tokens), truncate=truncate)


def pseudo_word_mask(
    tokens: torch.Tensor, pseudo_token_id: int, first: int | None = None, last: int = 0
) -> torch.Tensor:
    """Where the pseudo-word goes: every ``$`` token, or only the first ``first`` and last ``last`` (counting
    the template's from both ends finds them whatever dollar signs the caption holds: "costs $20 less")."""
    is_dollar = tokens == pseudo_token_id
    if first is None:
        return is_dollar
    counted = is_dollar.long()
    from_start = counted.cumsum(dim=1)
    from_end = counted.flip(1).cumsum(dim=1).flip(1)
    return is_dollar & ((from_start <= first) | (from_end <= last))


def encode_with_pseudo_tokens(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    pseudo_tokens: torch.Tensor,
    pseudo_token_id: int = 259,
    truncate: bool = True,
    pseudo_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N, embed_dim) unnormalised text features of prompts whose ``$`` row holds a pseudo-word token.

    ``pseudo_tokens`` is (N, width), one per prompt, or (width,) broadcast. Only the *first* ``$`` of a
    prompt (among ``pseudo_mask``'s positions, default every ``$``) takes the token; later ones keep
    the character's embedding, as in the authors' code. Gradients flow to ``pseudo_tokens``.
    """
    width = model.token_embedding.weight.shape[1]
    if pseudo_tokens.dim() == 1:
        pseudo_tokens = pseudo_tokens.unsqueeze(0)
    if pseudo_tokens.dim() != 2 or pseudo_tokens.shape[1] != width:
        raise InputError(
            f"pseudo_tokens must have shape (N, {width}) or ({width},) for this model's "
            f"token embeddings; got {tuple(pseudo_tokens.shape)}."
        )
    if pseudo_tokens.shape[0] == 1:
        pseudo_tokens = pseudo_tokens.expand(tokens.shape[0], -1)
    elif pseudo_tokens.shape[0] != tokens.shape[0]:
        raise InputError(
            f"got {pseudo_tokens.shape[0]} pseudo tokens for {tokens.shape[0]} prompts; "
            "pass one per prompt or a single one to broadcast."
        )
    is_pseudo = tokens == pseudo_token_id if pseudo_mask is None else pseudo_mask.to(tokens.device)
    require_pseudo_word(is_pseudo, pseudo_token_id)
    embeddings = model.token_embedding(tokens)
    first = is_pseudo & (is_pseudo.cumsum(dim=1) == 1)
    # torch.where keeps the graph to pseudo_tokens at the first '$' of each prompt.
    expanded = pseudo_tokens.to(embeddings.dtype).unsqueeze(1).expand_as(embeddings)
    embeddings = torch.where(first.unsqueeze(-1), expanded, embeddings)
    return encode_token_embeddings(model, tokens, embeddings, truncate=truncate)


def normalized(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)
