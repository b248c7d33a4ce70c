"""Try a composed query yourself: pick a reference image, type a relative caption, see the results.

:func:`typed_query` is the whole computation (tested); :func:`query_explorer` wraps it in
ipywidgets for the notebooks. Without ipywidgets, or when no one is there to click (papermill,
nbval), the explorer draws the first image's query once and says how to get the widget.
"""

from __future__ import annotations

import torch

from searle_core.datasets.base import CIRQuery
from searle_core.infra.errors import InputError
from searle_core.notebook.explain import search
from searle_core.plotting import RetrievalExample, retrieval_grid
from searle_core.retrieval.queries import SEARLE_PROMPT, pseudo_query_features


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


def query_explorer(
    study, names: list[str], tokens: torch.Tensor, k: int = 5, caption: str = "is blue", labels: list[str] | None = None
):
    """A dropdown of reference images, a caption box and the results, redrawn on each change.

    Args:
        study: the backbone and the gallery.
        names: the reference images offered.
        tokens: (len(names), token_dim) their pseudo-word tokens.
        k: results shown.
        caption: the caption the box starts with.
        labels: how each image is listed (default: its name).

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

    options = list(zip(labels or names, range(len(names))))
    pick = widgets.Dropdown(options=options, value=0, description="reference")
    text = widgets.Text(value=caption, description="caption", continuous_update=False)
    out = widgets.Output()

    def redraw(*_) -> None:
        with out:
            out.clear_output(wait=True)
            try:
                example = typed_query(study, names[pick.value], tokens[pick.value], text.value, k)
            except ValueError as err:
                print(err)
                return
            fig = retrieval_grid([example])
            display(fig)
            plt.close(fig)  # shown once, in the output area, not again at the cell's end

    pick.observe(redraw, names="value")
    text.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([pick, text]), out])
