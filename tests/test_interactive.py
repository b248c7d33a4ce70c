"""The typed-query explorer: its computation against a plain one, and the widget without a kernel."""

import pytest
import torch
import torch.nn.functional as F

from searle_core.method.encoding import encode_with_pseudo_tokens
from searle_core.notebook.explain import query_explorer, typed_query


def test_typed_query_is_the_plain_computation(tiny_study):
    bb = tiny_study.backbone
    name = tiny_study.bench.reference_names()[0]
    token = torch.randn(bb.token_dim, generator=torch.Generator().manual_seed(0))
    example = typed_query(tiny_study, name, token, "  is blue ", k=4)
    text = encode_with_pseudo_tokens(
        bb.model, bb.tokenize(["a photo of $ that is blue"]), token[None], bb.dollar_token_id
    )
    gallery, names = tiny_study.search_set()
    scores = F.normalize(text.float(), dim=-1) @ F.normalize(gallery.float(), dim=-1).T
    expected = [names[j] for j in scores[0].topk(4).indices.tolist()]
    assert example.caption == "is blue" and example.hits == [False] * 4
    assert [im.tobytes() for im in example.results] == [im.tobytes() for im in tiny_study.images(expected)]
    with pytest.raises(ValueError, match="type a relative caption"):
        typed_query(tiny_study, name, token, "   ")


def test_typed_query_breaks_ties_as_the_evaluated_pipeline(tiny_study, monkeypatch):
    """A gallery of images with equal scores: the explorer shows them in the order the benchmark's
    rankings (``rank_gallery``) put them, gallery order."""
    from searle_core.datasets.base import CIRQuery
    from searle_core.retrieval.queries import SEARLE_PROMPT, pseudo_query_features
    from searle_core.retrieval.ranking import rank_gallery

    gallery, names = tiny_study.search_set()
    # six images with one unit feature, e_0: every query scores each exactly its first coordinate
    tied = F.one_hot(torch.zeros(6, dtype=torch.long), gallery.shape[1]).float()
    monkeypatch.setattr(tiny_study, "search_set", lambda: (tied, names[:6]))
    name = tiny_study.bench.reference_names()[0]
    token = torch.randn(tiny_study.backbone.token_dim, generator=torch.Generator().manual_seed(1))
    example = typed_query(tiny_study, name, token, "is blue", k=5)
    query = pseudo_query_features(
        tiny_study.backbone, [CIRQuery("typed", name, ("is blue",), None, ())], {name: token}, SEARLE_PROMPT
    )
    expected = rank_gallery(query, tied, names[:6], 5)[0]
    assert expected == names[:5]
    assert [im.tobytes() for im in example.results] == [im.tobytes() for im in tiny_study.images(expected)]


def test_explorer_widget_builds_headless(tiny_study):
    pytest.importorskip("ipywidgets")
    names = tiny_study.bench.reference_names()[:3]
    tokens = torch.randn(3, tiny_study.backbone.token_dim)
    box = query_explorer(tiny_study, names, tokens, k=3, labels=["a", "b", "c"])
    pick, text = box.children[0].children
    assert [o[0] for o in pick.options] == ["a", "b", "c"] and text.value == "is blue"
    pick.value, text.value = 2, ""  # redraws; an empty caption is a message, not an exception
    with pytest.raises(ValueError, match="3 names for 2 tokens"):
        query_explorer(tiny_study, names, tokens[:2])


def test_caption_note_names_the_words_the_world_clip_never_learned(tiny_study):
    from searle_core.notebook.explain import caption_note
    from searle_core.retrieval.queries import caption_variants
    from searle_core.world.attributes import COLOURS

    note = caption_note(tiny_study, "is Crimson and is a blue star, not teal")
    assert max(map(len, note.splitlines())) <= 100 < len(note)  # broken at spaces, never mid-word
    note = " ".join(note.split())
    assert "'crimson', 'not', 'teal'" in note and all(c in note for c in COLOURS)
    assert caption_note(tiny_study, "is on a white background") is None
    # the world's own queries never get the note: their captions are the grammar's
    assert not [c for q in tiny_study.bench.queries for c in caption_variants(q) if caption_note(tiny_study, c)]


def test_start_from_query_inverts_a_new_reference_once_and_takes_its_caption(tiny_study):
    from searle_core.infra.errors import InputError
    from searle_core.notebook.explain import start_from_query
    from searle_core.retrieval.queries import caption_variants

    queries = tiny_study.bench.queries
    first = queries[0].reference
    other = next(i for i, q in enumerate(queries) if q.reference != first)
    names, tokens, inverted = [first], [torch.zeros(3)], []
    invert = lambda name: inverted.append(name) or torch.ones(3)  # noqa: E731
    assert start_from_query(tiny_study, other, names, tokens, invert) == (1, caption_variants(queries[other])[0])
    assert names == [first, queries[other].reference] and inverted == [queries[other].reference]
    assert torch.equal(tokens[1], torch.ones(3))
    assert start_from_query(tiny_study, other, names, tokens, invert)[0] == 1 and len(inverted) == 1  # no second OTI
    with pytest.raises(InputError, match=rf"query: {len(queries)} is not a query of .* from 0 to {len(queries) - 1}"):
        start_from_query(tiny_study, len(queries), names, tokens, invert)
    with pytest.raises(InputError, match="is not among the inverted images"):
        start_from_query(tiny_study, other, [first], [torch.zeros(3)])


def test_oti_inverter_is_notebook_1s_oti_on_one_image(tiny_study):
    import dataclasses

    from searle_core.method.oti import OTIConfig, oti
    from searle_core.notebook.explain import oti_inverter

    config = dataclasses.replace(OTIConfig(), steps=3)
    name = tiny_study.bench.reference_names()[1]
    features = tiny_study.features([name])
    expected = oti(
        tiny_study.backbone,
        features,
        concepts=tiny_study.concepts(features, top_k=15),
        phrase_bank=tiny_study.phrase_bank,
        config=config,
        seed=7,
    ).tokens[0]
    assert torch.equal(oti_inverter(tiny_study, config, 7)(name), expected)


def test_explorer_starts_from_any_query(tiny_study):
    pytest.importorskip("ipywidgets")
    from searle_core.retrieval.queries import caption_variants

    queries = tiny_study.bench.queries
    names = [queries[0].reference]
    dim = tiny_study.backbone.token_dim
    box = query_explorer(tiny_study, names, torch.zeros(1, dim), invert=lambda name: torch.randn(dim))
    (pick, text), (number, load) = box.children[0].children, box.children[1].children
    assert (number.min, number.max) == (0, len(queries) - 1)
    other = next(i for i, q in enumerate(queries) if q.reference != names[0])
    number.value = other
    load.click()
    assert len(pick.options) == 2 and pick.value == 1 and text.value == caption_variants(queries[other])[0]
    assert pick.options[1][0].startswith(f"query {other}: ")


def test_pick_queries_takes_explicit_indices_and_names_a_bad_one(tiny_study):
    from searle_core.infra.errors import InputError

    assert tiny_study.pick_queries(2, indices=[3, 0]) == [3, 0]
    with pytest.raises(InputError, match=r"query_indices: -1 is not a query of shapes val: expected an index from 0"):
        tiny_study.pick_queries(2, indices=[-1])
    with pytest.raises(InputError, match=r"query_indices: '2' is not a query"):
        tiny_study.pick_queries(2, indices=["2"])


@pytest.mark.usefixtures("one_thread")
def test_the_explorer_draws_once_where_no_one_clicks(tiny_study, monkeypatch, capsys):
    """searle paper's runs (papermill) have no frontend, and widgets' Output traffic can stall nbclient's wait for
    the cell's reply: there the explorer draws the first query once, as without ipywidgets."""
    import matplotlib.pyplot as plt

    from searle_core.notebook.record import HEADLESS_ENV

    names = tiny_study.bench.reference_names()[:2]
    tokens = torch.randn(2, tiny_study.backbone.token_dim)
    plt.close("all")
    monkeypatch.setenv(HEADLESS_ENV, "1")
    assert query_explorer(tiny_study, names, tokens, k=3) is None
    assert len(plt.get_fignums()) == 1 and "open the notebook in JupyterLab" in capsys.readouterr().out
    monkeypatch.delenv(HEADLESS_ENV)
    pytest.importorskip("ipywidgets")
    assert type(query_explorer(tiny_study, names, tokens, k=3)).__name__ == "VBox"  # in JupyterLab: the widgets
    plt.close("all")
