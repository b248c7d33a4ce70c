"""The paper's baselines: loss formulas, saved networks, captioners, and every method end to end."""

import json
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from searle_core.baselines.captioning import CAPTION_PROMPT, HFCaptioner
from searle_core.baselines.palavra import (
    PalavraConfig,
    optimise_tokens,
    palavra_contrastive_loss,
    palavra_pretraining_loss,
)
from searle_core.baselines.pic2word import Pic2WordConfig, Pic2WordMapper, load_mapper, pic2word_loss
from searle_core.datasets.features import reference_features
from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_save
from searle_core.jobs import artifacts
from searle_core.jobs.evaluation import pic2word_network
from searle_core.method.encoding import encode_text, encode_with_pseudo_tokens
from searle_core.method.oti import OTIConfig
from searle_core.method.phi import phi_sampler
from searle_core.method.regulariser import PhraseFeatureCache, TokenCache
from searle_core.methods.context import MethodContext
from searle_core.retrieval.queries import image_plus_text, text_query_features
from searle_core.world.attributes import all_combos, decode
from searle_core.world.setup import world_palavra_config
from searle_core.world.shapes_world import world_captions

METHODS = ("image-only", "text-only", "image+text", "captioning", "palavra", "pic2word", "searle-oti", "searle")


@pytest.fixture(autouse=True)
def models_in_tmp(tmp_path, monkeypatch):
    """Trained networks go to a temporary folder: tests never reuse or pollute the real cache."""
    monkeypatch.setattr(artifacts, "models_dir", lambda: tmp_path / "models")


@pytest.fixture(scope="module")
def quick_world():
    from searle_core.world.setup import world_setup

    return world_setup(quick=True, device="cpu", progress=False)


def tiny_context(**fields) -> MethodContext:
    """Every training knob turned down to a few steps: these tests check wiring, not accuracy."""
    from searle_core.world.setup import world_vocabulary

    defaults = {"pic2word_config": Pic2WordConfig(epochs=1), "palavra_config": PalavraConfig(epochs=1, steps=2)}
    return MethodContext(
        vocabulary=world_vocabulary(),
        oti_config=OTIConfig(steps=2),
        progress=False,
        phi_epochs=1,
        **{**defaults, **fields},
    )


# ---- formulas on small tensors ---------------------------------------------------------------------
def test_image_plus_text_is_the_normalised_sum_of_normalised_features():
    image = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    text = torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.0, -1.0]])
    expected = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    expected[0] /= 2**0.5
    out = image_plus_text(image, text)
    torch.testing.assert_close(out[0], expected[0])
    # Opposite unit vectors sum to zero: the result is zero, not NaN.
    assert torch.isfinite(out).all()


def plain_symmetric_ce(a, b, scale):
    """-(mean log p(match | row) + mean log p(match | column)) / 2, with explicit exp and sums."""
    a, b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    sims = torch.exp(scale * a @ b.T)
    rows = torch.diag(sims) / sims.sum(dim=1)
    cols = torch.diag(sims) / sims.sum(dim=0)
    return -(rows.log().mean() + cols.log().mean()) / 2


def test_pic2word_loss_matches_plain_formula(random_backbone):
    bb = random_backbone
    torch.manual_seed(0)
    mapper = Pic2WordConfig(middle_dim=32).build(bb).eval()
    feats = F.normalize(torch.randn(5, bb.embed_dim), dim=-1)
    loss = pic2word_loss(mapper, bb, feats, TokenCache(bb))
    text = encode_with_pseudo_tokens(bb.model, bb.tokenize(["a photo of $"] * 5), mapper(feats), bb.dollar_token_id)
    expected = plain_symmetric_ce(feats, text, bb.model.logit_scale.exp())
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    loss.backward()
    assert mapper.fc_out.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in bb.model.parameters())  # CLIP stays frozen


def test_every_baseline_prompt_holds_the_pseudo_word_token(random_backbone):
    from searle_core.baselines.pic2word import PIC2WORD_TRAIN_PROMPT
    from searle_core.method.templates import TEMPLATES
    from searle_core.retrieval.queries import PIC2WORD_PROMPT, SEARLE_PROMPT

    prompts = [PIC2WORD_PROMPT.format("is red"), PIC2WORD_TRAIN_PROMPT, SEARLE_PROMPT.format("is red")]
    prompts += [t.format("$") for t in PalavraConfig().templates]
    assert len(prompts) == 3 + len(TEMPLATES)
    ids = random_backbone.tokenize(prompts)
    assert ((ids == random_backbone.dollar_token_id).sum(dim=1) == 1).all()
    # Why Pic2Word's prompt keeps its space: "$," is one BPE chunk and loses the '$' token.
    assert not (random_backbone.tokenize(["a photo of $, is red"]) == random_backbone.dollar_token_id).any()


def test_mapper_has_pic2words_layout():
    mapper = Pic2WordMapper(128, 512, 64)
    assert list(mapper.state_dict()) == [
        "layers.0.0.weight",
        "layers.0.0.bias",
        "layers.1.0.weight",
        "layers.1.0.bias",
        "fc_out.weight",
        "fc_out.bias",
    ]
    assert mapper(torch.randn(3, 128)).shape == (3, 64)


def test_palavra_contrastive_loss_matches_plain_formula():
    torch.manual_seed(0)
    text, image = torch.randn(4, 8), torch.randn(4, 8)
    t, x = text / text.norm(dim=1, keepdim=True), image / image.norm(dim=1, keepdim=True)
    sims = torch.exp(7.0 * t @ x.T)
    expected = -(torch.diag(sims) / sims.sum(dim=1)).log().mean()  # text i over the batch's images
    torch.testing.assert_close(palavra_contrastive_loss(text, image, 7.0), expected)


def test_palavra_pretraining_loss_is_phrase_cosine(random_backbone):
    bb = random_backbone
    from searle_core.method.phi import Phi

    torch.manual_seed(0)
    inverter = Phi.for_backbone(bb).eval()
    feats = torch.randn(2, bb.embed_dim)
    bank = {"red circle": ["a red circle on a black background"], "star": ["a photo of a large star"]}
    sampler = phi_sampler([["red circle", "star"], ["star", "red circle"]], bank, top_concepts=1, seed=0)
    loss = palavra_pretraining_loss(inverter, bb, feats, [0, 1], sampler, PhraseFeatureCache(bb), TokenCache(bb))
    pseudo = ["a $ on a black background", "a photo of a large $"]
    plain = ["a red circle on a black background", "a photo of a large star"]
    with torch.no_grad():
        tokens = inverter(feats)
    a = encode_with_pseudo_tokens(bb.model, bb.tokenize(pseudo), tokens, bb.dollar_token_id)
    b = encode_text(bb.model, bb.tokenize(plain))
    expected = (1 - (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_palavra_optimisation_lowers_its_contrastive_loss(random_backbone):
    bb = random_backbone
    torch.manual_seed(0)
    feats = F.normalize(torch.randn(4, bb.embed_dim), dim=-1)
    start = torch.randn(4, bb.token_dim) * 0.02
    config = PalavraConfig(templates=("a photo of {}",))
    scale = bb.model.logit_scale.exp()

    def loss_of(tokens):
        text = encode_with_pseudo_tokens(bb.model, bb.tokenize(["a photo of $"] * 4), tokens, bb.dollar_token_id)
        return palavra_contrastive_loss(text, feats, scale).item()

    out = optimise_tokens(bb, feats, start, steps=8, config=config, seed=0)
    assert loss_of(out) < loss_of(start)
    assert torch.equal(optimise_tokens(bb, feats, start, steps=8, config=config, seed=0), out)  # deterministic


def test_palavra_batches_its_own_negatives_not_the_worlds_oti_batch(monkeypatch):
    """On the world OTI runs 128 images a batch for speed; PALAVRA's batch holds its contrastive
    negatives, so its world recipe keeps 32, and without a recipe of its own it follows the OTI batch."""
    from searle_core.methods import pipeline

    seen = []

    def fake_tokens(backbone, bench, inverter, config, oti_steps, batch_size, *rest):
        seen.append(batch_size)
        raise RuntimeError("stop")  # only the batch size matters here

    monkeypatch.setattr(pipeline, "palavra_reference_tokens", fake_tokens)
    for config in (world_palavra_config(images=2000), PalavraConfig()):
        ctx = MethodContext(oti_batch_size=128, palavra_config=config)
        with pytest.raises(RuntimeError, match="stop"):
            pipeline.query_features("palavra", None, SimpleNamespace(queries=[]), ctx)
    assert seen == [32, 128]


def test_world_baselines_train_about_as_long_as_phi():
    """The world's Pic2Word and PALAVRA see about as many images as φ there, on a world of any size."""
    from searle_core.world.setup import WORLD_PHI_EPOCHS, WORLD_PHI_IMAGES, world_epochs, world_pic2word_config

    assert (world_epochs(2000), world_epochs(500), world_epochs(10**6)) == (10, 40, 1)  # default, quick, huge
    assert world_pic2word_config(2000).epochs == world_palavra_config(2000).epochs == 10
    phi = WORLD_PHI_EPOCHS * WORLD_PHI_IMAGES
    assert abs(world_epochs(2000) * 2000 - phi) <= 0.15 * phi


# ---- saved networks --------------------------------------------------------------------------------
@pytest.mark.slow
def test_saved_mapper_reloads_to_identical_outputs(quick_world, tmp_path):
    world, bb = quick_world
    bench = world.benchmark("test")
    ctx = tiny_context()
    trained, setup = pic2word_network(bb, bench, ctx)
    files = list((tmp_path / "models").glob("pic2word-*.pt"))
    assert len(files) == 1 and files[0].with_suffix(".json").is_file()
    assert setup.trained_now is True and setup.method == "pic2word"
    meta = json.loads(files[0].with_suffix(".json").read_text())
    assert meta["config"]["epochs"] == 1 and meta["backbone"] == "shapes-clip" and len(meta["history"]) == 1
    again = load_mapper(files[0], bb, Pic2WordConfig(epochs=1))
    x = torch.randn(7, bb.embed_dim)
    with torch.no_grad():
        assert torch.equal(trained(x), again(x))
    # Second use loads the file instead of training; a different config is a different file.
    ctx2 = tiny_context()
    with torch.no_grad():
        again_mapper, again_setup = pic2word_network(bb, bench, ctx2)
        assert torch.equal(again_mapper(x), trained(x))
    assert again_setup.trained_now is False
    assert not list((tmp_path / "models").glob(".*tmp"))


def test_artifact_names_change_with_weights_data_and_config(random_backbone):
    from searle_core.clip.backbone import load_backbone

    path = artifacts.artifact_path("pic2word", random_backbone, "data", Pic2WordConfig())
    assert path == artifacts.artifact_path("pic2word", random_backbone, "data", Pic2WordConfig())
    assert path.name.startswith("pic2word-shapes-clip-")
    assert path != artifacts.artifact_path("pic2word", random_backbone, "data", Pic2WordConfig(epochs=2))
    assert path != artifacts.artifact_path("pic2word", random_backbone, "other-data", Pic2WordConfig())
    assert path != artifacts.artifact_path("palavra", random_backbone, "data", Pic2WordConfig())
    torch.manual_seed(1)
    other_weights = load_backbone("shapes-clip", pretrained=None, device="cpu")
    assert path != artifacts.artifact_path("pic2word", other_weights, "data", Pic2WordConfig())


@pytest.mark.slow
def test_unlabeled_oti_tokens_resume_from_finished_batches(quick_world):
    world, bb = quick_world
    config = OTIConfig(steps=1, lambda_gpt=0.0)
    names = world.pretrain_names()
    unlabeled = artifacts.UnlabeledImages(world.images, names, world.config.cache_key())
    path = artifacts.artifact_path(
        "oti-unlabeled", bb, unlabeled.data_id, {"oti": config, "seed": 42, "batch_size": 250, "vocabulary": None}
    )
    marker = torch.full((bb.token_dim,), 7.0)
    atomic_save(dict.fromkeys(names[:250], marker), path.with_name(f"{path.stem}.partial.pt"))
    vocabulary = tiny_context().vocabulary
    out = artifacts.unlabeled_oti_tokens(bb, unlabeled, config, vocabulary, batch_size=250, progress=False)
    assert out.path == path and out.trained_now
    assert torch.equal(out.content["tokens"][0], marker) and not torch.equal(out.content["tokens"][-1], marker)
    assert not path.with_name(f"{path.stem}.partial.pt").exists()
    assert (
        artifacts.unlabeled_oti_tokens(bb, unlabeled, config, vocabulary, batch_size=250, progress=False).trained_now
        is False
    )


# ---- captioners ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_world_captioner_gives_grammar_captions_that_clip_prefers(quick_world):
    world, bb = quick_world
    bench = world.benchmark("test")
    names, feats = reference_features(bb, bench, progress=False)
    captions = world_captions(bb, feats[:40])
    from searle_core.world import caption_for

    grammar = {caption_for(decode(c)) for c in all_combos()}
    assert len(grammar) == 216 and len(captions) == 40 and set(captions) <= grammar

    right = sum(c == caption_for(world.attributes(n)) for c, n in zip(captions, names[:40]))
    assert right >= 10  # the quick CLIP is far above chance (1/216)


class StubProcessor:
    def __call__(self, images, return_tensors, text=None):
        assert return_tensors == "pt"
        return {"pixel_values": torch.zeros(len(images), 3, 4, 4)}

    def batch_decode(self, ids, skip_special_tokens):
        return [f"A  Photo of thing {int(i[0])}.\n" for i in ids]


class StubModel:
    device = "cpu"

    def __init__(self):
        self.calls = 0

    def generate(self, pixel_values, max_new_tokens):
        self.calls += 1
        return torch.arange(len(pixel_values)).unsqueeze(1)


def test_hf_captioner_runs_an_injected_model_in_batches():
    from PIL import Image

    model = StubModel()
    captioner = HFCaptioner("stub", batch_size=2, model=model, processor=StubProcessor())
    captions = captioner([Image.new("RGB", (4, 4))] * 3)
    assert captions == ["a photo of thing 0", "a photo of thing 1", "a photo of thing 0"]
    assert model.calls == 2
    assert CAPTION_PROMPT.format(captions[0], "is red") == "a photo of a photo of thing 0 that is red"


def test_hf_captioner_without_transformers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(InputError, match="pip install 'transformers"):
        HFCaptioner("Salesforce/blip-image-captioning-base")([])


def test_real_benchmark_without_unlabeled_images_says_what_to_pass(random_backbone):
    from searle_core.baselines.training import unlabeled_images
    from searle_core.datasets.base import CIRBenchmark, ImageSource

    bench = CIRBenchmark("cirr", "val", [], [], ImageSource())
    with pytest.raises(ValueError, match="--unlabeled"):
        unlabeled_images(random_backbone, bench, None, "pic2word")


# ---- every method end to end on the quick world -----------------------------------------------------
@pytest.mark.slow
def test_every_method_end_to_end_on_the_quick_world(quick_world):
    from searle_core.jobs.evaluation import evaluate
    from searle_core.methods.pipeline import gallery_features
    from searle_core.world import ShapesWorld, WorldConfig

    # The quick world's CLIP on a smaller copy of its world (fewer unlabeled images and queries):
    # this test checks the wiring of all eight methods, not their accuracy.
    _, bb = quick_world
    world = ShapesWorld(WorldConfig.quick(n_pretrain=96, n_test_queries=48))
    bench = world.benchmark("test")
    ctx = tiny_context()
    gallery = gallery_features(bb, bench, progress=False)
    results = {m: evaluate(m, bench, bb, ctx, gallery=gallery) for m in METHODS}
    for method, result in results.items():
        feats = result.query_features
        assert feats.shape == (len(bench.queries), bb.embed_dim), method
        torch.testing.assert_close(feats.norm(dim=1), torch.ones(len(feats)), msg=method)
        assert set(result.metrics) == {
            "mAP@5",
            "mAP@10",
            "mAP@25",
            "mAP@50",
            "Recall@1",
            "Recall@5",
            "Recall@10",
            "Recall@50",
        }, method
        assert all(0 <= v <= 100 for v in result.metrics.values()), method
    # image+text is its formula of the other two rows' ingredients.
    names, feats = reference_features(bb, bench, progress=False)
    row = {n: i for i, n in enumerate(names)}
    image = feats[[row[q.reference] for q in bench.queries]]
    torch.testing.assert_close(
        results["image+text"].query_features, image_plus_text(image, text_query_features(bb, bench.queries))
    )
    torch.testing.assert_close(results["image-only"].query_features, image)
    # captioning splices the world caption into the paper's prompt.
    caption = ctx.computed.captions[bench.queries[0].reference]
    q0 = text_query_features(bb, bench.queries[:1], CAPTION_PROMPT, [caption])
    torch.testing.assert_close(results["captioning"].query_features[:1], q0)
    # φ for searle was trained from the world's unlabeled images (OTI tokens cached beside it).
    assert ctx.phi is not None
    assert {m: r.setup.trained_now for m, r in results.items() if r.setup} == {
        "pic2word": True,
        "palavra": True,
        "searle": True,
    }
    assert {p.name.split("-")[0] for p in artifacts.models_dir().glob("*.pt")} == {"pic2word", "palavra", "oti", "phi"}
    assert set(ctx.computed.tokens) >= {"searle-oti", "palavra", "pic2word"}
    # Methods that produce tokens produce different ones.
    ref = bench.queries[0].reference
    tokens = ctx.computed.tokens
    assert not torch.equal(tokens["palavra"][ref], tokens["pic2word"][ref])


@pytest.mark.slow
def test_evaluate_cli_runs_a_baseline(capsys, quick_world):
    from searle_core.cli import main

    assert (
        main(
            [
                "evaluate",
                "--dataset",
                "shapes",
                "--split",
                "test",
                "--quick",
                "--method",
                "captioning",
                "--json",
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(metrics) >= {"mAP@10", "Recall@1"}
