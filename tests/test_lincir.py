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

from searle_core.baselines.lincir import (
    LincirConfig,
    keyword_runs,
    lincir_loss,
    load_lincir,
    mask_corpus,
    mask_keywords,
    modality_gap,
    train_lincir,
)
from searle_core.cli import main
from searle_core.datasets.loaders import read_captions
from searle_core.infra.errors import InputError
from searle_core.method.phi import Phi
from searle_core.report.table import flatten
from searle_core.world import ShapesWorld, WorldConfig

#: A tiny recipe: the tests check the plumbing, not LinCIR's numbers.
TINY = LincirConfig(steps=3, batch_size=8, lr=1e-3, seed=0)


@pytest.fixture
def tiny_recipe(monkeypatch):
    """Every path trains LinCIR with :data:`TINY` on a 48-caption world corpus."""
    monkeypatch.setattr("searle_core.world.shapes_world.CORPUS_CAPTIONS", 48)
    # the official default on real datasets (50,000 steps) cut to TINY's length as well
    monkeypatch.setattr("searle_core.jobs.evaluation.lincir_config", lambda bench, ctx: TINY)


def test_keywords_and_masking_follow_the_official_loader():
    caption = "a photo of a small red circle on a black background that is red"
    assert keyword_runs(caption) == ["a photo", "a small red circle", "a black background", "red"]
    masked = mask_keywords(caption, keyword_runs(caption), random.Random(0))
    # every occurrence: "red" inside the already-masked run is gone, the clause's "red" too
    assert masked == "$ of $ on $ that is $"
    # a keyword missing verbatim: one random word replaced instead, and the loop stops there
    assert mask_keywords("the cat sits", ["a dog", "cat"], random.Random(1)) in (
        "$ cat sits",
        "the $ sits",
        "the cat $",
    )
    out = mask_corpus(["A $5 Cat sits"], seed=0)[0]
    # "a" and "cat" are separate runs (a number breaks them); str.replace also hits the "a" of "cat"
    assert out.caption == "a 5 cat sits" and out.masked == "$ 5 c $ t sits" and not out.flagged


def test_loss_is_the_mse_of_the_masked_caption_with_phi_token_in_every_dollar_row(random_backbone):
    """The loss against a plain restatement: the caption "a red circle that is red" masked to
    "$ that is $", both `$` rows given φ(t + u·ε), features compared with t by mean squared error."""
    bb = random_backbone
    caption = "a red circle that is red"
    masked = mask_corpus([caption], seed=0)[0].masked
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
    config = LincirConfig(steps=60, batch_size=32, lr=1e-3, noise=0.0, dropout=0.0, seed=0)
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
