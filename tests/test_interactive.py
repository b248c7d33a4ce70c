"""The typed-query explorer: its computation against a plain one, and the widget without a kernel."""

import pytest
import torch
import torch.nn.functional as F

from searle_core.clip.text_encoding import encode_with_pseudo_tokens
from searle_core.notebook.interactive import query_explorer, typed_query


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
