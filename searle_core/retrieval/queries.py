"""Every method's query features: one normalised feature per query, from the same features and prompts,
so the tables' differences come from the methods alone."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRQuery
from searle_core.datasets.features import text_features
from searle_core.infra.device import eval_precision
from searle_core.infra.errors import InputError
from searle_core.method.encoding import encode_with_pseudo_tokens, pseudo_word_mask

SEARLE_PROMPT = "a photo of $ that {}"
#: Pic2Word's prompt ("a photo of * , {}"): CLIP's BPE reads "$," as one chunk, hence the space.
PIC2WORD_PROMPT = "a photo of $ , {}"


def caption_variants(query: CIRQuery) -> list[str]:
    """One relative caption, or both orders of two (FashionIQ: "c1 and c2", "c2 and c1"), features averaged."""
    caps = list(query.captions)
    if len(caps) not in (1, 2):
        raise InputError(f"query {query.query_id}: expected one or two relative captions, got {len(caps)}")
    return caps if len(caps) == 1 else [f"{caps[0]} and {caps[1]}", f"{caps[1]} and {caps[0]}"]


def _average_groups(features: torch.Tensor, groups: list[int]) -> torch.Tensor:
    """Mean of normalised features per query (groups[i] = how many prompts query i has), re-normalised."""
    means = [F.normalize(rows, dim=-1).mean(dim=0) for rows in features.split(groups)]
    return F.normalize(torch.stack(means), dim=-1)


def text_query_features(
    backbone: Backbone,
    queries: list[CIRQuery],
    template: str = "{}",
    fillers: list[str] | None = None,
    cache: bool = True,
) -> torch.Tensor:
    """Features of ``template.format(caption)`` per query (Text-only), or of ``template.format(filler,
    caption)`` with a filler per query (Captioning: the reference's caption); ``cache`` keeps them on disk."""
    texts = [caption_variants(q) for q in queries]
    fill = [(fillers[i],) if fillers is not None else () for i in range(len(texts))]
    prompts = [template.format(*f, v) for f, t in zip(fill, texts) for v in t]
    return _average_groups(text_features(backbone, prompts, cache=cache), [len(t) for t in texts])


@torch.no_grad()
def pseudo_query_features(
    backbone: Backbone,
    queries: list[CIRQuery],
    tokens: dict[str, torch.Tensor],
    template: str = SEARLE_PROMPT,
    variants: Callable[[CIRQuery], list[str]] = caption_variants,
) -> torch.Tensor:
    """Features of ``template`` with ``$`` = the reference's pseudo-word token (``tokens``: reference name ->
    token), averaged over ``variants(query)`` (SEARLE, OTI, Pic2Word, PALAVRA)."""
    if missing := [q.reference for q in queries if q.reference not in tokens]:
        raise InputError(f"no pseudo-word token for reference images {missing[:5]} ({len(missing)} missing)")
    texts = [variants(q) for q in queries]
    prompts = [template.format(v) for t in texts for v in t]
    rows = [q.reference for q, t in zip(queries, texts) for _ in t]
    before, _, after = template.partition("{}")
    out, cut = [], []
    for i in range(0, len(prompts), 512):
        chunk = torch.stack([tokens[r] for r in rows[i : i + 512]]).to(backbone.device, torch.float32)
        ids = backbone.tokenize(prompts[i : i + 512])
        cut += [prompts[i + j] for j in (ids[:, -1] != 0).nonzero().flatten().tolist()]  # filled to the end: cut
        # Only the template's "$" is the pseudo-word: a caption's dollar signs ("costs $20 less") stay text.
        mask = pseudo_word_mask(ids, backbone.dollar_token_id, before.count("$"), after.count("$"))
        with eval_precision(backbone.device):
            feats = encode_with_pseudo_tokens(backbone.model, ids, chunk, backbone.dollar_token_id, pseudo_mask=mask)
        out.append(feats.float().cpu())
    if cut:  # CLIP's tokenizer cuts a prompt to its context without a word
        print(
            f"warning: {len(cut)} of {len(prompts)} query prompts reach the text encoder's {ids.shape[1]}-token "
            f"context and are cut there (first: {cut[0][:80]!r}...)",
            file=sys.stderr,
        )
    feats = torch.cat(out)
    bad = (~torch.isfinite(feats).all(dim=1)).nonzero().flatten().tolist()
    if bad:  # NaN features would rank the gallery arbitrarily; say which token did it
        raise InputError(
            f"the pseudo-word token of reference image {rows[bad[0]]!r} gives NaN text features "
            f"(token norm {float(tokens[rows[bad[0]]].float().norm()):.3g}; {len(bad)} prompt(s) affected)"
        )
    return _average_groups(feats, [len(t) for t in texts])


def image_plus_text(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Image + Text baseline: the normalised sum of the two normalised features."""
    return F.normalize(F.normalize(image, dim=-1) + F.normalize(text, dim=-1), dim=-1)
