"""Try a composed query yourself: pick a reference image, type a relative caption, see the results.

:func:`typed_query` is the whole computation (tested); :func:`query_explorer` wraps it in
ipywidgets for the notebooks. Without ipywidgets, or when no one is there to click (papermill,
nbval), the explorer draws the first image's query once and says how to get the widget.
"""

from __future__ import annotations

import torch

from searle_core.datasets.base import CIRQuery
from searle_core.infra.errors import InputError
from searle_core.method.oti import oti
from searle_core.notebook.explain import search
from searle_core.plotting import RetrievalExample, retrieval_grid
from searle_core.retrieval.queries import SEARLE_PROMPT, caption_variants, pseudo_query_features
from searle_core.world.attributes import VALUES


def typed_query(
    study, name: str, token: torch.Tensor, caption: str, k: int = 5, label: str = "SEARLE-OTI"
) -> RetrievalExample:
    """The top-``k`` gallery images for "a photo of $ that {caption}" with ``$`` = ``token``, ranked
    by the evaluated pipeline's ranker (``explain.search``: equal scores in gallery order).

    Args:
        study: the backbone and the gallery (``searle_core.notebook.study.Study``).
        name: the reference image (shown on the left; its token is ``token``).
        token: (token_dim,) the reference's pseudo-word token (OTI or φ).
        caption: the relative caption, e.g. "is blue".
        k: results shown.
        label: the row's label.

    Raises:
        ValueError: on an empty caption.
    """
    caption = caption.strip()
    if not caption:
        raise InputError("type a relative caption, e.g. 'is blue'")
    query = CIRQuery("typed", name, (caption,), None, ())
    features = pseudo_query_features(study.backbone, [query], {name: token}, SEARLE_PROMPT)
    gallery, names = study.search_set()
    top = search(features, gallery, names, k=k)[0]
    return RetrievalExample(study.images([name])[0], caption, study.images(top), [False] * len(top), label)


def caption_note(study, caption: str) -> str | None:
    """A sentence on the words of ``caption`` the backbone never learned (the world CLIP knows only its
    grammar's words: any other is an untrained token row, noise), with the words it does know."""
    unknown = study.unknown_words(caption)
    if not unknown:
        return None
    said = ", ".join(repr(w) for w in unknown)
    known = "; ".join(f"{attribute}: {', '.join(values)}" for attribute, values in VALUES.items())
    return (
        f"the world CLIP never learned {said}: it reads such words as noise. It knows only its grammar's "
        f"words, among them {known}."
    )


def start_from_query(study, index: int, names: list[str], tokens: list[torch.Tensor], invert=None) -> tuple[int, str]:
    """Put query ``index``'s reference among the explorer's images (inverting it with ``invert`` if it
    is not there yet) and return its position and the query's relative caption.

    Args:
        study: the benchmark.
        index: an index into the benchmark's queries.
        names, tokens: the explorer's images and their tokens; a new reference is appended to both.
        invert: name -> its token (e.g. :func:`oti_inverter`); ``None`` allows only images already there.

    Raises:
        InputError: an index outside the benchmark, or a reference not inverted and nothing to invert it.
    """
    query = study.query(study.query_index(index))
    if query.reference not in names:
        if invert is None:
            raise InputError(f"query {index}'s reference {query.reference} is not among the inverted images")
        token = invert(query.reference)  # first: a failed inversion leaves the explorer's lists as they were
        names.append(query.reference)
        tokens.append(token)
    return names.index(query.reference), caption_variants(query)[0]


def oti_inverter(study, config, seed: int):
    """name -> the OTI token of that one image, as notebook 1 inverts its images (the study's
    vocabulary, ``config``, ``seed``)."""

    def invert(name: str) -> torch.Tensor:
        features = study.features([name])
        concepts = study.concepts(features, top_k=15)
        return oti(
            study.backbone, features, concepts=concepts, phrase_bank=study.phrase_bank, config=config, seed=seed
        ).tokens[0]

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
    """A dropdown of reference images, a caption box and the results, redrawn on each change; below,
    a query number that starts from any query of the benchmark (its reference and its caption).

    Args:
        study: the backbone and the gallery.
        names: the reference images offered.
        tokens: (len(names), token_dim) their pseudo-word tokens.
        k: results shown.
        caption: the caption the box starts with.
        labels: how each image is listed (default: its name).
        invert: name -> token, for a query whose reference is not among ``names`` (:func:`oti_inverter`).

    Returns:
        The widget (display it, or leave it as a cell's last expression), or the drawn figure when
        ipywidgets is not installed.
    """
    import matplotlib.pyplot as plt

    if len(names) != len(tokens):
        raise InputError(f"{len(names)} names for {len(tokens)} tokens")
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:
        fig = retrieval_grid([typed_query(study, names[0], tokens[0], caption, k)])
        print("pip install ipywidgets (or `pip install -e .[notebooks]`) to pick the image and type the caption")
        return fig

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
            note = caption_note(study, text.value)
            if note:
                print(note)
            fig = retrieval_grid([example])
            display(fig)
            plt.close(fig)  # shown once, in the output area, not again at the cell's end

    def from_query(*_) -> None:
        try:
            before = len(names)
            position, relative = start_from_query(study, number.value, names, tokens, invert)
        except ValueError as err:
            with out:
                print(err)
            return
        for box in (pick, text):  # one redraw for the new reference and caption, not one per change
            box.unobserve(redraw, names="value")
        if len(names) > before:
            labels.append(f"query {number.value}: {study.caption(names[-1])}")
            pick.options = list(zip(labels, range(len(names))))
        pick.value, text.value = position, relative
        for box in (pick, text):
            box.observe(redraw, names="value")
        redraw()

    for box in (pick, text):
        box.observe(redraw, names="value")
    load.on_click(from_query)
    redraw()
    return widgets.VBox([widgets.HBox([pick, text]), widgets.HBox([number, load]), out])
