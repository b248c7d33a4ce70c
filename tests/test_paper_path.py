"""The paper path's fidelity to the authors' code, piece by piece.

Each test pins one behaviour of the authors' ``src/`` that the project now follows: φ's raw input,
fp32 evaluation and mixed-precision training, whole-vocabulary concept association, φ's
regulariser and batches, the preprocessing decision, one Time column, Pic2Word's optimiser.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from searle_core.datasets.features import configure_images, image_features, text_features
from searle_core.infra import device as dev
from searle_core.inversion.concepts import Vocabulary
from searle_core.inversion.phi_files import load_phi, save_phi
from searle_core.method.oti import OTIConfig
from searle_core.method.phi import Phi
from searle_core.method.phi_training import PhiTrainConfig, train_phi
from searle_core.method.regulariser import PhraseSampler, replace_every
from searle_core.methods.context import MethodContext
from searle_core.methods.pipeline import phi_reference_tokens

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- precision (defect 6) ------------------------------------------------------------------------
def test_training_precision_dispatch():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert dev.training_precision(cpu) == "fp32" and dev.training_precision(cuda) == "fp16"  # the authors' amp
    assert dev.training_precision(cuda, "bf16") == "bf16" and dev.training_precision(cpu, "fp16") == "fp16"
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, fp16, bf16"):
        dev.training_precision(cpu, "half")
    # A loss scaler exactly for fp16 on CUDA (bf16 and fp32 need none; CPU fp16 has no scaler).
    assert isinstance(dev.grad_scaler(cuda), torch.amp.GradScaler)
    assert dev.grad_scaler(cuda, "bf16") is None and dev.grad_scaler(cuda, "fp32") is None
    assert dev.grad_scaler(cpu) is None and dev.grad_scaler(cpu, "fp16") is None
    # The autocast a training step runs under.
    with dev.train_autocast(cpu):
        assert not torch.is_autocast_enabled("cpu")
    with dev.train_autocast(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert dev.EVAL_PRECISION == "fp32"


def test_evaluation_is_fp32_even_under_a_callers_autocast(tiny_study, monkeypatch):
    """Features, query features and φ's tokens ignore any autocast left on (the authors: .float(), no amp)."""
    from searle_core.datasets import features

    study, bb = tiny_study, tiny_study.backbone
    names = study.bench.reference_names()[:4]
    phi = Phi.for_backbone(bb).eval()
    ctx = MethodContext(phi=phi, progress=False)
    monkeypatch.setattr(features, "load_cached_tensor", lambda *a: None)  # compute every time

    def everything():
        features._MEMO.clear()
        return (
            image_features(bb, study.bench.images, names, progress=False, cache=False),
            text_features(bb, ["a red circle", "a photo of a blue square on a white background"]),
            torch.stack(list(phi_reference_tokens(bb, study.bench, ctx).values())),
        )

    plain = everything()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = everything()
    for a, b in zip(plain, under):
        assert b.dtype == torch.float32
        torch.testing.assert_close(b, a, atol=0, rtol=0)


def test_oti_and_phi_train_in_the_precision_asked(tiny_study, monkeypatch):
    from searle_core.method.oti import oti

    bb = tiny_study.backbone
    feats = tiny_study.features(tiny_study.bench.reference_names()[:3])
    fp32 = oti(bb, feats, config=OTIConfig(steps=3, lambda_gpt=0.0), seed=1).tokens
    bf16 = oti(bb, feats, config=OTIConfig(steps=3, lambda_gpt=0.0, precision="bf16"), seed=1).tokens
    assert (fp32 - bf16).abs().max() > 1e-6  # the option reaches the optimisation
    # φ's forward runs under the training autocast too (the authors' train_phi.py).
    seen = []
    forward = Phi.forward
    monkeypatch.setattr(
        Phi, "forward", lambda self, x: seen.append(torch.is_autocast_enabled("cpu")) or forward(self, x)
    )
    raw = torch.randn(8, bb.embed_dim) * 5
    train_phi(
        bb,
        raw,
        torch.randn(8, bb.token_dim),
        None,
        None,
        PhiTrainConfig(epochs=1, batch_size=4, precision="bf16"),
        progress=False,
    )
    assert seen == [True, True]


# ---- φ's raw input (defect 4) --------------------------------------------------------------------
def test_phi_is_given_raw_encode_image_features(tiny_study):
    study, bb = tiny_study, tiny_study.backbone
    names = study.bench.reference_names()
    raw = study.raw_features(names)
    normalised = study.features(names)
    assert raw.norm(dim=-1).sub(1).abs().max() > 0.1  # raw features are not unit vectors...
    torch.testing.assert_close(F.normalize(raw, dim=-1), normalised)  # ...and normalise to the gallery's
    with torch.no_grad():
        expected = bb.model.encode_image(
            torch.stack([bb.preprocess(study.bench.images.load_image(n)) for n in names[:2]])
        ).float()
    torch.testing.assert_close(raw[:2], expected, atol=1e-4, rtol=1e-4)
    phi = Phi.for_backbone(bb).eval()
    tokens = phi_reference_tokens(bb, study.bench, MethodContext(phi=phi, progress=False))
    with torch.no_grad():
        torch.testing.assert_close(torch.stack([tokens[n] for n in names]), phi(raw))
        assert (phi(normalised) - phi(raw)).abs().max() > 1e-3  # the input scale matters to φ


def test_phi_trains_on_raw_features(tiny_study, monkeypatch):
    from searle_core.jobs import artifacts as trained_module
    from searle_core.method import phi_training
    from searle_core.notebook import inversions

    seen = {}

    def spy(backbone, image_features, *args, **kwargs):
        seen["features"] = image_features.clone()
        return phi_training.PhiTrainingResult(Phi.for_backbone(backbone).eval(), [])

    monkeypatch.setattr(trained_module, "train_phi", spy)  # where the one φ recipe calls it
    trained = inversions.train_study_phi(tiny_study, OTIConfig(steps=1), epochs=1, images=6, validate=False)
    names = list(tiny_study.unlabeled[1])[:6]
    torch.testing.assert_close(seen["features"], tiny_study.raw_features(names, tiny_study.unlabeled[0]))
    assert trained.phi.epoch == 1  # the artifact records φ's epoch


def test_oti_run_stores_raw_features(tiny_study, tmp_path):
    from searle_core.jobs.oti_run import compute_inputs, load_inputs, save_inputs

    study = tiny_study
    names = study.bench.reference_names()[:4]
    inputs = compute_inputs(study.backbone, study.bench.images, names, None, 15, progress=False)
    torch.testing.assert_close(inputs.features, study.raw_features(names))
    save_inputs(inputs, tmp_path / "inputs.pt")
    torch.testing.assert_close(load_inputs(tmp_path / "inputs.pt").features, study.raw_features(names))


# ---- φ's training details and the vocabulary (defect 7) -----------------------------------------
def test_phi_drops_the_last_partial_batch(random_backbone, monkeypatch):
    sizes = []
    forward = Phi.forward
    monkeypatch.setattr(Phi, "forward", lambda self, x: sizes.append(len(x)) or forward(self, x))
    bb = random_backbone
    train_phi(
        bb,
        torch.randn(10, bb.embed_dim),
        torch.randn(10, bb.token_dim),
        None,
        None,
        PhiTrainConfig(epochs=2, batch_size=4),
        progress=False,
    )
    assert sizes == [4, 4, 4, 4]  # 10 images: two full batches per epoch, the last 2 dropped
    sizes.clear()
    train_phi(
        bb,
        torch.randn(3, bb.embed_dim),
        torch.randn(3, bb.token_dim),
        None,
        None,
        PhiTrainConfig(epochs=1, batch_size=4),
        progress=False,
    )
    assert sizes == [3]  # fewer images than a batch: one batch of all of them


def test_phi_regulariser_replaces_every_occurrence_oti_the_first(random_backbone, monkeypatch):
    assert replace_every("a red circle next to a red circle", "red circle") == "a $ next to a $"
    bank = {"red circle": ["a red circle next to a red circle"]}
    oti_draw = PhraseSampler([["red circle"]], bank, random.Random(0), draw="phrase").draw()
    phi_draw = PhraseSampler([["red circle"]], bank, random.Random(0), draw="concept", replace_all=True).draw()
    assert oti_draw.phrases == phi_draw.phrases == ["a red circle next to a red circle"]
    assert (oti_draw.pseudo_phrases, phi_draw.pseudo_phrases) == (["a $ next to a red circle"], ["a $ next to a $"])
    drawn = []
    draw = PhraseSampler.draw
    monkeypatch.setattr(PhraseSampler, "draw", lambda self, rows=None: drawn.append(d := draw(self, rows)) or d)
    bb = random_backbone
    train_phi(
        bb,
        torch.randn(4, bb.embed_dim),
        torch.randn(4, bb.token_dim),
        [["red circle"]] * 4,
        bank,
        PhiTrainConfig(epochs=1, batch_size=4),
        progress=False,
    )
    assert drawn and {p for d in drawn for p in d.pseudo_phrases} == {"a $ next to a $"}


def test_concepts_are_associated_over_the_whole_vocabulary(random_backbone):
    """A concept without phrases still takes its place in an image's top 15; it is skipped only when
    phrases are drawn, so the image is regularised with fewer (the authors' oti_inversion.py)."""
    bb = random_backbone
    concepts = ["red circle", "blue square", "green star", "large", "small", "white background"]
    vocab = Vocabulary(concepts, {c: [f"a photo of {c}"] for c in concepts[1:]})  # no phrase for "red circle"
    feats = vocab.concept_features(bb)[:1]  # an "image" whose best concept is "red circle"
    top = vocab.associate(bb, feats, top_k=3)[0]
    assert top[0] == "red circle" and len(top) == 3
    sampler = PhraseSampler([top], vocab.phrase_bank, random.Random(0), draw="phrase")
    assert sampler.usable == [top[1:]]  # two usable concepts left, not refilled to three


def test_notebook_vocabulary_keeps_every_concept(tmp_path):
    from searle_core.inversion.phrases import save_phrase_pickle
    from searle_core.jobs.from_settings import open_vocabulary
    from searle_core.settings import RunSettings

    csv = tmp_path / "classes.csv"
    csv.write_text("LabelName,DisplayName\n/m/1,Dog\n/m/2,Cat\n/m/3,Owl\n")
    pkl = save_phrase_pickle({"Dog": ["a photo of Dog"], "Cat": ["a photo of a kitten"]}, tmp_path / "p.pkl")
    vocab = open_vocabulary(RunSettings(dataset="circo", concepts=str(csv), phrases=str(pkl)))
    assert vocab.concepts == ["Dog", "Cat", "Owl"] and list(vocab.phrase_bank) == ["Dog"]


def test_phi_epoch_is_read_from_checkpoints_and_recorded(random_backbone, tmp_path):
    from searle_core.report.table import settings_record

    bb = random_backbone
    save_phi(Phi.for_backbone(bb), tmp_path / "phi.pt", epoch=37)
    phi = load_phi(tmp_path / "phi.pt", bb)
    assert phi.epoch == 37 and phi.source == str(tmp_path / "phi.pt")
    torch.save(Phi.for_backbone(bb).state_dict(), tmp_path / "plain.pt")
    assert load_phi(tmp_path / "plain.pt", bb).epoch is None
    settings = settings_record(configure_images(bb, "targetpad"), MethodContext(phi=phi))
    assert settings == {
        "preprocess": "targetpad",
        "eval_precision": "fp32",
        "train_precision": "fp32",
        "phi_epoch": 37,
        "phi_source": str(tmp_path / "phi.pt"),
    }


# ---- preprocessing (defect 5) ------------------------------------------------------------------
def test_one_preprocessing_decision_for_every_dataset(random_backbone):
    from searle_core.datasets.features import configure_for_dataset, preprocess_name

    for dataset in ("shapes", "cirr", "fashioniq", "circo", "imagenet"):
        assert preprocess_name(configure_for_dataset(random_backbone, dataset)) == "targetpad"
    assert preprocess_name(configure_for_dataset(random_backbone, "cirr", "clip")) == "clip"
    assert configure_for_dataset(random_backbone, "shapes").preprocess.num_workers == 0


def test_targetpad_is_exact_on_the_square_shapes_renders(tiny_study):
    """The array fast path the world uses equals the full PIL targetpad pipeline."""
    import dataclasses

    from searle_core.clip.preprocess import make_preprocess_from_open_clip
    from searle_core.datasets.features import ImagePipeline

    bb = configure_images(tiny_study.backbone, "targetpad")
    names = tiny_study.bench.gallery[:6]
    fast = image_features(bb, tiny_study.bench.images, names, progress=False, cache=False, normalize=False)
    # The same transform under another name takes the PIL path.
    pil_pipeline = ImagePipeline(make_preprocess_from_open_clip(bb.model, "targetpad"), "pil")
    pil_bb = dataclasses.replace(bb, preprocess=pil_pipeline)
    pil = image_features(pil_bb, tiny_study.bench.images, names, progress=False, cache=False, normalize=False)
    torch.testing.assert_close(fast, pil, atol=1e-5, rtol=1e-5)


def test_trained_network_keys_name_the_preprocessing(random_backbone, tmp_path, monkeypatch):
    from searle_core.jobs.artifacts import artifact_path, load_or_train

    monkeypatch.setenv("SEARLE_DATA", str(tmp_path))

    clip, pad = configure_images(random_backbone, "clip"), configure_images(random_backbone, "targetpad")
    assert artifact_path("phi", clip, "data", {}) != artifact_path("phi", pad, "data", {})
    for kind in ("pic2word", "palavra"):
        assert artifact_path(kind, clip, "data", {}) != artifact_path(kind, pad, "data", {})
    assert (
        load_or_train("phi", pad, "data", {}, lambda: {"x": torch.zeros(1)}).content["meta"]["preprocess"]
        == "targetpad"
    )


# ---- the Time column (defect 10) -----------------------------------------------------------------
def test_one_time_definition_for_the_cli_table_and_notebook_4(tiny_study, monkeypatch):
    """A baseline that spent 7 s of its 10 s getting its network has 3 s of query time, in both."""
    from searle_core.methods.context import NetworkSetup
    from searle_core.methods.pipeline import MethodResult
    from searle_core.notebook import results
    from searle_core.report import table as evaluation_module
    from searle_core.report.table import evaluate_methods

    def fake_evaluate(method, bench, backbone, ctx, gallery=None):
        return MethodResult(
            method,
            {"mAP@10": 1.0},
            [],
            torch.zeros(0),
            10.0,
            setup=NetworkSetup(method, setup_seconds=7.0, train_seconds=40.0, trained_now=True),
        )

    monkeypatch.setattr(evaluation_module, "evaluate", fake_evaluate)
    monkeypatch.setattr(evaluation_module, "gallery_features", lambda *a, **k: {})
    monkeypatch.setattr(tiny_study, "gallery", lambda: {})
    cli = evaluate_methods(tiny_study.bench, tiny_study.backbone, ["pic2word"], MethodContext(progress=False), None)
    notebook = results.evaluate_setting(tiny_study, ["pic2word"], log=None)
    for table in (cli, notebook.table):
        assert (table.rows[0].seconds, table.rows[0].train_seconds) == (3.0, 40.0)


# ---- Pic2Word (defect 9) -----------------------------------------------------------------------
def test_pic2word_follows_the_official_optimiser_and_schedule(random_backbone, monkeypatch):
    from searle_core.baselines.pic2word import Pic2WordConfig, pic2word_captions, train_pic2word
    from searle_core.baselines.training import cosine_with_warmup

    config = Pic2WordConfig(epochs=2, batch_size=4)
    assert (config.betas, config.eps, config.lr, config.weight_decay) == ((0.9, 0.98), 1e-6, 1e-4, 0.1)
    lr = cosine_with_warmup(1.0, 4, 20)
    assert [lr(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]  # open_clip's cosine_lr
    assert lr(4) == 1.0 and lr(12) == pytest.approx(0.5) and lr(20) == pytest.approx(0.0)
    made, lrs = [], []
    adamw = torch.optim.AdamW

    class Spy(adamw):
        def __init__(self, groups, **kwargs):
            super().__init__(groups, **kwargs)
            made.append(self)

        def step(self, *a, **k):
            lrs.append(self.param_groups[0]["lr"])
            return super().step(*a, **k)

    monkeypatch.setattr(torch.optim, "AdamW", Spy)
    train_pic2word(random_backbone, torch.randn(8, random_backbone.embed_dim) * 5, config, progress=False)
    (opt,) = made
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6
    # No weight decay on biases (and gains), 0.1 on weight matrices, as Pic2Word's main.py.
    decays = [(p.ndim, g["weight_decay"]) for g in opt.param_groups for p in g["params"]]
    assert {d for n, d in decays if n < 2} == {0.0} and {d for n, d in decays if n >= 2} == {0.1}
    # 2 epochs x 2 batches; warm-up capped at a tenth of the run (here 1 step), then the cosine.
    assert lrs == pytest.approx([1e-4 * cosine_with_warmup(1.0, 1, 4)(s) for s in range(4)])
    fiq = SimpleNamespace(captions=("is red", "has long sleeves"))
    assert pic2word_captions(fiq) == ["has long sleeves and is red"]  # "{cap2} and {cap1}", one order
    assert pic2word_captions(SimpleNamespace(captions=("is red",))) == ["is red"]
