"""LinCIR: its self-masking loss, its training, and the method through the CLI, ``searle
table`` and notebook 4's engine, on a random-weights ``shapes-clip`` (no world CLIP is trained)."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from standins import (  # noqa: F401
    CLI,
    SEED,
    circo_standin,
    cirr_standin,
    fiq_standin,
    protocol_env,
    searle_cache,
)

from reference.lincir import (
    OFFICIAL_ARGS,
    README_RUN,
    official_clean_caption,
    official_clip_preprocess,
    official_keywords,
    official_masked_caption,
    official_query_features,
)
from searle_core.baselines.lincir import (
    LincirConfig,
    keyword_runs,
    lincir_loss,
    load_lincir,
    mask_corpus,
    mask_keywords,
    modality_gap,
    tagged_keyword_runs,
    train_lincir,
)
from searle_core.cli import main
from searle_core.datasets.loaders import read_captions
from searle_core.infra.errors import InputError
from searle_core.method.phi import Phi
from searle_core.report.table import flatten
from searle_core.world import ShapesWorld, WorldConfig

#: A tiny recipe: the tests check the plumbing, not LinCIR's numbers.
TINY = LincirConfig(steps=3, batch_size=8, lr=1e-3, keywords="closed-class", seed=0)


@pytest.fixture
def tiny_recipe(monkeypatch):
    """Every path trains LinCIR with :data:`TINY` on a 48-caption world corpus."""
    monkeypatch.setattr("searle_core.world.shapes_world.CORPUS_CAPTIONS", 48)
    # the official default on real datasets (50,000 steps) cut to TINY's length as well
    monkeypatch.setattr("searle_core.jobs.evaluation.lincir_config", lambda bench, ctx: TINY)


def test_closed_class_approximation_and_the_replacement_rules():
    """The offline approximation (closed-class words break keyword runs) on hand-written expectations, and
    the official replacement rules: every occurrence, a random word where a keyword is missing."""
    caption = "a photo of a small red circle on a black background that is red"
    assert keyword_runs(caption) == ["a photo", "a small red circle", "a black background", "red"]
    masked, drawn = mask_keywords(caption, keyword_runs(caption), random.Random(0))
    assert not drawn
    # every occurrence: "red" inside the already-masked run is gone, the clause's "red" too
    assert masked == "$ of $ on $ that is $"
    # a keyword missing verbatim: one random word replaced instead, and the loop stops there
    assert mask_keywords("the cat sits", ["a dog", "cat"], random.Random(1))[0] in (
        "$ cat sits",
        "the $ sits",
        "the cat $",
    )
    out = mask_corpus(["A $5 Cat sits"], seed=0, keywords="closed-class")[0]
    # "a" and "cat" are separate runs (a number breaks them); str.replace also hits the "a" of "cat"
    assert out.caption == "a 5 cat sits" and out.masked == "$ 5 c $ t sits" and not out.drawn


def test_loss_is_the_mse_of_the_masked_caption_with_phi_token_in_every_dollar_row(random_backbone):
    """The loss against a plain restatement: the caption "a red circle that is red" masked to
    "$ that is $", both `$` rows given φ(t + u·ε), features compared with t by mean squared error."""
    bb = random_backbone
    caption = "a red circle that is red"
    masked = mask_corpus([caption], seed=0, keywords="closed-class")[0].masked
    assert masked == "$ that is $"
    model = bb.model
    ids = bb.tokenize([caption])
    with torch.no_grad():
        t = model.encode_text(ids)  # raw: not normalised
    torch.manual_seed(0)
    phi = Phi.for_backbone(bb).eval()
    config = LincirConfig(noise=1.0)
    got = lincir_loss(phi, bb, t, bb.tokenize([masked]), config, torch.Generator().manual_seed(3))

    g = torch.Generator().manual_seed(3)
    u, eps = torch.rand(1, 1, generator=g), torch.randn(t.shape, generator=g)
    token = phi(t + u * eps)[0]
    mids = bb.tokenize([masked])[0]
    emb = model.token_embedding(mids).clone()
    emb[mids == bb.dollar_token_id] = token  # both `$` rows
    x = emb[None] + model.positional_embedding
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
    feature = x[0, mids.argmax()] @ model.text_projection
    expected = ((feature - t[0]) ** 2).mean()
    assert float(got) == pytest.approx(float(expected), rel=1e-4)
    assert float(F.mse_loss(feature, t[0])) == pytest.approx(float(expected), rel=1e-6)


def test_training_on_the_world_captions_reduces_the_loss(random_backbone, one_thread):
    world = ShapesWorld(WorldConfig.quick())
    captions = world.caption_corpus(256)
    assert captions == world.caption_corpus(256) and captions != world.caption_corpus(256, seed=1)
    torch.manual_seed(0)
    config = LincirConfig(steps=60, batch_size=32, lr=1e-3, noise=0.0, dropout=0.0, keywords="closed-class", seed=0)
    phi, meta = train_lincir(random_backbone, captions, config, progress=False)
    losses = [h["loss"] for h in meta["history"]]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert meta["captions"] == 256 and meta["fallback_share"] == 0.0
    # the modality gap helper: cosines in [-1, 1], one per image
    bench = world.benchmark("val")
    names = bench.reference_names()[:4]
    feats = torch.randn(4, random_backbone.embed_dim)
    gap = modality_gap(random_backbone, phi, feats, [bench.text_corpus.described[n] for n in names])
    assert -1 <= gap["token_cosine"] <= 1 and gap["images"] == 4


def test_official_checkpoint_layout_loads_and_a_wrong_one_is_one_line(random_backbone, tmp_path):
    phi = Phi.for_backbone(random_backbone)
    torch.save({"epoch": 7, "Phi": phi.state_dict()}, tmp_path / "phi_best.pt")
    loaded = load_lincir(tmp_path / "phi_best.pt", random_backbone)
    assert torch.equal(loaded.layers[0].weight, phi.layers[0].weight)
    torch.save({"Phi": Phi(3, 12, 5).state_dict()}, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="bad.pt: not a LinCIR φ"):
        load_lincir(tmp_path / "bad.pt", random_backbone)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("missing.txt", None, "no such file"),
        ("empty.txt", "\n\n", "no captions"),
        ("cols.csv", "id,title\n1,a cat\n", "no 'caption' or 'text' column"),
        ("nums.json", "[1, 2]", "caption 0 is a int, not a string"),
        ("obj.json", '{"rows": []}', "without a 'captions' or 'text' key"),
    ],
)
def test_a_bad_captions_file_is_one_line_naming_it(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_captions(path)
    code = main(["evaluate", "--dataset", "shapes", "--quick", "--method", "lincir", "--captions", str(path), *CLI])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(path) in err and message in err


def test_captions_formats(tmp_path):
    (tmp_path / "a.txt").write_text("a cat\n\n a dog \n")
    (tmp_path / "b.json").write_text(json.dumps([{"caption": "a cat"}, {"text": "a dog"}]))
    (tmp_path / "c.csv").write_text('text,id\n"a cat, sitting",1\na dog,2\n')
    assert read_captions(tmp_path / "a.txt").captions() == ["a cat", "a dog"]
    assert read_captions(tmp_path / "b.json").captions() == ["a cat", "a dog"]
    assert read_captions(tmp_path / "c.csv").captions() == ["a cat, sitting", "a dog"]
    assert read_captions(tmp_path / "a.txt").data_id != read_captions(tmp_path / "c.csv").data_id


@pytest.mark.parametrize(
    "dataset,fixture", [("cirr", "cirr_standin"), ("fashioniq", "fiq_standin"), ("circo", "circo_standin")]
)
def test_evaluate_lincir_on_the_standins(dataset, fixture, request, protocol_env, tiny_recipe, tmp_path, capsys):
    root = request.getfixturevalue(fixture)
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(ShapesWorld(WorldConfig.quick()).caption_corpus(40)))
    base = ["evaluate", "--dataset", dataset, "--dataset-path", str(root), "--method", "lincir", *CLI]
    code = main(base)
    err = capsys.readouterr().err
    assert code == 2 and "--captions FILE" in err and "Traceback" not in err
    code = main([*base, "--captions", str(captions), "--json"])
    metrics = flatten(json.loads(capsys.readouterr().out.splitlines()[-1]))
    assert code == 0 and metrics and all(0 <= v <= 100 for v in metrics.values())


def test_cli_table_and_notebook_engine_agree(tmp_path, monkeypatch, tiny_recipe, one_thread, capsys):
    """The same LinCIR numbers through ``searle evaluate``, ``searle table`` and notebook 4's engine
    (one cache: the φ trained by the first is loaded by the others, so this checks the pipelines)."""
    from searle_core.notebook.study import open_study
    from searle_core.report.table import evaluate_methods

    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "data"))
    shapes = ["--dataset", "shapes", "--quick", "--pretrained", "none", "--device", "cpu", "--no-progress"]
    assert main(["evaluate", *shapes, "--method", "lincir"]) == 0
    out = capsys.readouterr().out
    assert "modality gap: cosine between φ's tokens" in out
    assert main(["evaluate", *shapes, "--method", "lincir", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out.splitlines()[-1])
    code = main(["table", *shapes, "--methods", "lincir", "--compare-to", "none", "--out", str(tmp_path), "--json"])
    assert code == 0
    table = json.loads(capsys.readouterr().out.splitlines()[-1])["lincir"]
    study = open_study("shapes", quick=True, pretrained="none", device="cpu", seed=SEED)
    engine = evaluate_methods(study.bench, study.backbone, ["lincir"], study.context(), None).rows[0].metrics
    theirs = {k: v for k, v in table.items() if k not in ("seconds", "train_seconds", "variant")}
    assert cli == pytest.approx(theirs, abs=1e-9) and engine == pytest.approx(cli, abs=1e-9)


def test_paper_lincir_numbers_are_the_original_models_without_a_difference():
    import pandas as pd

    from searle_core.report.paper_numbers import compare_with_paper, paper_results

    lincir = paper_results().query("backbone == 'ViT-L-14' and method == 'lincir'").set_index(["dataset", "metric"])
    assert lincir.value[("circo", "mAP@10")] == pytest.approx(13.58)
    assert lincir.value[("cirr", "Recall@1")] == pytest.approx(25.04)
    assert lincir.value[("fashioniq", "average/Recall@10")] == pytest.approx(26.28)
    ours = pd.DataFrame(
        [("fashioniq", "val", "ViT-L-14", method, "average/Recall@10", 20.0) for method in ("lincir", "searle")],
        columns=["dataset", "split", "backbone", "method", "metric", "value"],
    )
    out = compare_with_paper(ours).set_index("method")
    assert out.loc["lincir", "paper"] == pytest.approx(26.28) and pd.isna(out.loc["lincir", "diff"])
    assert not pd.isna(out.loc["searle", "diff"])  # the paper's own method on its split keeps its difference
    # a row computed from the original checkpoint (its file in phi_source) is the paper's model: a difference
    original = compare_with_paper(ours.assign(phi_source=["lincir_large.pt", ""])).set_index("method")
    assert (
        original.loc["lincir", "diff"] == pytest.approx(20.0 - 26.28)
        and original.loc["lincir", "paper_label"] == "paper"
    )


def test_the_original_checkpoint_is_evaluated_with_clips_preprocessing_and_labelled(
    cirr_standin, protocol_env, tmp_path, capsys
):
    """``searle evaluate --method lincir --lincir-checkpoint FILE`` on a real-annotation stand-in: CLIP's
    preprocessing (the official evaluation's) without a flag, said in the settings line with the checkpoint;
    ``--preprocess targetpad`` still chooses SEARLE's, and other methods keep targetpad."""
    from searle_core.clip.backbone import load_backbone
    from searle_core.report.table import row_settings, settings_record

    torch.save(
        {"epoch": 3, "Phi": Phi.for_backbone(load_backbone("shapes-clip", None, "cpu")).state_dict()}, tmp_path / "p.pt"
    )
    base = ["evaluate", "--dataset", "cirr", "--dataset-path", str(cirr_standin), *CLI]
    assert main([*base, "--method", "lincir", "--lincir-checkpoint", str(tmp_path / "p.pt")]) == 0
    out = capsys.readouterr().out
    assert "preprocess clip;" in out and "Settings: preprocessing clip;" in out
    assert f"LinCIR's φ the original checkpoint {tmp_path / 'p.pt'}, not re-implemented" in out
    assert (
        main([*base, "--method", "lincir", "--lincir-checkpoint", str(tmp_path / "p.pt"), "--preprocess", "targetpad"])
        == 0
    )
    assert "Settings: preprocessing targetpad;" in capsys.readouterr().out
    assert main([*base, "--method", "image-only"]) == 0
    assert "Settings: preprocessing targetpad;" in capsys.readouterr().out
    from searle_core.methods.context import MethodContext

    record = settings_record(load_backbone("shapes-clip", None, "cpu"), MethodContext(checkpoints={"lincir": "x.pt"}))
    assert row_settings(record, "lincir")[-1] == "x.pt" and row_settings(record, "searle-oti")[-1] == ""


def test_lincir_recipe_flags(cirr_standin):
    """The official recipe by name, and batch size, steps, precision and keywords from the command line."""
    from searle_core.cli.evaluate import lincir_from_settings
    from searle_core.settings import RunSettings

    assert lincir_from_settings(RunSettings(dataset="cirr")) is None  # the dataset's recipe (jobs.evaluation)
    official = lincir_from_settings(RunSettings(dataset="cirr", lincir_recipe="official", seed=3))
    assert official == LincirConfig.official(seed=3) and (official.batch_size, official.steps) == (512, 20_000)
    given = RunSettings(dataset="shapes", lincir_steps=7, lincir_batch_size=5, lincir_precision="bf16")
    config = lincir_from_settings(given)
    assert (config.steps, config.batch_size, config.precision, config.keywords) == (7, 5, "bf16", "closed-class")
    flags = ["--lincir-keywords", "closed-class", "--lincir-steps", "9", "--lincir-batch-size", "4"]
    from searle_core.cli import build_parser
    from searle_core.cli.common import settings_from_args

    args = build_parser().parse_args(["evaluate", "--dataset", "cirr", "--method", "lincir", *flags])
    config = lincir_from_settings(settings_from_args(args))
    assert (config.keywords, config.steps, config.batch_size, config.precision) == ("closed-class", 9, 4, "fp32")


# ---- LinCIR as its authors run it: the official loop, validate.py's query features, train_phi.py's defaults ----
#: A stand-in for spaCy's en_core_web_sm: fixed POS tags from a small lexicon, tokens split as spaCy splits
#: punctuation and "'s". Both sides of the masking test use it, so it checks the loop, not the tagger.
_TAGS = {
    "DET": "a an the this these those that some no every each any another both all",
    "ADP": "of in on at with by for from to into onto near behind under over above below beside between through",
    "PRON": "it its he his she her they their them him you we i one",
    "AUX": "is are was were be been has have had do does can will should",
    "CCONJ": "and or but",
    "VERB": "change make replace remove add put hold holding holds show shows looking sitting standing lying",
    "ADV": "instead more less very also only now",
    "ADJ": "red blue green black white small large big other same different brown yellow wooden",
}
_TAG = {w: tag for tag, words in _TAGS.items() for w in words.split()}


class _Token:
    def __init__(self, text: str):
        self.text = text
        self.pos_ = _TAG.get(text) or ("PUNCT" if not text[0].isalnum() else "NUM" if text.isdigit() else "NOUN")


def standin_nlp(caption: str) -> list[_Token]:
    import re

    return [_Token(t) for t in re.findall(r"'s\b|\w+|[^\w\s]", caption)]


def _real_captions(n: int = 12) -> list[str]:
    from standins import need

    cirr = json.loads((need("cirr/captions/cap.rc2.val.json")).read_text())
    circo = json.loads((need("circo/annotations/val.json")).read_text())
    return [q["caption"] for q in cirr[: n // 2]] + [q["relative_caption"] for q in circo[: n // 2]]


#: Captions for the rules the real files may not hit: <PERSON>, no keyword at all (the random-word fallback),
#: and one longer than CLIP's 75 tokens.
RULE_CAPTIONS = [
    "<PERSON> holding a red umbrella near the car",
    "is sitting on it and holding it",
    "an image-generation prompt, ultra detailed, " + ", ".join(f"red flower {i}" for i in range(40)) + ", the end",
]


def _official(captions: list[str], tokenizer, seed: int, extract=official_keywords, cut: bool = True) -> list[str]:
    """The official loop, ``[$]`` written as the project's ``$`` (both split words off the same way)."""
    sot, eot = tokenizer.encoder["<start_of_text>"], tokenizer.encoder["<end_of_text>"]
    encode = (lambda c: [sot, *tokenizer.encode(c), eot]) if cut else (lambda c: [])
    rng, out = random.Random(seed), []
    for caption in captions:
        cleaned = official_clean_caption(caption, encode, lambda ids: tokenizer.decode(ids).strip())
        masked = " ".join(official_masked_caption(cleaned, standin_nlp, rng, extract).replace("[$]", " $ ").split())
        out.append(masked if "$" in masked.split() else "a photo of $")
    return out


def test_masking_equals_the_official_loop_on_tagged_captions(random_backbone):
    """Real CIRR and CIRCO captions and the rule captions, masked by the restated official loop and by the
    project with the same tagger: equal. Controls: the official loop without DET in its tags, or without its
    75-token cut before masking, differs."""
    captions = _real_captions() + RULE_CAPTIONS
    tokenizer = random_backbone.tokenizer
    ours = mask_corpus(captions, 7, tagged_keyword_runs(standin_nlp), tokenizer)
    official = _official(captions, tokenizer, 7)
    assert [m.masked for m in ours] == official
    assert ours[-3].caption.startswith("person holding") and ours[-3].masked == "$ holding $ near $"
    assert ours[-2].drawn and len(tokenizer.encode(ours[-1].caption)) == 75
    no_det = lambda nlp, c: official_keywords(lambda t: [x for x in nlp(t) if x.pos_ != "DET"], c)
    assert _official(captions, tokenizer, 7, extract=no_det) != official
    assert _official(captions, tokenizer, 7, cut=False)[-1] != official[-1]


def test_spacy_is_the_default_and_its_absence_is_one_clear_message(monkeypatch):
    """Real captions are tagged by spaCy unless the approximation is chosen by name; without spaCy or its
    model, the message says how to install both and how to choose ``closed-class``."""
    import sys

    assert LincirConfig().keywords == "spacy"
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy raises ImportError
    with pytest.raises(InputError, match="pip install spacy && python -m spacy download en_core_web_sm") as err:
        mask_corpus(["a cat"], 0)
    assert "--lincir-keywords closed-class" in str(err.value)
    assert mask_corpus(["a cat"], 0, "closed-class")[0].masked == "$"


def test_the_real_spacy_tagger_matches_the_official_loop():
    spacy = pytest.importorskip("spacy", reason="spaCy is not installed (pip install spacy)")
    try:
        nlp = spacy.load("en_core_web_sm")
    except OSError:
        pytest.skip("spaCy's en_core_web_sm is not installed (python -m spacy download en_core_web_sm)")
    captions = _real_captions()
    ours = [m.masked for m in mask_corpus(captions, 3, tagged_keyword_runs(nlp))]
    rng = random.Random(3)
    theirs = [" ".join(official_masked_caption(c.lower(), nlp, rng).replace("[$]", " $ ").split()) for c in captions]
    assert ours == theirs


def test_a_drawn_word_is_redrawn_at_every_visit(random_backbone, monkeypatch):
    """As the official ``__getitem__``: a caption whose keyword is missing gets a new random word each time
    it is visited, not one drawn once."""
    seen = []
    real = lincir_loss

    def spy(phi, backbone, original, masked, config, generator=None):
        seen.append(masked[0].tolist())
        return real(phi, backbone, original, masked, config, generator)

    monkeypatch.setattr("searle_core.baselines.lincir.lincir_loss", spy)
    # "one" is found, "missing" is not: "one" stays masked and one more word is drawn at each visit
    monkeypatch.setattr("searle_core.baselines.lincir.keyword_runs", lambda caption: ["one", "missing"])
    config = LincirConfig(steps=12, batch_size=1, keywords="closed-class", seed=0)
    train_lincir(random_backbone, ["one two three four five six seven eight"], config, progress=False)
    assert len({tuple(s) for s in seen}) > 3
    dollar, one = random_backbone.dollar_token_id, random_backbone.tokenize(["one"])[0, 1]
    assert all(s[1] == dollar and one not in s for s in seen)  # "one" masked at every visit, as the official


def test_query_features_are_the_official_validate_formula(random_backbone, cirr_standin):
    """LinCIR's query features on a CIRR stand-in (CLIP's preprocessing, the official evaluation's) against
    ``validate.py``'s formula restated: to 1e-5. Controls: φ fed L2-normalised image features, or Pic2Word's
    prompt, differ."""
    from searle_core.datasets import load_benchmark
    from searle_core.datasets.features import configure_images
    from searle_core.methods.context import MethodContext
    from searle_core.methods.pipeline import query_features

    bb = configure_images(random_backbone, "clip")
    bench = load_benchmark("cirr", cirr_standin, "val")
    torch.manual_seed(1)
    phi = Phi.for_backbone(bb).eval()
    ours = query_features("lincir", bb, bench, MethodContext(networks={"lincir": phi}, progress=False))
    size = bb.model.visual.image_size
    transform = official_clip_preprocess(size if isinstance(size, int) else size[0])
    images = torch.stack([transform(bench.images.load_image(q.reference)) for q in bench.queries])
    captions = [q.captions[0] for q in bench.queries]
    official = lambda net=phi, **kw: official_query_features(bb.model, bb.tokenize, net, images, captions, **kw)
    assert (ours - official()).abs().max() < 1e-5
    assert (ours - official(lambda x: phi(F.normalize(x, dim=-1)))).abs().max() > 1e-3
    assert (ours - official(prompt="a photo of $ , {}")).abs().max() > 1e-3


def test_training_has_the_official_dropout_and_optimiser(random_backbone, monkeypatch):
    """``LincirConfig()`` is train_phi.py's argparse defaults, ``LincirConfig.official()`` its README's run, and
    training runs φ in train mode with that dropout and AdamW with that lr and weight decay."""
    assert (LincirConfig().lr, LincirConfig().weight_decay, LincirConfig().dropout, LincirConfig().batch_size) == (
        OFFICIAL_ARGS["learning_rate"],
        OFFICIAL_ARGS["weight_decay"],
        OFFICIAL_ARGS["phi_dropout"],
        OFFICIAL_ARGS["batch_size"],
    )
    run = LincirConfig.official()
    assert (run.batch_size, run.steps, run.precision) == tuple(README_RUN.values())
    seen = {}
    real_loss, real_adamw = lincir_loss, torch.optim.AdamW

    def spy(phi, *args):
        seen["dropout"] = [m.p for m in phi.modules() if isinstance(m, torch.nn.Dropout)]
        seen["training"] = phi.training
        return real_loss(phi, *args)

    class AdamW(real_adamw):
        def __init__(self, params, **kwargs):
            seen["optimiser"] = kwargs
            super().__init__(params, **kwargs)

    monkeypatch.setattr("searle_core.baselines.lincir.lincir_loss", spy)
    monkeypatch.setattr(torch.optim, "AdamW", AdamW)
    config = LincirConfig(steps=1, batch_size=2, keywords="closed-class")
    train_lincir(random_backbone, ["a red circle", "a blue square"], config, progress=False)
    assert seen["training"] and seen["dropout"] == [OFFICIAL_ARGS["phi_dropout"]] * 2
    assert seen["optimiser"] == {"lr": OFFICIAL_ARGS["learning_rate"], "weight_decay": OFFICIAL_ARGS["weight_decay"]}


def test_the_official_caption_sets_by_name_and_local_copies_in_their_schema(tmp_path, monkeypatch):
    """``--captions`` takes the official sets by name (read with Hugging Face ``datasets``, streamed) and a local
    parquet or JSON-lines file in their schema (a ``text`` column), read by the same code; offline, one line
    names the set and says how to point at a local copy."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))  # read before its first import
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets is not installed (pip install datasets)")
    import pandas as pd

    from reference.lincir import OFFICIAL_CORPORA as THEIRS
    from searle_core.baselines.lincir import OFFICIAL_CORPORA, caption_corpus

    assert OFFICIAL_CORPORA == THEIRS
    rows = pd.DataFrame({"text": ["A cat on a mat", None, "<PERSON> rides a horse"], "other": [1, 2, 3]})
    rows.to_parquet(tmp_path / "gcc.parquet")
    rows.to_json(tmp_path / "gcc.jsonl", orient="records", lines=True)
    for name in ("gcc.parquet", "gcc.jsonl"):
        assert caption_corpus(str(tmp_path / name)).captions() == ["A cat on a mat", "", "<PERSON> rides a horse"]
    assert caption_corpus(str(tmp_path / "gcc.parquet")).data_id != caption_corpus(str(tmp_path / "gcc.jsonl")).data_id
    pd.DataFrame({"caption": ["a"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="KeyError: .text.*a .text. column"):
        caption_corpus(str(tmp_path / "bad.parquet")).captions()
    with pytest.raises(InputError, match="no such file"):
        caption_corpus(str(tmp_path / "missing.parquet"))
    calls = []

    def offline(path, *args, **kwargs):
        calls.append((path, kwargs.get("streaming")))
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    corpus = caption_corpus("official")  # lazy: nothing is read until LinCIR trains
    assert calls == [] and caption_corpus("official").data_id == corpus.data_id
    with pytest.raises(InputError) as err:
        corpus.captions()
    message = str(err.value)
    assert len(message.splitlines()) == 1 and "dangne/gcc_caption_only" in message and "local .parquet" in message
    assert calls == [("dangne/gcc_caption_only", True)]
