"""Looking inside textual inversion: prompts as tokens, what a pseudo-word retrieves, how word-like it is, where
it travels during OTI, and a typed-query explorer (what the notebooks plot)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRQuery
from searle_core.infra.errors import InputError
from searle_core.inversion.nearest import nearest_words, token_word, whole_word_ids
from searle_core.method.encoding import encode_with_pseudo_tokens
from searle_core.method.oti import oti
from searle_core.notebook.record import HEADLESS_ENV
from searle_core.plotting import RetrievalExample, retrieval_grid, wrap
from searle_core.retrieval.queries import SEARLE_PROMPT, caption_variants, pseudo_query_features
from searle_core.retrieval.ranking import rank_gallery
from searle_core.world import concepts_of
from searle_core.world.attributes import VALUES

PHOTO_PROMPT = "a photo of $"


def readable_tokens(backbone: Backbone, prompt: str) -> list[tuple[int, str]]:
    """The BPE tokens of a prompt from start- to end-of-text as ``(id, text)``: ``$`` is one ordinary token
    (id 259 in CLIP's BPE), whose embedding row textual inversion replaces."""
    ids = backbone.tokenizer([prompt])[0].tolist()
    return [(i, token_word(backbone, i)) for i in ids[: ids.index(max(ids)) + 1]]


def dollar_embedding(backbone: Backbone) -> torch.Tensor:
    """The token-embedding row of ``$`` itself: the pseudo-word *before* inversion."""
    return backbone.model.token_embedding.weight[backbone.dollar_token_id].detach().float().cpu()


@torch.no_grad()
def prompt_features(backbone: Backbone, tokens: torch.Tensor) -> torch.Tensor:
    """Normalised features of "a photo of $" with ``$`` = each token: (N, embed_dim) on CPU."""
    out = []
    for chunk in tokens.reshape(-1, backbone.token_dim).split(256):
        ids = backbone.tokenize([PHOTO_PROMPT] * len(chunk))
        text = encode_with_pseudo_tokens(backbone.model, ids, chunk.to(backbone.device), backbone.dollar_token_id)
        out.append(F.normalize(text.float(), dim=-1).cpu())
    return torch.cat(out)


def prompt_image_similarity(backbone: Backbone, tokens: torch.Tensor, image_features: torch.Tensor) -> np.ndarray:
    """Cosine between "a photo of $" with token i and image i: (N,). What OTI's L_cos maximises."""
    text = prompt_features(backbone, tokens)
    return (text * F.normalize(image_features.float().cpu(), dim=-1)).sum(-1).numpy()


def trajectory_steps(steps: int, every: int) -> list[int]:
    """The OTI steps at which ``oti(..., trajectory_every=every)`` records the EMA tokens."""
    return [s for s in range(steps) if s % every == 0 or s == steps - 1]


def trajectory_similarity(backbone: Backbone, trajectory: torch.Tensor, image_features: torch.Tensor) -> np.ndarray:
    """:func:`prompt_image_similarity` at every recorded OTI step: (T, N) from a (T, N, D) trajectory."""
    t, n, _ = trajectory.shape
    return prompt_image_similarity(backbone, trajectory.reshape(t * n, -1), image_features.repeat(t, 1)).reshape(t, n)


def self_retrieval_ranks(
    backbone: Backbone, tokens: torch.Tensor, image_features: torch.Tensor, gallery_features: torch.Tensor
) -> np.ndarray:
    """Rank (1 = first) of each inverted image when "a photo of $" with its token searches the gallery plus
    the inverted images: does it find the very image $ came from?"""
    queries = prompt_features(backbone, tokens)
    images = F.normalize(image_features.float().cpu(), dim=-1)
    scores = queries @ torch.cat([images, F.normalize(gallery_features.float().cpu(), dim=-1)]).T
    own = scores[torch.arange(len(images)), torch.arange(len(images))]
    return (scores > own[:, None]).sum(1).numpy() + 1


def _word_rows(backbone: Backbone, allowed_ids: Sequence[int] | None = None) -> tuple[list[int], torch.Tensor]:
    """Ids and (W, token_dim) embedding rows of the real words searched (default: whole words)."""
    ids = list(allowed_ids) if allowed_ids is not None else whole_word_ids(backbone)
    return ids, backbone.model.token_embedding.weight[torch.tensor(ids, device=backbone.device)].detach().float().cpu()


@torch.no_grad()
def token_wordness(
    backbone: Backbone, tokens: torch.Tensor, allowed_ids: Sequence[int] | None = None, setting: str = ""
) -> pd.DataFrame:
    """How word-like each token is: its ``nearest`` word by cosine, the ``cosine`` to it, the L2
    ``distance`` to the nearest word row, its ``norm``, and ``setting`` as a label column."""
    ids, rows = _word_rows(backbone, allowed_ids)
    tokens = tokens.reshape(-1, rows.shape[1]).float().cpu()
    best = (F.normalize(tokens, dim=-1) @ F.normalize(rows, dim=-1).T).max(dim=1)
    nearest, cosine = [token_word(backbone, ids[j]) for j in best.indices.tolist()], best.values.numpy()
    distance, norm = torch.cdist(tokens, rows).min(dim=1).values.numpy(), tokens.norm(dim=1).numpy()
    return pd.DataFrame({"setting": setting, "nearest": nearest, "cosine": cosine, "distance": distance, "norm": norm})


def project_paths(
    backbone: Backbone, paths: Sequence[torch.Tensor], allowed_ids: Sequence[int] | None = None, k: int = 8
) -> tuple[np.ndarray, list[str], list[np.ndarray]]:
    """S*'s (T, token_dim) paths during OTI and the ``k`` words nearest to each end, as unit directions on the
    PCA plane of the words alone (fitted on the paths too, a component would go to their random start):
    ``(words_xy (W, 2), words, [path_xy (T, 2), ...])``."""
    ends = torch.stack([p[-1] for p in paths])
    words = list(dict.fromkeys(w for ws in nearest_words(backbone, ends, k, allowed_ids) for w, _ in ws))
    ids, rows = _word_rows(backbone, allowed_ids)
    by_word = {token_word(backbone, i): r for i, r in zip(ids, rows)}
    word_x = F.normalize(torch.stack([by_word[w] for w in words]), dim=-1).numpy()
    path_x = [F.normalize(p.float().cpu(), dim=-1).numpy() for p in paths]
    mean = word_x.mean(0)
    axes = np.linalg.svd(word_x - mean, full_matrices=False)[2][:2]
    return (word_x - mean) @ axes.T, words, [(p - mean) @ axes.T for p in path_x]


@torch.no_grad()
def phi_tokens(phi: torch.nn.Module, image_features: torch.Tensor) -> torch.Tensor:
    """φ's tokens, (N, token_dim) float on CPU, for raw image features (``Study.raw_features``: φ's input)."""
    phi.eval()
    return phi(image_features.float().to(next(phi.parameters()).device)).float().cpu()


def _unit_rows(features: torch.Tensor) -> torch.Tensor:
    """Float CPU rows, normalised only if not already: the pipeline's features then rank bit for bit as there."""
    features = features.float().cpu()
    norms = features.norm(dim=-1)
    return features if torch.allclose(norms, torch.ones_like(norms), atol=1e-5) else F.normalize(features, dim=-1)


def search(
    query_features: torch.Tensor, search_features: torch.Tensor, names: Sequence[str], k: int = 5
) -> list[list[str]]:
    """Top-``k`` names per query by cosine, ranked by the pipeline's ranker (equal scores in gallery
    order); a name given twice (a reference also in the gallery) is searched once, at its first place."""
    first = sorted({name: i for i, name in reversed(list(enumerate(names)))}.values())
    unique = [names[i] for i in first]
    return rank_gallery(_unit_rows(query_features), _unit_rows(search_features[first]), unique, min(k, len(unique)))


#: The attributes whose own word a pseudo-word should bring (size words are few and generic).
OWN_WORD_ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "background")


def own_word_shares(
    backbone: Backbone, tokens: torch.Tensor, attributes: Sequence[dict], allowed_ids: list[int] | None = None, k=5
) -> dict[str, float]:
    """Does S* mean its image? Per attribute of :data:`OWN_WORD_ATTRIBUTES`, the % of tokens whose ``k``
    nearest words hold the image's own value (``attributes``: ``ShapesWorld.attributes``), and ``"images"``."""
    if len(attributes) != len(tokens):
        raise InputError(f"own_word_shares: {len(tokens)} tokens but {len(attributes)} attribute rows")
    nearest = [{w for w, _ in ws} for ws in nearest_words(backbone, tokens, k, allowed_ids)]
    hits = {a: [attrs[a] in words for attrs, words in zip(attributes, nearest)] for a in OWN_WORD_ATTRIBUTES}
    return {**{a: 100.0 * float(np.mean(h)) for a, h in hits.items()}, "images": len(tokens)}


def false_concepts(study, names: Sequence[str], concepts_per_image, top: int = 5) -> list[list[str]] | None:
    """Per image, those of its ``top`` associated concepts that are false of it (the association is CLIP's
    zero-shot guess, not a label). ``None`` off the world or without concepts."""
    if study.world is None or not concepts_per_image:
        return None
    truths = (set(concepts_of(study.world.attributes(name))) for name in names)
    return [[c for c in associated[:top] if c not in true] for true, associated in zip(truths, concepts_per_image)]


def caption_overridden(study, queries: Sequence, rankings: Sequence[Sequence[str]]) -> list[bool] | None:
    """Per query, whether its top result keeps the reference's value of an attribute the caption asks to
    change: the pseudo-word outweighed the caption. ``None`` off the world."""
    if study.world is None:
        return None
    attrs = study.world.attributes
    return [
        any(attrs(r[0])[a] == attrs(q.reference)[a] for a in q.aspect.split("+")) for q, r in zip(queries, rankings)
    ]


def typed_query(
    study, name: str, token: torch.Tensor, caption: str, k: int = 5, label: str = "SEARLE-OTI"
) -> RetrievalExample:
    """The study's top-``k`` by :func:`search` for "a photo of $ that {caption}" with ``$`` = ``name``'s ``token``."""
    caption = caption.strip()
    if not caption:
        raise InputError("type a relative caption, e.g. 'is blue'")
    query = CIRQuery("typed", name, (caption,), None, ())
    features = pseudo_query_features(study.backbone, [query], {name: token}, SEARLE_PROMPT)
    gallery, names = study.search_set()
    top = search(features, gallery, names, k=k)[0]
    return RetrievalExample(study.images([name])[0], caption, study.images(top), [False] * len(top), label)


def caption_note(study, caption: str) -> str | None:
    """A sentence on the words of ``caption`` the world CLIP never learned (untrained token rows: noise),
    with the words it does know, in lines of 100 characters broken at spaces (an output area breaks long
    lines anywhere, mid-word); ``None`` when it knows them all."""
    if not (unknown := study.unknown_words(caption)):
        return None
    said = ", ".join(repr(w) for w in unknown)
    known = "; ".join(f"{attribute}: {', '.join(values)}" for attribute, values in VALUES.items())
    note = f"the world CLIP never learned {said}: it reads such words as noise. It knows only its grammar's words,"
    return wrap(f"{note} among them {known}.", 100)


def start_from_query(study, index: int, names: list[str], tokens: list[torch.Tensor], invert=None) -> tuple[int, str]:
    """Put query ``index``'s reference among the explorer's ``names`` and ``tokens`` (appended, inverted
    with ``invert`` if it is not there yet) and return its position and the query's relative caption."""
    query = study.query(study.query_index(index))
    if query.reference not in names:
        if invert is None:
            raise InputError(f"query {index}'s reference {query.reference} is not among the inverted images")
        token = invert(query.reference)  # first: a failed inversion leaves the explorer's lists as they were
        names.append(query.reference)
        tokens.append(token)
    return names.index(query.reference), caption_variants(query)[0]


def oti_inverter(study, config, seed: int):
    """name -> the OTI token of that one image, as notebook 1 inverts its images."""

    def invert(name: str) -> torch.Tensor:
        features = study.features([name])
        concepts, bank = study.concepts(features, top_k=15), study.phrase_bank
        return oti(study.backbone, features, concepts=concepts, phrase_bank=bank, config=config, seed=seed).tokens[0]

    return invert


def query_explorer(
    study,
    names: list[str],
    tokens: torch.Tensor,
    k: int = 5,
    caption: str = "is blue",
    labels: list[str] | None = None,
    invert=None,
):
    """A dropdown of references (named by ``labels``), a caption box and the results, redrawn on each change,
    and a query number to start from any benchmark query (a new reference is inverted with ``invert``).
    Without ipywidgets, draws the first image's query once."""
    import matplotlib.pyplot as plt

    if len(names) != len(tokens):
        raise InputError(f"{len(names)} names for {len(tokens)} tokens")
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:
        widgets = None
    if widgets is None or os.environ.get(HEADLESS_ENV) == "1":  # searle paper: drawn once, no widget to wait on
        retrieval_grid([typed_query(study, names[0], tokens[0], caption, k)])  # shown by the inline backend
        missing = "pip install ipywidgets (or `pip install -e .[notebooks]`)"
        print(f"{'open the notebook in JupyterLab' if widgets else missing} to pick the image and type the caption")
        return None

    names, tokens, labels = list(names), list(tokens), list(labels or names)
    pick = widgets.Dropdown(options=list(zip(labels, range(len(names)))), value=0, description="reference")
    text = widgets.Text(value=caption, description="caption", continuous_update=False)
    number = widgets.BoundedIntText(value=0, min=0, max=len(study.bench.queries) - 1, description="query")
    load = widgets.Button(description="start from this query", layout=widgets.Layout(width="auto"))
    out = widgets.Output()

    def redraw(*_) -> None:
        with out:
            out.clear_output(wait=True)
            try:
                example = typed_query(study, names[pick.value], tokens[pick.value], text.value, k)
            except ValueError as err:
                print(err)
                return
            if note := caption_note(study, text.value):
                print(note)
            fig = retrieval_grid([example])
            display(fig)
            plt.close(fig)  # shown once, in the output area, not again at the cell's end

    def watch(on: bool) -> None:
        for box in (pick, text):
            (box.observe if on else box.unobserve)(redraw, names="value")

    def from_query(*_) -> None:
        try:
            before = len(names)
            position, relative = start_from_query(study, number.value, names, tokens, invert)
        except ValueError as err:
            with out:
                print(err)
            return
        watch(False)  # one redraw for the new reference and caption, not one per change
        if len(names) > before:
            labels.append(f"query {number.value}: {study.caption(names[-1])}")
            pick.options = list(zip(labels, range(len(names))))
        pick.value, text.value = position, relative
        watch(True)
        redraw()

    watch(True)
    load.on_click(from_query)
    redraw()
    return widgets.VBox([widgets.HBox([pick, text]), widgets.HBox([number, load]), out])
