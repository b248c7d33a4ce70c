import math
import random

import pytest
import torch
import torch.nn.functional as F

from searle_core.method.encoding import encode_with_pseudo_tokens
from searle_core.method.losses import cosine_loss
from searle_core.method.oti import OTIConfig, oti
from searle_core.method.regulariser import PhraseSampler, replace_concept

BANK = {
    "red circle": ["a red circle on a white background", "a photo of a red circle that is small"],
    "circle": ["a circle that is drawn", "a large circle"],
}
CONFIG = OTIConfig(steps=40, templates=("a photo of a {}", "{}", "this is a {}"))


@pytest.fixture(scope="module")
def image_features(random_backbone):
    torch.manual_seed(1)
    return torch.randn(3, random_backbone.embed_dim)


def test_oti_lowers_loss_and_returns_ema(random_backbone, image_features):
    res = oti(random_backbone, image_features, [["red circle", "circle"]] * 3, BANK, CONFIG, seed=0)
    h = res.history
    assert len(h["total"]) == CONFIG.steps
    assert sum(h["total"][-5:]) < sum(h["total"][:5])
    assert sum(h["cos"][-5:]) < sum(h["cos"][:5])
    assert not torch.allclose(res.tokens, res.raw_tokens)  # the EMA lags the raw tokens
    raw = oti(
        random_backbone,
        image_features,
        [["red circle"]] * 3,
        BANK,
        OTIConfig(**{**CONFIG.__dict__, "use_ema": False}),
        seed=0,
    )
    torch.testing.assert_close(raw.tokens, raw.raw_tokens)


def test_oti_reproducible(random_backbone, image_features):
    a = oti(random_backbone, image_features, [["circle"]] * 3, BANK, CONFIG, seed=7)
    b = oti(random_backbone, image_features, [["circle"]] * 3, BANK, CONFIG, seed=7)
    c = oti(random_backbone, image_features, [["circle"]] * 3, BANK, CONFIG, seed=8)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_oti_token_retrieves_own_image(random_backbone, image_features):
    bb = random_backbone
    res = oti(bb, image_features, config=OTIConfig(steps=60, templates=("a photo of {}",)), seed=0)
    text = F.normalize(encode_with_pseudo_tokens(bb.model, bb.tokenize(["a photo of $"] * 3), res.tokens, 259), dim=-1)
    sims = text @ F.normalize(image_features, dim=-1).T
    assert torch.equal(sims.argmax(dim=1), torch.arange(3))


def test_oti_leaves_backbone_untouched(random_backbone, image_features):
    before = {k: v.clone() for k, v in random_backbone.model.state_dict().items()}
    oti(random_backbone, image_features, [["circle"]] * 3, BANK, OTIConfig(steps=3), seed=0)
    after = random_backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_oti_first_step_matches_plain_formula(random_backbone, image_features):
    """The loss of step 0 equals the paper's formula computed by hand from the same draws."""
    bb = random_backbone
    concepts = [["red circle"], ["circle"], ["circle", "red circle"]]
    cfg = OTIConfig(steps=1, templates=("a photo of a {}", "{}", "this is a {}"))
    res = oti(bb, image_features, concepts, BANK, cfg, seed=3)
    rng = random.Random(3)
    template_ids = [rng.randrange(3) for _ in range(3)]
    draw = PhraseSampler(concepts, BANK, rng, draw="phrase").draw()  # the authors' OTI draw
    init = torch.randn(3, bb.token_dim, generator=torch.Generator().manual_seed(3)) * cfg.init_std
    prompts = [cfg.templates[i].format("$") for i in template_ids]
    with torch.no_grad():
        t = encode_with_pseudo_tokens(bb.model, bb.tokenize(prompts), init, 259, truncate=False)
        cos = (1 - F.cosine_similarity(t, image_features)).mean()
        p = encode_with_pseudo_tokens(bb.model, bb.tokenize(draw.pseudo_phrases), init[draw.rows], 259, truncate=False)
        plain = bb.model.encode_text(bb.tokenize(draw.phrases))
        gpt = (1 - F.cosine_similarity(p, plain)).mean()
    expected = (1.0 * cos + 0.5 * gpt) / 1.5
    assert res.history["total"][0] == pytest.approx(expected.item(), abs=1e-5)
    assert res.history["gpt"][0] == pytest.approx(gpt.item(), abs=1e-5)


def test_oti_draws_a_phrase_uniformly_phi_a_concept_then_a_phrase():
    """The authors' OTI draws uniformly over the flat list of an image's phrases, so concept A with 1
    phrase beside B with 9 gets 1/10 of the draws; their φ draws a concept first: A gets 1/2."""
    bank = {"A": ["a photo of A"], "B": [f"a photo of B number {i}" for i in range(9)]}
    n = 20_000
    for mode, p in (("phrase", 0.1), ("concept", 0.5)):
        sampler = PhraseSampler([["A", "B"]], bank, random.Random(0), draw=mode)
        hits = sum(sampler.draw().phrases == ["a photo of A"] for _ in range(n))
        tolerance = 5 * math.sqrt(p * (1 - p) / n)  # five binomial standard deviations
        assert abs(hits / n - p) < tolerance, (mode, hits / n)
    with pytest.raises(ValueError, match="draw must be one of"):
        PhraseSampler([["A"]], bank, random.Random(0), draw="uniform")


def test_oti_uses_the_authors_phrase_draw(random_backbone, image_features, monkeypatch):
    modes = []
    init = PhraseSampler.__init__
    monkeypatch.setattr(PhraseSampler, "__init__", lambda self, *a, **k: modes.append(k["draw"]) or init(self, *a, **k))
    oti(random_backbone, image_features, [["circle"]] * 3, BANK, OTIConfig(steps=1), seed=0)
    assert modes == ["phrase"]


def test_replace_concept():
    assert (
        replace_concept("a photo of a red circle that is red circle", "red circle")
        == "a photo of a $ that is red circle"
    )
    with pytest.raises(ValueError, match="does not contain"):
        replace_concept("a square", "circle")


def test_cosine_loss_formula():
    x, y = torch.randn(5, 8), torch.randn(5, 8)
    expected = torch.nn.CosineEmbeddingLoss()(x, y, torch.ones(5))
    torch.testing.assert_close(cosine_loss(x, y), expected)


def test_trajectory_recorded(random_backbone, image_features):
    res = oti(random_backbone, image_features, config=OTIConfig(steps=10, templates=("{}",)), trajectory_every=5)
    assert res.trajectory.shape == (3, 3, random_backbone.token_dim)  # steps 0, 5 and the last


def test_invert_images_resumed_equals_uninterrupted(random_backbone):
    """A run resumed after its first batch gives bit-identical tokens, phrase regulariser included."""
    from searle_core.method.oti import invert_images

    torch.manual_seed(4)
    feats = torch.randn(5, random_backbone.embed_dim)
    names = [f"img{i}" for i in range(5)]
    concepts = [["red circle", "circle"], ["circle"], ["red circle"], ["circle", "red circle"], ["circle"]]
    cfg = OTIConfig(steps=6, templates=CONFIG.templates)
    seen = []
    full = invert_images(
        random_backbone,
        feats,
        names,
        concepts,
        BANK,
        cfg,
        batch_size=2,
        progress=False,
        on_batch=lambda batch: seen.append(batch.index),
    )
    assert seen == [0, 1, 2]
    first = {n: full[n] for n in names[:2]}
    resumed_batches = []
    resumed = invert_images(
        random_backbone,
        feats,
        names,
        concepts,
        BANK,
        cfg,
        batch_size=2,
        progress=False,
        done=first,
        on_batch=lambda batch: resumed_batches.append(batch.index),
    )
    assert resumed_batches == [1, 2]
    assert all(torch.equal(full[n], resumed[n]) for n in names)
