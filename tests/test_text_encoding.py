import pytest
import torch

from searle_core.datasets.base import CIRQuery
from searle_core.method.encoding import encode_text, encode_token_embeddings, encode_with_pseudo_tokens
from searle_core.retrieval.queries import SEARLE_PROMPT, pseudo_query_features

PROMPTS = ["a photo of $ that is red", "$", "this is a photo of a big $ on a table next to a $"]
WORDS = ["cat", "dog", "tree"]


def word_row(backbone, word):
    ids = backbone.tokenize([word])[0]
    assert (ids > 0).sum() == 3, f"{word} must be one BPE token"
    return backbone.model.token_embedding.weight[ids[1]]


@pytest.mark.parametrize("truncate", [True, False])
def test_pseudo_token_equals_real_word(random_backbone, truncate):
    bb = random_backbone
    tokens = bb.tokenize(PROMPTS)
    pseudo = torch.stack([word_row(bb, w) for w in WORDS])
    got = encode_with_pseudo_tokens(bb.model, tokens, pseudo, bb.dollar_token_id, truncate=truncate)
    # Only the first '$' takes the token, as in the authors' encode_with_pseudo_tokens.
    expected = bb.model.encode_text(bb.tokenize([p.replace("$", w, 1) for p, w in zip(PROMPTS, WORDS)]))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_truncated_equals_full_context(random_backbone):
    bb = random_backbone
    tokens = bb.tokenize(PROMPTS)
    pseudo = torch.randn(3, bb.token_dim) * 0.02
    short = encode_with_pseudo_tokens(bb.model, tokens, pseudo, bb.dollar_token_id, truncate=True)
    full = encode_with_pseudo_tokens(bb.model, tokens, pseudo, bb.dollar_token_id, truncate=False)
    torch.testing.assert_close(short, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encode_text(bb.model, tokens), bb.model.encode_text(tokens), atol=1e-5, rtol=1e-5)


def test_broadcast_equals_batch(random_backbone):
    bb = random_backbone
    tokens = bb.tokenize(PROMPTS)
    one = torch.randn(bb.token_dim)
    broadcast = encode_with_pseudo_tokens(bb.model, tokens, one, bb.dollar_token_id)
    batch = encode_with_pseudo_tokens(bb.model, tokens, one.expand(3, -1).clone(), bb.dollar_token_id)
    single = torch.cat(
        [encode_with_pseudo_tokens(bb.model, tokens[i : i + 1], one, bb.dollar_token_id) for i in range(3)]
    )
    torch.testing.assert_close(broadcast, batch)
    torch.testing.assert_close(broadcast, single, atol=1e-5, rtol=1e-5)


def test_gradient_reaches_the_token_and_not_clip(random_backbone):
    bb = random_backbone
    tokens = bb.tokenize(["$ next to $"])
    pseudo = (torch.randn(1, bb.token_dim) * 0.02).requires_grad_()
    encode_with_pseudo_tokens(bb.model, tokens, pseudo, bb.dollar_token_id).sum().backward()
    assert pseudo.grad is not None and pseudo.grad.abs().sum() > 0
    assert all(p.grad is None for p in bb.model.parameters())


def test_only_the_first_dollar_takes_the_token(random_backbone):
    """The authors' encode_with_pseudo_tokens replaces the first '$' of a prompt; later ones stay '$'."""
    bb = random_backbone
    cat = word_row(bb, "cat")
    got = encode_with_pseudo_tokens(bb.model, bb.tokenize(["a $ next to a $"]), cat, bb.dollar_token_id)
    torch.testing.assert_close(got, bb.model.encode_text(bb.tokenize(["a cat next to a $"])), atol=1e-5, rtol=1e-5)
    assert (got - bb.model.encode_text(bb.tokenize(["a cat next to a cat"]))).abs().max() > 1e-3


def test_errors(random_backbone):
    bb = random_backbone
    with pytest.raises(ValueError, match="no pseudo-word token"):
        encode_with_pseudo_tokens(bb.model, bb.tokenize(["a photo of a cat"]), torch.zeros(bb.token_dim), 259)
    with pytest.raises(ValueError, match=r"shape \(N, 128\)"):
        encode_with_pseudo_tokens(bb.model, bb.tokenize(["a $"]), torch.zeros(64), 259)
    with pytest.raises(ValueError, match="2 pseudo tokens for 3 prompts"):
        encode_with_pseudo_tokens(bb.model, bb.tokenize(PROMPTS), torch.zeros(2, 128), 259)


def test_dollar_id_read_from_tokenizer(random_backbone):
    assert random_backbone.dollar_token_id == 259


# ---- fault cases (@pytest.mark.audit_open; helpers in cli_helpers.py) ----
@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_dollar_in_a_caption_stays_text(random_backbone):
    backbone = random_backbone
    token = torch.randn(backbone.token_dim, generator=torch.Generator().manual_seed(0))
    queries = [CIRQuery("0", "ref", ("costs $20 less",)), CIRQuery("1", "ref", ("is red",))]
    got = pseudo_query_features(backbone, queries, {"ref": token}, SEARLE_PROMPT)

    prompts = [SEARLE_PROMPT.format(q.captions[0]) for q in queries]
    ids = backbone.tokenize(prompts)
    assert int((ids[0] == backbone.dollar_token_id).sum()) == 2  # the prompt's $ and the caption's
    model = backbone.model
    with torch.no_grad():
        embeddings = model.token_embedding(ids)
        for row in range(len(prompts)):  # only the first '$' of each prompt is the pseudo-word
            first = int((ids[row] == backbone.dollar_token_id).nonzero()[0])
            embeddings[row, first] = token
        want = torch.nn.functional.normalize(encode_token_embeddings(model, ids, embeddings).float(), dim=-1)
    assert torch.allclose(got, want, atol=1e-6)


def test_a_prompt_cut_at_the_context_is_said(random_backbone, capsys):
    """CLIP's tokenizer cuts a long caption to 77 tokens without a word: the query features say so."""
    token = torch.randn(random_backbone.token_dim)
    long = CIRQuery("0", "ref", (" ".join(["red"] * 90),))
    pseudo_query_features(random_backbone, [long, CIRQuery("1", "ref", ("is red",))], {"ref": token})
    err = capsys.readouterr().err
    assert "1 of 2 query prompts reach the text encoder's 77-token context" in err and "'a photo of $ that red" in err
    pseudo_query_features(random_backbone, [CIRQuery("1", "ref", ("is red",))], {"ref": token})
    assert "context" not in capsys.readouterr().err  # a short one is not
