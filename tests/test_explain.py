"""The notebooks' analysis functions on a random-weight CLIP (exact properties, no training)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from searle_core.inversion.nearest import word_token_ids
from searle_core.notebook import explain

WORDS = ["red", "blue", "circle", "square", "star", "large", "small"]


@pytest.fixture(scope="module")
def clip(random_backbone):
    return random_backbone


def test_readable_tokens_and_dollar(clip):
    tokens = explain.readable_tokens(clip, "a photo of $ that is blue")
    assert [t for _, t in tokens][1:-1] == ["a", "photo", "of", "$", "that", "is", "blue"]
    assert (clip.dollar_token_id, "$") in tokens
    row = explain.dollar_embedding(clip)
    assert torch.equal(row, clip.model.token_embedding.weight[clip.dollar_token_id].float())


def test_the_dollar_row_gives_the_plain_prompt(clip):
    """With v* = the embedding of '$' itself, the prompt's features are those of the plain text."""
    from searle_core.datasets.features import text_features

    tokens = explain.dollar_embedding(clip).unsqueeze(0)
    ours = explain.prompt_features(clip, tokens)  # "a photo of $"
    plain = text_features(clip, ["a photo of $"])
    assert torch.allclose(ours, plain, atol=1e-5)


def test_similarity_and_trajectory_shapes(clip):
    torch.manual_seed(0)
    tokens = torch.randn(3, clip.token_dim) * 0.02
    images = F.normalize(torch.randn(3, clip.embed_dim), dim=-1)
    sims = explain.prompt_image_similarity(clip, tokens, images)
    assert sims.shape == (3,) and np.all(np.abs(sims) <= 1 + 1e-6)
    trajectory = torch.stack([tokens, tokens * 2])
    over_time = explain.trajectory_similarity(clip, trajectory, images)
    assert over_time.shape == (2, 3)
    assert np.allclose(over_time[0], sims, atol=1e-5)
    assert explain.trajectory_steps(10, 4) == [0, 4, 8, 9]


def test_self_retrieval_rank_is_one_when_the_image_is_the_prompt(clip):
    torch.manual_seed(1)
    tokens = torch.randn(2, clip.token_dim) * 0.02
    own = explain.prompt_features(clip, tokens)  # make each "image" exactly its prompt's features
    gallery = F.normalize(torch.randn(20, clip.embed_dim), dim=-1)
    assert explain.self_retrieval_ranks(clip, tokens, own, gallery).tolist() == [1, 1]
    # A gallery holding the exact prompt features outranks a blurred copy of the image.
    assert (explain.self_retrieval_ranks(clip, tokens, own * 0.5 + gallery[:2] * 0.5, own) >= 2).all()


def test_wordness_of_real_words(clip):
    ids = word_token_ids(clip, WORDS)
    rows = clip.model.token_embedding.weight[ids].detach().float()
    table = explain.token_wordness(clip, rows, ids, setting="words")
    assert np.allclose(table.cosine, 1.0, atol=1e-5) and np.allclose(table.distance, 0.0, atol=1e-3)
    assert sorted(table.nearest) == sorted(WORDS)
    noise = explain.token_wordness(clip, torch.randn(4, clip.token_dim), ids)
    assert (noise.cosine < 0.9).all()


def test_project_paths(clip):
    ids = word_token_ids(clip, WORDS)
    torch.manual_seed(2)
    paths = [torch.randn(6, clip.token_dim), torch.randn(6, clip.token_dim)]
    words_xy, labels, projected = explain.project_paths(clip, paths, ids, k=3)
    assert words_xy.shape == (len(labels), 2) and 3 <= len(labels) <= 6
    assert set(labels) <= set(WORDS)
    assert [p.shape for p in projected] == [(6, 2), (6, 2)]


# CLIP's byte-level BPE: "ãĢĳ" is the UTF-8 bytes of "】" shown as Latin-1 look-alikes (isalpha() is True
# for the look-alikes), "ðŁĺĤ" is an emoji; "cafÃ©" is the word "café".
BYTE_LEVEL = ["ãĢĳ</w>", "ãĢĲ</w>", "ðŁĺĤ</w>", "Ã</w>", "âĿĿ</w>"]


def test_whole_words_of_clips_real_vocabulary_are_readable_words(clip):
    from searle_core.inversion.nearest import token_word, whole_word_ids

    encoder = clip.tokenizer.encoder
    assert len(encoder) == 49408  # open_clip's BPE vocabulary, the one OpenAI's CLIP models use
    ids = set(whole_word_ids(clip))
    assert len(ids) == 33046
    assert all(token_word(clip, i).isalpha() for i in ids)
    assert not {encoder[w] for w in BYTE_LEVEL} & ids
    assert {encoder["cat</w>"], encoder["cafÃ©</w>"]} <= ids
    assert token_word(clip, encoder["cafÃ©</w>"]) == "café" and token_word(clip, encoder["ãĢĳ</w>"]) == "】"


def test_nearest_words_and_token_paths_skip_byte_level_tokens(clip):
    """A token sitting on a byte-level entry's own row finds real words, not that entry."""
    rows = clip.model.token_embedding.weight[[clip.tokenizer.encoder[w] for w in BYTE_LEVEL]].detach().float()
    for words in explain.nearest_words(clip, rows, k=10):
        assert len(words) == 10 and all(w.isalpha() for w, _ in words), words
        assert words[0][1] < 0.99  # not the entry itself
    _, labels, _ = explain.project_paths(clip, [torch.stack([torch.zeros_like(r), r]) for r in rows], k=5)
    assert labels and all(w.isalpha() for w in labels)
    assert not set(labels) & {w.replace("</w>", "") for w in BYTE_LEVEL}


def test_search_ranks_by_cosine():
    names = ["x", "y", "z"]
    assert explain.search(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), names, 2) == [
        ["y", "z"]
    ]


def test_search_breaks_ties_as_the_evaluated_pipeline():
    """Equal scores come in gallery order, as ``rank_gallery`` ranks them (``topk`` did not: notebook 1's
    rankings could differ from the evaluated ones)."""
    from searle_core.retrieval.ranking import rank_gallery

    names = [f"g{i}" for i in range(8)]
    gallery = torch.tensor([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 3)  # five tied best, three tied worst
    query = torch.tensor([[2.0, 0.0], [0.0, 0.5]])  # not unit length: normalised first
    ranked = explain.search(query, gallery, names, k=6)
    assert ranked == [names[:6], names[5:] + names[:3]]
    assert ranked == rank_gallery(F.normalize(query, dim=-1), gallery, names, 6)
    features = F.normalize(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    unit = explain.search(features, features, names[:4], k=4)  # unit features are ranked as given, bit for bit
    assert unit == rank_gallery(features, features, names[:4], 4) and [r[0] for r in unit] == names[:4]
    assert explain.search(query, gallery, names, k=20)[0] == names  # k capped at the gallery


def test_phi_tokens():
    phi = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout(0.5))
    x = torch.randn(5, 4)
    out = explain.phi_tokens(phi, x)
    assert torch.equal(out, explain.phi_tokens(phi, x))  # eval mode: no dropout


def test_own_word_shares_known_answer(clip):
    """Tokens built from word rows: the share is known exactly."""
    from searle_core.world import training_vocabulary

    allowed = word_token_ids(clip, training_vocabulary())
    table = clip.model.token_embedding.weight.detach().float()

    def row(word):
        return F.normalize(table[word_token_ids(clip, [word])[0]], dim=0)

    images = [
        {"shape": "circle", "colour": "red", "background": "white", "size": "small"},
        {"shape": "star", "colour": "blue", "background": "black", "size": "large"},
        {"shape": "arrow", "colour": "green", "background": "gray", "size": "large"},
        {"shape": "cross", "colour": "purple", "background": "white", "size": "small"},
    ]
    # Images 1-2 carry all three own words; image 3 has another shape's word and no background;
    # image 4 is the pure word "square" (in this seeded random table its other near words are
    # not its own either).
    tokens = torch.stack(
        [
            row("circle") + row("red") + row("white"),
            row("star") + row("blue") + row("black"),
            row("square") + row("green"),
            row("square"),
        ]
    )
    shares = explain.own_word_shares(clip, tokens, images, allowed, k=3)
    assert shares == {"shape": 50.0, "colour": 75.0, "background": 50.0, "images": 4}
    # k=1: only the single nearest word counts; the pure "square" token is that word and nothing else.
    assert explain.own_word_shares(clip, tokens[3:], images[3:], allowed, k=1)["shape"] == 0.0
    with pytest.raises(ValueError, match="3 tokens but 4"):
        explain.own_word_shares(clip, tokens[:3], images, allowed)


def test_search_takes_a_name_given_twice_once():
    """Notebook 1 searches its references together with the gallery; on CIRCO a reference is also a
    gallery image, so its name comes twice: it is one image, ranked once at its first place."""
    import torch

    from searle_core.notebook.explain import search

    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert search(torch.tensor([[1.0, 0.1]]), feats, ["ref", "other", "ref"], k=3) == [["ref", "other"]]


def test_false_concepts_are_those_the_images_attributes_contradict(tiny_study):
    from searle_core.notebook.explain import false_concepts
    from searle_core.world.attributes import SHAPES

    names = tiny_study.bench.reference_names()[:2]
    attrs = [tiny_study.world.attributes(n) for n in names]
    other = [next(s for s in SHAPES if s != a["shape"]) for a in attrs]
    associated = [[a["shape"], f"{a['colour']} {o}", a["colour"]] for a, o in zip(attrs, other)]
    expected = [[f"{a['colour']} {o}"] for a, o in zip(attrs, other)]
    assert false_concepts(tiny_study, names, associated) == expected
    assert false_concepts(tiny_study, names, associated, top=1) == [[], []]  # the first is true of each
    assert false_concepts(tiny_study, names, None) is None


def test_caption_overridden_when_the_top_result_keeps_a_changed_attribute(tiny_study):
    from searle_core.notebook.explain import caption_overridden

    queries = tiny_study.bench.queries[:4]
    # the reference itself on top keeps every attribute: overridden; a ground truth changes them all
    assert caption_overridden(tiny_study, queries, [[q.reference] for q in queries]) == [True] * 4
    assert caption_overridden(tiny_study, queries, [[q.target] for q in queries]) == [False] * 4
