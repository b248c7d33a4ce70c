"""Try a composed query yourself: pick a reference image, type a relative caption, see the results.

:func:`typed_query` is the whole computation (tested); :func:`query_explorer` wraps it in ipywidgets.
Without ipywidgets it draws the first image's query once and says how to get the widget.
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
    """The top-``k`` of the study's search set for "a photo of $ that {caption}" with ``$`` = ``token``
    (reference ``name``'s pseudo-word), ranked as the evaluated pipeline ranks (``explain.search``)."""
    caption = caption.strip()
    if not caption:
        raise InputError("type a relative caption, e.g. 'is blue'")
    features = pseudo_query_features(
        study.backbone, [CIRQuery("typed", name, (caption,), None, ())], {name: token}, SEARLE_PROMPT
    )
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
    """A dropdown of reference images (listed by ``labels``), a caption box and the results, redrawn on each
    change; below, a query number that starts from any query of the benchmark (a reference not among
    ``names`` is inverted with ``invert``, e.g. :func:`oti_inverter`). Returns the widget."""
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
