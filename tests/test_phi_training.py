"""φ training: the loss is φ's loss, validation joins the history, resume == uninterrupted."""

import csv
import json
import random

import pytest
import torch
from cli_helpers import TINY_OTI as OTI
from cli_helpers import (
    fails,
    reference,  # noqa: F401
    searle,
    snapshot,
)
from cli_helpers import kill_repeatedly as _kill_repeatedly
from standins import cirr_standin  # noqa: F401

from searle_core.jobs.phi_run import train_phi_in_folder
from searle_core.method.encoding import encode_with_pseudo_tokens
from searle_core.method.losses import cosine_loss, nt_xent_loss
from searle_core.method.phi import Phi, PhiLossConfig, phi_loss, phi_sampler
from searle_core.method.phi_training import PhiTrainConfig, derive_seed, train_phi
from searle_core.method.prefix_cache import PrefixCachedEncoder
from searle_core.method.regulariser import PhraseFeatureCache, TokenCache

pytestmark = pytest.mark.usefixtures("one_thread")

BANK = {
    "circle": ["a circle on a table", "a small circle", "a photo of a circle that is red"],
    "square": ["a square in the sky", "a photo of a square that is large"],
    "star": ["a bright star", "a star and a moon"],
}
CONFIG = PhiTrainConfig(epochs=3, batch_size=8, lr=1e-3, loss=PhiLossConfig(top_concepts=2), seed=3)


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def data(random_backbone):
    gen = torch.Generator().manual_seed(0)
    n = 20
    feats = torch.nn.functional.normalize(torch.randn(n, random_backbone.embed_dim, generator=gen), dim=-1)
    tokens = torch.randn(n, random_backbone.token_dim, generator=gen) * 0.02
    rng = random.Random(0)
    concepts = [rng.sample(list(BANK), 3) for _ in range(n)]
    return feats, tokens, concepts


def final_state(result):
    return {k: v.clone() for k, v in result.phi.state_dict().items()}


def test_training_lowers_loss_and_writes_history(random_backbone, data, tmp_path):
    feats, tokens, concepts = data
    calls = []

    def validate(phi):
        calls.append(phi.training)
        return {"score": float(len(calls)), "per_category": {"dress": 1.0}}

    result = train_phi_in_folder(
        random_backbone, feats, tokens, concepts, BANK, CONFIG, validate=validate, out_dir=tmp_path, progress=False
    )
    h = result.history
    assert [row["epoch"] for row in h] == [1, 2, 3]
    assert h[-1]["distil"] < h[0]["distil"]
    for row in h:
        assert row["total"] == pytest.approx(row["distil"] + 0.75 * row["gpt"], rel=1e-6)
        assert row["gpt"] > 0
    assert calls == [False, False, False]  # validated in eval mode, every epoch
    assert h[2]["score"] == 3.0 and h[0]["per_category/dress"] == 1.0
    assert not result.phi.training
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and float(rows[2]["score"]) == 3.0
    saved = torch.load(tmp_path / "phi.pt", weights_only=True)
    assert set(saved["Phi"]) == set(result.phi.state_dict())  # the authors' layout
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert saved["epoch"] == manifest["epoch"] == 3  # the φ epoch phi.pt holds, as the authors' {"epoch", "Phi"}
    assert manifest["hyperparameters"]["precision"] == "fp32"  # CPU: fp32 (CUDA: fp16 + GradScaler)


def test_resumed_training_equals_uninterrupted(random_backbone, data, tmp_path):
    feats, tokens, concepts = data
    full = train_phi_in_folder(
        random_backbone, feats, tokens, concepts, BANK, CONFIG, out_dir=tmp_path / "full", progress=False
    )

    def fail_in_epoch_2(phi):
        if fail_in_epoch_2.epochs == 1:
            raise Interrupted("killed during epoch 2")
        fail_in_epoch_2.epochs += 1
        return {}

    fail_in_epoch_2.epochs = 0
    with pytest.raises(Interrupted):
        train_phi_in_folder(
            random_backbone,
            feats,
            tokens,
            concepts,
            BANK,
            CONFIG,
            validate=fail_in_epoch_2,
            out_dir=tmp_path / "cut",
            progress=False,
        )
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    resumed = train_phi_in_folder(
        random_backbone, feats, tokens, concepts, BANK, CONFIG, out_dir=tmp_path / "cut", resume=True, progress=False
    )
    for key, value in final_state(full).items():
        assert torch.equal(value, resumed.phi.state_dict()[key]), key
    last = torch.load(tmp_path / "cut" / "phi_last.pt", weights_only=True)
    assert last["epoch"] == 3 and all(torch.equal(v, last["Phi"][k]) for k, v in final_state(full).items())
    strip = lambda h: [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in h]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)


def test_epoch_files_in_the_authors_layout_and_run_epoch_checkpoints(random_backbone, data, tmp_path):
    """``phi_5.pt`` and ``phi_10.pt`` (every 5 epochs), ``phi_last.pt`` (every epoch), each
    ``{"epoch", "Phi"}``; ``--phi-checkpoint RUN:5`` loads the φ of epoch 5, which is the φ of a
    5-epoch run; the validation history is in the folder; a resumed run writes them too."""
    import dataclasses

    from searle_core.inversion.phi_files import load_phi

    feats, tokens, concepts = data
    config = dataclasses.replace(CONFIG, epochs=11)
    run = tmp_path / "run"
    train_phi_in_folder(
        random_backbone, feats, tokens, concepts, BANK, config, out_dir=run, progress=False, validate=lambda p: {"s": 1}
    )
    assert sorted(p.name for p in run.glob("phi*.pt")) == ["phi.pt", "phi_10.pt", "phi_5.pt", "phi_last.pt"]
    for name, epoch in (("phi_5.pt", 5), ("phi_10.pt", 10), ("phi_last.pt", 11)):
        saved = torch.load(run / name, weights_only=True)
        assert set(saved) == {"epoch", "Phi"} and saved["epoch"] == epoch, name
    five = train_phi_in_folder(
        random_backbone,
        feats,
        tokens,
        concepts,
        BANK,
        dataclasses.replace(config, epochs=5),
        out_dir=tmp_path / "5",
        progress=False,
    )
    at_five = load_phi(f"{run}:5", random_backbone)
    assert at_five.epoch == 5 and at_five.source == str(run / "phi_5.pt")
    for key, value in five.phi.state_dict().items():
        assert torch.equal(value, at_five.state_dict()[key]), key
    assert load_phi(f"{run}:last").epoch == 11 and load_phi(str(run)).epoch == 11
    with pytest.raises(FileNotFoundError, match="phi_10.pt, phi_5.pt, phi_last.pt"):
        load_phi(f"{run}:7")
    with pytest.raises(ValueError, match="a number or 'last'"):
        load_phi(f"{run}:best")
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 12)) and all(r["s"] == "1.0" for r in rows)


def test_resume_refuses_changed_hyperparameters(random_backbone, data, tmp_path):
    feats, tokens, concepts = data
    one = PhiTrainConfig(epochs=1, batch_size=8, loss=PhiLossConfig(top_concepts=2))
    train_phi_in_folder(random_backbone, feats, tokens, concepts, BANK, one, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="--resume .* --force"):
        train_phi_in_folder(random_backbone, feats, tokens, concepts, BANK, one, out_dir=tmp_path, progress=False)
    longer = PhiTrainConfig(epochs=2, batch_size=8, loss=PhiLossConfig(top_concepts=2))
    with pytest.raises(ValueError, match=r"phi\.epochs: 1 in the run, 2 now"):
        train_phi_in_folder(
            random_backbone, feats, tokens, concepts, BANK, longer, out_dir=tmp_path, resume=True, progress=False
        )
    with pytest.raises(ValueError, match="data"):
        train_phi_in_folder(
            random_backbone, feats, tokens * 2, concepts, BANK, one, out_dir=tmp_path, resume=True, progress=False
        )
    result = train_phi_in_folder(
        random_backbone,
        feats,
        tokens,
        concepts,
        BANK,
        longer,
        out_dir=tmp_path,
        resume=True,
        force=True,
        progress=False,
    )
    assert [row["epoch"] for row in result.history] == [1, 2]  # the first epoch was not redone


def test_phi_loss_is_the_plain_formula_and_shards_add_up(random_backbone, data):
    """φ's one loss, with the prefix-cached encoder, equals NT-Xent plus the plain cosine of the drawn
    phrases; split over 3 ranks, the ranks' phrase shares add up to it."""
    feats, tokens, concepts = data
    bb = random_backbone
    torch.manual_seed(0)
    phi = Phi.for_backbone(bb).eval()
    idx = torch.tensor([3, 0, 7, 11, 19])
    cfg = PhiLossConfig(top_concepts=2)
    draw = phi_sampler(concepts, BANK, cfg.top_concepts, seed=9).draw(idx.tolist())
    assert draw.rows
    predicted = phi(feats[idx])
    encode = PrefixCachedEncoder(bb.model, bb.dollar_token_id)
    args = (predicted, feats[idx], tokens[idx], draw, PhraseFeatureCache(bb), encode, TokenCache(bb), cfg)
    distil, gpt = phi_loss(*args)
    plain = encode_with_pseudo_tokens(
        bb.model, bb.tokenize(draw.pseudo_phrases), predicted[draw.rows], bb.dollar_token_id
    )
    expected_gpt = cosine_loss(plain, PhraseFeatureCache(bb).features(draw.phrases))
    assert distil.item() == pytest.approx(nt_xent_loss(predicted, tokens[idx], cfg.temperature).item(), abs=1e-6)
    assert gpt.item() == pytest.approx(expected_gpt.item(), abs=1e-5)
    shares = [phi_loss(*args, world_size=3, rank=r)[1] for r in range(3)]
    assert sum(s.item() for s in shares) == pytest.approx(gpt.item(), abs=1e-5)


def test_no_regulariser_and_seeds(random_backbone, data):
    feats, tokens, _ = data
    cfg = PhiTrainConfig(epochs=1, batch_size=8, seed=1)
    a = train_phi(random_backbone, feats, tokens, None, None, cfg, progress=False)
    b = train_phi(random_backbone, feats, tokens, None, None, cfg, progress=False)
    assert a.history[0]["gpt"] == 0.0
    assert all(torch.equal(x, y) for x, y in zip(a.phi.state_dict().values(), b.phi.state_dict().values()))
    assert derive_seed(1, 0, "order") != derive_seed(1, 1, "order")
    with pytest.raises(ValueError, match="20 image feature rows but 19 OTI tokens"):
        train_phi(random_backbone, feats, tokens[:19], None, None, cfg, progress=False)


# ---- fault cases (@pytest.mark.audit_open; helpers in cli_helpers.py) ----
def _train_phi(oti, out, epochs: int) -> list:
    """``searle train-phi`` on a tiny OTI run: small batches on the CPU, quiet, no validation."""
    quiet = ["--device", "cpu", "--no-progress", "--val-dataset", "none"]
    return ["train-phi", "--oti-tokens", oti, "--out", out, "--phi-epochs", str(epochs), "--batch-size", "4", *quiet]


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_train_phi_on_a_folder_without_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    fails(
        capsys,
        ["train-phi", "--oti-tokens", tmp_path / "empty", "--out", tmp_path / "phi"],
        tmp_path / "empty",
        "no manifest.json",
    )
    assert not (tmp_path / "phi").exists()


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_train_phi_takes_the_backbone_from_the_oti_run(tmp_path, capsys):
    # Random weights drawn under --seed 7: train-phi's own --seed (42) must not change the CLIP.
    out = tmp_path / "oti7"
    assert searle(capsys, *[a if a != "5" else "7" for a in OTI], "--out", out)[0] == 0
    status, _, err = searle(capsys, *_train_phi(out, tmp_path / "phi", epochs=1))
    assert status == 0, err
    assert (tmp_path / "phi/phi.pt").is_file()


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
@pytest.mark.parametrize("recorded", [True, False], ids=["backbone-args", "old-manifest"])
def test_train_phi_loads_the_world_clip_a_quick_run_used(tmp_path, capsys, monkeypatch, recorded):
    import searle_core.cli.runs as runs
    from searle_core.infra.errors import InputError

    folder = tmp_path / "oti"
    folder.mkdir()
    info = {"dataset": "shapes", "split": "pretrain"}
    if recorded:
        info["backbone_args"] = {"backbone": "shapes-clip", "pretrained": "default", "quick": True, "seed": 42}
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "kind": "oti",
                "info": info,
                "hyperparameters": {"backbone": "shapes-clip", "weights": "shapes-clip-0123abcd.pt-4096-1700000000"},
            }
        )
    )
    seen = {}

    def stop(args):
        seen.update(backbone=args.backbone, pretrained=args.pretrained, quick=args.quick)
        raise InputError("stopped after choosing the backbone")  # a user error: the CLI's one-line path

    monkeypatch.setattr(runs, "load_backbone_from_args", stop)
    fails(capsys, ["train-phi", "--oti-tokens", folder, "--out", tmp_path / "phi"], "stopped after choosing")
    assert seen == {"backbone": "shapes-clip", "pretrained": "default", "quick": recorded}


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_train_phi_resume_with_a_changed_setting(reference, tmp_path, capsys):
    phi = _train_phi(tmp_path / "reference", tmp_path / "phi", epochs=2)
    assert searle(capsys, *phi)[0] == 0
    before = snapshot(tmp_path / "phi")
    fails(capsys, [*phi, "--resume", "--lr", "0.001"], "phi.lr: 0.0001 in the run, 0.001 now")
    assert snapshot(tmp_path / "phi") == before


KILL_PHI = [
    "train-phi",
    "--phi-epochs",
    "40",
    "--batch-size",
    "4",
    "--device",
    "cpu",
    "--no-progress",
    "--val-dataset",
    "none",
]


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
@pytest.mark.slow
def test_train_phi_killed_at_random_points_resumes_to_identical_weights(reference, tmp_path, capsys):
    tokens = tmp_path / "reference"
    whole = [*KILL_PHI, "--oti-tokens", tokens, "--out", tmp_path / "whole"]
    status, _, err = searle(capsys, *whole)
    assert status == 0, err
    out = tmp_path / "killed"

    def epochs() -> int:
        history = out / "history.csv"
        return max(0, len(history.read_text().splitlines()) - 1) if history.is_file() else 0

    kills = _kill_repeatedly(
        [*KILL_PHI, "--oti-tokens", tokens, "--out", out], tmp_path, epochs, [3, 20], random.Random(41)
    )
    assert kills >= 2
    got = torch.load(out / "phi.pt", weights_only=True)["Phi"]
    want = torch.load(tmp_path / "whole/phi.pt", weights_only=True)["Phi"]
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_an_epoch_equals_the_authors_train_phi_loop(random_backbone, monkeypatch):
    """Two epochs of ``train_phi`` against the authors' ``train_one_epoch`` restated (reference/authors.py), on
    raw (unnormalised) features with the same order and dropout seeds: every step's gradients and the final
    weights agree. Controls: the authors' loop on normalised features, or its loss divided by
    λ_distil + λ_gpt, differs in the gradients."""
    import searle_core.method.phi_training as training
    from reference.authors import TheirPhi, their_phi_step

    bb = random_backbone
    gen = torch.Generator().manual_seed(5)
    feats = 3 * torch.randn(12, bb.embed_dim, generator=gen)  # raw features: not unit norm
    tokens = torch.randn(12, bb.token_dim, generator=gen) * 0.02
    cfg = PhiTrainConfig(epochs=2, batch_size=4, seed=11, precision="fp32", prefix_cache=False)
    ours_grads = []
    real_step = training.scaled_step

    def recording_step(loss, optimizer, scaler):
        loss.backward()
        ours_grads.append([p.grad.clone() for g in optimizer.param_groups for p in g["params"]])
        optimizer.step()

    monkeypatch.setattr(training, "scaled_step", recording_step)
    ours = train_phi(bb, feats, tokens, None, None, cfg, progress=False)
    monkeypatch.setattr(training, "scaled_step", real_step)
    loss = cfg.loss

    def theirs(features, scale=1.0):
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            init = Phi.for_backbone(bb, cfg.dropout)
        phi = TheirPhi(bb.embed_dim, 4 * bb.embed_dim, bb.token_dim, cfg.dropout)
        phi.load_state_dict(init.state_dict())
        optimizer = torch.optim.AdamW(phi.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        grads = []
        for epoch in range(cfg.epochs):
            phi.train()
            perm = torch.randperm(12, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, epoch, "order")))
            for b in range(12 // cfg.batch_size):
                idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                torch.manual_seed(derive_seed(cfg.seed, epoch, b, "dropout"))
                args = (phi, optimizer, features[idx], tokens[idx])
                grads.append(
                    their_phi_step(*args, loss.lambda_distil * scale, loss.lambda_gpt * scale, loss.temperature)
                )
        return grads, phi

    def gap(grads):
        return max(float((a - b).abs().max()) for x, y in zip(ours_grads, grads) for a, b in zip(x, y))

    grads, phi = theirs(feats)
    assert len(grads) == len(ours_grads) == 6 and gap(grads) < 1e-6
    assert all(
        torch.allclose(a, b, atol=1e-6) for a, b in zip(ours.phi.state_dict().values(), phi.state_dict().values())
    )
    assert gap(theirs(torch.nn.functional.normalize(feats, dim=-1))[0]) > 1e-4
    assert gap(theirs(feats, 1 / (loss.lambda_distil + loss.lambda_gpt))[0]) > 1e-4


def test_a_validated_run_names_its_best_epoch_and_a_configured_benchmark_is_validated(
    random_backbone, data, tmp_path, cirr_standin
):
    """The manifest names the epoch with the best validation Recall@1 (``phi.pt`` stays the last, as the
    authors' ``phi_last.pt``); a validation folder without ``--val-dataset`` is CIRR's, the authors' choice."""
    import argparse

    from searle_core.cli.runs import _validator

    feats, tokens, _ = data
    scores = iter([5.0, 9.0, 7.0])
    config = PhiTrainConfig(epochs=3, batch_size=8, seed=3)
    kw = {"validate": lambda phi: {"Recall@1": next(scores)}, "out_dir": tmp_path / "run", "progress": False}
    train_phi_in_folder(random_backbone, feats, tokens, None, None, config, **kw)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (manifest["best_epoch"], manifest["best_by"], manifest["epoch"]) == (2, "Recall@1", 3)
    args = argparse.Namespace(val_dataset=None, val_dataset_path=str(cirr_standin), val_split="val", quick=False)
    metrics = _validator(args, random_backbone, None)(Phi.for_backbone(random_backbone).eval())
    assert "Recall@1" in metrics and "Recall_subset@1" in metrics  # CIRR's metrics
    assert _validator(argparse.Namespace(val_dataset="none", val_dataset_path=None), random_backbone, None) is None
