"""Looking inside textual inversion: prompts as tokens, what a pseudo-word retrieves, how word-like it
is, where it travels during OTI, and how OTI's and φ's tokens compare.

The notebooks' teaching figures are computed here (and tested); the notebooks only call and plot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from searle_core.clip.backbone import Backbone
from searle_core.infra.errors import InputError
from searle_core.inversion.nearest import nearest_words, token_word, whole_word_ids
from searle_core.method.encoding import encode_with_pseudo_tokens
from searle_core.retrieval.ranking import rank_gallery
from searle_core.world import concepts_of

PHOTO_PROMPT = "a photo of $"


def readable_tokens(backbone: Backbone, prompt: str) -> list[tuple[int, str]]:
    """The BPE tokens of a prompt from start- to end-of-text, as ``(id, text)`` pairs.

    Shows that ``$`` is a single ordinary token (id 259 in CLIP's BPE) whose embedding row is the
    one textual inversion replaces.
    """
    ids = backbone.tokenizer([prompt])[0].tolist()
    end = ids.index(max(ids)) + 1
    decoder = getattr(backbone.tokenizer, "decoder", None)
    return [(i, decoder[i].replace("</w>", "") if decoder else str(i)) for i in ids[:end]]


def dollar_embedding(backbone: Backbone) -> torch.Tensor:
    """The token-embedding row of ``$`` itself: the pseudo-word *before* inversion."""
    return backbone.model.token_embedding.weight[backbone.dollar_token_id].detach().float().cpu()


@torch.no_grad()
def prompt_features(
    backbone: Backbone, tokens: torch.Tensor, prompt: str = PHOTO_PROMPT, batch_size: int = 256
) -> torch.Tensor:
    """Normalised features of ``prompt`` with ``$`` = each token: (N, embed_dim) on CPU."""
    tokens = tokens.reshape(-1, backbone.token_dim)
    out = []
    for start in range(0, len(tokens), batch_size):
        chunk = tokens[start : start + batch_size].to(backbone.device)
        ids = backbone.tokenize([prompt] * len(chunk))
        out.append(
            F.normalize(
                encode_with_pseudo_tokens(backbone.model, ids, chunk, backbone.dollar_token_id).float(), dim=-1
            ).cpu()
        )
    return torch.cat(out)


def prompt_image_similarity(
    backbone: Backbone, tokens: torch.Tensor, image_features: torch.Tensor, prompt: str = PHOTO_PROMPT
) -> np.ndarray:
    """Cosine between ``prompt`` with token i and image i: (N,). What OTI's L_cos maximises."""
    text = prompt_features(backbone, tokens, prompt)
    return (text * F.normalize(image_features.float().cpu(), dim=-1)).sum(-1).numpy()


def trajectory_steps(steps: int, every: int) -> list[int]:
    """The OTI steps at which ``oti(..., trajectory_every=every)`` records the EMA tokens."""
    return [s for s in range(steps) if s % every == 0 or s == steps - 1]


def trajectory_similarity(
    backbone: Backbone, trajectory: torch.Tensor, image_features: torch.Tensor, prompt: str = PHOTO_PROMPT
) -> np.ndarray:
    """:func:`prompt_image_similarity` at every recorded OTI step: (T, N) from a (T, N, D) trajectory."""
    t, n, _ = trajectory.shape
    sims = prompt_image_similarity(backbone, trajectory.reshape(t * n, -1), image_features.repeat(t, 1), prompt)
    return sims.reshape(t, n)


def self_retrieval_ranks(
    backbone: Backbone,
    tokens: torch.Tensor,
    image_features: torch.Tensor,
    gallery_features: torch.Tensor,
    prompt: str = PHOTO_PROMPT,
) -> np.ndarray:
    """Rank (1 = first) of each image when ``prompt`` with its token searches the gallery plus the
    inverted images themselves: does "a photo of $" find the very image $ came from?

    Args:
        backbone: the frozen CLIP.
        tokens: (N, token_dim) one token per image.
        image_features: (N, embed_dim) the inverted images (added to the search set).
        gallery_features: (G, embed_dim) distractors.
        prompt: the prompt with ``$``.
    """
    queries = prompt_features(backbone, tokens, prompt)
    images = F.normalize(image_features.float().cpu(), dim=-1)
    search = torch.cat([images, F.normalize(gallery_features.float().cpu(), dim=-1)])
    scores = queries @ search.T
    own = scores[torch.arange(len(images)), torch.arange(len(images))]
    return (scores > own[:, None]).sum(1).numpy() + 1


def word_rows(backbone: Backbone, allowed_ids: Sequence[int] | None = None) -> tuple[list[int], torch.Tensor]:
    """Ids and (W, token_dim) embedding rows of the real words searched (default: whole words)."""
    ids = list(allowed_ids) if allowed_ids is not None else whole_word_ids(backbone)
    rows = backbone.model.token_embedding.weight[torch.tensor(ids, device=backbone.device)].detach().float().cpu()
    return ids, rows


@torch.no_grad()
def token_wordness(
    backbone: Backbone, tokens: torch.Tensor, allowed_ids: Sequence[int] | None = None, setting: str = ""
) -> pd.DataFrame:
    """How word-like each token is.

    Args:
        backbone: the CLIP whose token-embedding table holds the real words.
        tokens: (N, token_dim).
        allowed_ids: the words compared with (default: whole words).
        setting: a label put in the ``setting`` column (e.g. "with regulariser").

    Returns:
        One row per token: ``nearest`` (word by cosine), ``cosine`` to it, ``distance`` (L2 to the
        nearest word row), ``norm`` of the token, and ``setting``.
    """
    ids, rows = word_rows(backbone, allowed_ids)
    tokens = tokens.reshape(-1, rows.shape[1]).float().cpu()
    cos = F.normalize(tokens, dim=-1) @ F.normalize(rows, dim=-1).T
    best = cos.max(dim=1)
    dist = torch.cdist(tokens, rows).min(dim=1).values
    return pd.DataFrame(
        {
            "setting": setting,
            "nearest": [token_word(backbone, ids[j]) for j in best.indices.tolist()],
            "cosine": best.values.numpy(),
            "distance": dist.numpy(),
            "norm": tokens.norm(dim=1).numpy(),
        }
    )


def mean_word_norm(backbone: Backbone, allowed_ids: Sequence[int] | None = None) -> float:
    """Mean L2 norm of real word embeddings (the scale a word-like token should have)."""
    return float(word_rows(backbone, allowed_ids)[1].norm(dim=1).mean())


def _pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the top-2 principal directions of the rows of ``x`` (via SVD)."""
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:2]


def project_paths(
    backbone: Backbone, paths: Sequence[torch.Tensor], allowed_ids: Sequence[int] | None = None, k: int = 8
) -> tuple[np.ndarray, list[str], list[np.ndarray]]:
    """S*'s paths during OTI and the words nearest to where they end, projected on a shared plane.

    Directions are compared (every vector is L2-normalised first), since nearness to a word is
    measured by cosine. The plane is the PCA of the words alone: a fixed map of the vocabulary
    around the token, across which the path moves (fitting it on the path too would spend a
    component on the path's random start, far from every word).

    Args:
        backbone: the CLIP.
        paths: each a (T, token_dim) trajectory of one token (e.g. ``OTIResult.trajectory[:, i]``).
        allowed_ids: candidate words (default: whole words).
        k: nearest words kept per path end.

    Returns:
        ``(words_xy (W, 2), words, [path_xy (T, 2), ...])``.
    """
    ends = torch.stack([p[-1] for p in paths])
    words = list(dict.fromkeys(w for ws in nearest_words(backbone, ends, k, allowed_ids) for w, _ in ws))
    ids, rows = word_rows(backbone, allowed_ids)
    by_word = {token_word(backbone, i): r for i, r in zip(ids, rows)}
    word_x = F.normalize(torch.stack([by_word[w] for w in words]), dim=-1).numpy()
    path_x = [F.normalize(p.float().cpu(), dim=-1).numpy() for p in paths]
    mean, axes = _pca_2d(word_x)
    return (word_x - mean) @ axes.T, words, [(p - mean) @ axes.T for p in path_x]


@torch.no_grad()
def phi_tokens(phi: torch.nn.Module, image_features: torch.Tensor) -> torch.Tensor:
    """φ's tokens for raw image features (``Study.raw_features``: φ's input, as in the authors' code),
    in eval mode on φ's device, as (N, token_dim) float on CPU."""
    phi.eval()
    device = next(phi.parameters()).device
    return phi(image_features.float().to(device)).float().cpu()


def token_agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, float]:
    """Cosine between two tokens of the same image (e.g. φ's and OTI's), and, as a reference,
    the mean cosine between tokens of *different* images.

    Returns:
        ``(same (N,), mismatched_mean)``.
    """
    a, b = F.normalize(a.float().cpu(), dim=-1), F.normalize(b.float().cpu(), dim=-1)
    sims = a @ b.T
    same = sims.diagonal().numpy()
    n = len(same)
    mismatched = float((sims.sum() - sims.diagonal().sum()) / max(1, n * n - n))
    return same, mismatched


def ranking_overlap(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]], k: int = 10) -> float:
    """Mean share (in %) of the top-``k`` results two methods have in common, per query."""
    return 100.0 * float(np.mean([len(set(x[:k]) & set(y[:k])) / k for x, y in zip(a, b)]))


def seconds_per_image(invert: Callable[[], object], n_images: int, repeat: int = 1) -> float:
    """Wall time of ``invert()`` (which inverts ``n_images`` images) divided by the image count,
    best of ``repeat`` runs (the best run is the least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        invert()
        best = min(best, time.perf_counter() - start)
    return best / n_images


def _unit_rows(features: torch.Tensor) -> torch.Tensor:
    """``features`` as float on CPU with unit rows: normalised here only when they are not already,
    so the pipeline's (normalised) features are ranked bit for bit as the pipeline ranks them."""
    features = features.float().cpu()
    norms = features.norm(dim=-1)
    return features if torch.allclose(norms, torch.ones_like(norms), atol=1e-5) else F.normalize(features, dim=-1)


def search(
    query_features: torch.Tensor, search_features: torch.Tensor, names: Sequence[str], k: int = 5
) -> list[list[str]]:
    """Top-``k`` names per query by cosine similarity, ranked by the evaluated pipeline's ranker
    (:func:`~searle_core.retrieval.ranking.rank_gallery`: equal scores in gallery order).

    Args:
        query_features: (Q, D) query features (normalised here if they are not).
        search_features: (G, D) features of the searched images (normalised here if they are not).
        names: the G names; a name given twice (the same image, e.g. a reference that is also in the
            gallery) is searched once, at its first place.
        k: results per query (at most the number of distinct names).
    """
    first = sorted({name: i for i, name in reversed(list(enumerate(names)))}.values())  # first place of each
    unique = [names[i] for i in first]
    return rank_gallery(_unit_rows(query_features), _unit_rows(search_features[first]), unique, min(k, len(unique)))


def ground_truth_hits(rankings: Sequence[Sequence[str]], queries: Sequence) -> int:
    """How many ground truths the rankings contain in total (over all queries, whole rankings)."""
    return sum(len(set(r) & set(q.ground_truths)) for r, q in zip(rankings, queries))


#: The attributes whose own word a pseudo-word should bring (size words are few and generic).
OWN_WORD_ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "background")


def own_word_shares(
    backbone: Backbone,
    tokens: torch.Tensor,
    attributes: Sequence[dict[str, str]],
    allowed_ids: Sequence[int] | None = None,
    k: int = 5,
    checked: Sequence[str] = OWN_WORD_ATTRIBUTES,
) -> dict[str, float]:
    """Does S* mean its image? % of tokens whose ``k`` nearest words contain the image's own word.

    Args:
        backbone: the CLIP whose token-embedding table holds the words.
        tokens: (N, token_dim) one pseudo-word per image.
        attributes: per image, its attribute values (``ShapesWorld.attributes``), e.g.
            ``{"shape": "circle", "colour": "red", "background": "white", ...}``.
        allowed_ids: the words searched (the world CLIP's training words; default: whole words).
        k: nearest words looked at.
        checked: attributes reported.

    Returns:
        ``{attribute: % of images whose own value word is among the k nearest}`` for each of
        ``checked``, plus ``"images"``: N.
    """
    if len(attributes) != len(tokens):
        raise InputError(f"own_word_shares: {len(tokens)} tokens but {len(attributes)} attribute rows")
    nearest = [
        {w for w, _ in ws}
        for ws in nearest_words(backbone, tokens, k, list(allowed_ids) if allowed_ids is not None else None)
    ]
    shares: dict[str, float] = {
        a: 100.0 * float(np.mean([attrs[a] in words for attrs, words in zip(attributes, nearest)])) for a in checked
    }
    shares["images"] = len(tokens)
    return shares


# ---- failures one can see on the world, where every image's attributes are known -------------------
def false_concepts(study, names: Sequence[str], concepts_per_image, top: int = 5) -> list[list[str]] | None:
    """Per image, those of its ``top`` associated concepts that are false of it (a concept naming a
    shape, colour, ... the image does not have): the association is CLIP's zero-shot guess, not a label.
    ``None`` off the world (no attributes to check against) or without concepts."""
    if study.world is None or not concepts_per_image:
        return None
    out = []
    for name, associated in zip(names, concepts_per_image):
        true = set(concepts_of(study.world.attributes(name)))
        out.append([c for c in associated[:top] if c not in true])
    return out


def caption_overridden(study, queries: Sequence, rankings: Sequence[Sequence[str]]) -> list[bool] | None:
    """Per query, whether its top result keeps the reference's value of an attribute the caption asks to
    change: the pseudo-word outweighed the caption. ``None`` off the world."""
    if study.world is None:
        return None
    out = []
    for query, ranking in zip(queries, rankings):
        reference, top = study.world.attributes(query.reference), study.world.attributes(ranking[0])
        out.append(any(top[a] == reference[a] for a in query.aspect.split("+")))
    return out
