"""Dataset-scale OTI runs: resumed == uninterrupted, hyper-parameter checks, run-folder files."""

import csv
import fcntl
import json
import pickle
import random
from pathlib import Path

import pytest
import torch
from cli_helpers import (
    CLI,
    error_line,
    fails,
    reference,  # noqa: F401
    searle,
    snapshot,
    write_image,
)
from cli_helpers import TINY_OTI as OTI
from cli_helpers import kill_repeatedly as _kill_repeatedly

from searle_core.infra.files import atomic_save
from searle_core.jobs import OTIRunConfig, load_oti_run, run_oti
from searle_core.jobs.run_folder import hyperparameter_changes
from searle_core.method.oti import OTIConfig, batch_seed, oti
from searle_core.world import ShapesWorld, WorldConfig
from searle_core.world.setup import world_vocabulary

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = OTIRunConfig(oti=OTIConfig(steps=3), batch_size=3, seed=5)


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def world_images():
    world = ShapesWorld(WorldConfig.quick())
    return world.images, world.pretrain_names()[:10]


@pytest.fixture(scope="module")
def vocabulary():
    return world_vocabulary()


@pytest.fixture(scope="module")
def uninterrupted(random_backbone, world_images, vocabulary, tmp_path_factory):
    source, names = world_images
    folder = tmp_path_factory.mktemp("oti-full")
    return run_oti(random_backbone, source, names, vocabulary, folder, CONFIG, progress=False)


def interrupt_after(k: int, calls: list):
    def on_batch(b, names, tokens):
        calls.append(b)
        if len(calls) == k:
            raise Interrupted(f"simulated kill after {k} batches")

    return on_batch


@pytest.mark.parametrize("checkpoint_every", [1, 3])
def test_resumed_run_equals_uninterrupted(
    random_backbone, world_images, vocabulary, uninterrupted, tmp_path, checkpoint_every
):
    source, names = world_images
    calls: list[int] = []
    with pytest.raises(Interrupted):
        run_oti(
            random_backbone,
            source,
            names,
            vocabulary,
            tmp_path,
            CONFIG,
            checkpoint_every=checkpoint_every,
            progress=False,
            on_batch=interrupt_after(2, calls),
        )
    assert not (tmp_path / "tokens.pt").exists()
    chunks = list((tmp_path / "chunks").glob("*.pt"))
    assert sum(len(torch.load(c)["names"]) for c in chunks) == 6  # both finished batches were kept
    expected = [2, 3]
    if checkpoint_every == 1:  # a hard kill loses what was not checkpointed yet: here, batch 1
        max(chunks).unlink()  # names end with the count of tokens before them: the latest sorts last
        expected = [1, 2, 3]

    resumed_calls: list[int] = []
    result = run_oti(
        random_backbone,
        source,
        names,
        vocabulary,
        tmp_path,
        CONFIG,
        resume=True,
        progress=False,
        on_batch=lambda b, n, t: resumed_calls.append(b),
    )
    assert resumed_calls == expected  # only the batches not done before the interruption
    assert result.names == uninterrupted.names == names
    assert torch.equal(result.tokens, uninterrupted.tokens)
    raw = [torch.load(f / "tokens.pt", weights_only=True)["raw_tokens"] for f in (tmp_path, uninterrupted.folder)]
    assert torch.equal(*raw)  # the non-EMA tokens survive the interruption too
    assert not list((tmp_path / "chunks").glob("*.pt"))  # merged into tokens.pt
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["complete"] and [s["resumed"] for s in manifest["sessions"]] == [False, True]
    log = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["batch"]) for r in log] == [0, 1, 2, 3]  # batches of both sessions, once each
    assert all(float(r["images_per_s"]) > 0 and float(r["total"]) > 0 for r in log)


def test_run_tokens_are_plain_oti_of_each_batch(random_backbone, uninterrupted, tmp_path):
    """Batch 1 of the run is exactly `oti` on those images with the batch's own seed."""
    run = load_oti_run(uninterrupted.folder)
    inputs, tokens = run.inputs, run.tokens
    rows = [3, 4, 5]
    seed = batch_seed(CONFIG.seed, [inputs.names[i] for i in rows])
    direct = oti(
        random_backbone,
        inputs.features[rows],
        [inputs.concepts[i] for i in rows],
        world_vocabulary().phrase_bank,
        CONFIG.oti,
        seed=seed,
    )
    torch.testing.assert_close(tokens[rows], direct.tokens, atol=1e-6, rtol=0)
    # The non-EMA tokens are kept too (the authors' oti_pseudo_tokens.pt beside the EMA ones).
    raw = torch.load(uninterrupted.folder / "tokens.pt", weights_only=True)["raw_tokens"]
    torch.testing.assert_close(raw[rows], direct.raw_tokens, atol=1e-6, rtol=0)
    assert not torch.allclose(raw, tokens)
    assert tokens.shape == (10, random_backbone.token_dim)
    assert len(inputs.concepts[0]) > CONFIG.oti.top_concepts  # φ's longer concept lists are stored too


def test_changed_hyperparameter_refused_unless_forced(random_backbone, world_images, vocabulary, tmp_path):
    source, names = world_images
    with pytest.raises(Interrupted):
        run_oti(
            random_backbone,
            source,
            names,
            vocabulary,
            tmp_path,
            CONFIG,
            progress=False,
            on_batch=interrupt_after(1, []),
        )
    changed = OTIRunConfig(oti=OTIConfig(steps=4), batch_size=3, seed=5)
    with pytest.raises(ValueError, match=r"oti\.steps: 3 in the run, 4 now"):
        run_oti(random_backbone, source, names, vocabulary, tmp_path, changed, resume=True, progress=False)
    with pytest.raises(ValueError, match="names"):
        run_oti(random_backbone, source, names[:9], vocabulary, tmp_path, CONFIG, resume=True, progress=False)
    result = run_oti(
        random_backbone, source, names, vocabulary, tmp_path, changed, resume=True, force=True, progress=False
    )
    assert result.tokens.shape[0] == 10
    sessions = result.manifest["sessions"]
    assert sessions[-1]["forced_changes"] == ["oti.steps: 3 in the run, 4 now"]
    assert result.manifest["hyperparameters"]["oti"]["steps"] == 4


def test_existing_run_needs_resume_or_force(random_backbone, world_images, uninterrupted, tmp_path):
    source, names = world_images
    with pytest.raises(ValueError, match="--resume .* --force"):
        run_oti(random_backbone, source, names, None, uninterrupted.folder, CONFIG, progress=False)
    again = run_oti(
        random_backbone, source, names, world_vocabulary(), uninterrupted.folder, CONFIG, resume=True, progress=False
    )  # finished: nothing left to do
    assert torch.equal(again.tokens, uninterrupted.tokens)
    with pytest.raises(FileNotFoundError, match="no OTI run"):
        load_oti_run(tmp_path)


def test_manifest_records_hyperparameters_and_code_version(uninterrupted):
    manifest = uninterrupted.manifest
    hyper = manifest["hyperparameters"]
    assert hyper["oti"]["steps"] == 3 and hyper["batch_size"] == 3 and hyper["seed"] == 5
    assert hyper["backbone"] == "shapes-clip" and hyper["weights"].startswith("random-")
    assert hyper["precision"] == "fp32"  # resolved from "auto" on the CPU
    assert manifest["code_version"]["package"]
    assert "git_commit" in manifest["code_version"]


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "x.pt"
    atomic_save({"a": 1}, path)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        atomic_save({"a": lambda: None}, path)  # cannot be pickled: fails mid-write
    assert torch.load(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temporary left behind


def test_hyperparameter_changes_names_nested_fields():
    assert hyperparameter_changes({"oti": {"lr": 0.02}, "seed": 1}, {"oti": {"lr": 0.01}, "seed": 1}) == [
        "oti.lr: 0.02 in the run, 0.01 now"
    ]


# ---- fault cases (@pytest.mark.audit_open; helpers in cli_helpers.py) ----
@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_resume_on_another_dataset_path_names_both(tmp_path, capsys):
    first, second = tmp_path / "images_a", tmp_path / "images_b"
    for i in range(4):  # the same names, other pixels: resuming would mix two datasets' tokens
        write_image(first / f"{i}.png", i)
        write_image(second / f"{i}.png", 50 + i)
    args = ["oti", "--dataset", "imagenet", *CLI, "--oti-steps", "2", "--oti-batch-size", "2"]
    args += ["--out", tmp_path / "run"]
    status, _, err = searle(capsys, *args, "--dataset-path", first)
    assert status == 0, err
    before = snapshot(tmp_path / "run")
    fails(capsys, [*args, "--dataset-path", second, "--resume"], first, second, "--dataset-path")
    assert {k: v for k, v in snapshot(tmp_path / "run").items() if "manifest" not in k} == {
        k: v for k, v in before.items() if "manifest" not in k
    }


def _tokens(folder: Path) -> torch.Tensor:
    return torch.load(folder / "tokens.pt", weights_only=True)["tokens"]


def _interrupted_run(tmp_path, capsys, monkeypatch, after: int = 2) -> Path:
    """A run stopped by Ctrl-C after ``after`` batches: chunks on disk, no tokens.pt."""
    import searle_core.method.oti as oti_run  # where the one OTI loop calls oti

    calls = []
    real = oti_run.oti

    def oti_then_ctrl_c(*args, **kwargs):
        if len(calls) == after:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(oti_run, "oti", oti_then_ctrl_c)
    out = tmp_path / "run"
    status, _, err = searle(capsys, *OTI, "--out", out)
    monkeypatch.setattr(oti_run, "oti", real)
    assert status == 130
    assert err.strip().splitlines()[-1] == (
        f"searle oti: interrupted; kept {after} finished batches in {out}; resume with --resume (--out {out})"
    )
    assert "Traceback" not in err and not (out / "tokens.pt").exists()
    assert len(list((out / "chunks").glob("*.pt"))) == after
    return out


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_ctrl_c_says_how_to_resume_and_resume_completes(reference, tmp_path, capsys, monkeypatch):
    out = _interrupted_run(tmp_path, capsys, monkeypatch)
    status, _, err = searle(capsys, *OTI, "--out", out, "--resume")
    assert status == 0, err
    assert torch.equal(_tokens(out), reference)


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_truncated_manifest_advice_works(reference, tmp_path, capsys):
    out = tmp_path / "reference"
    manifest = out / "manifest.json"
    manifest.write_text(manifest.read_text()[:100])
    before = snapshot(out)
    line = fails(capsys, [*OTI, "--out", out, "--resume"], manifest, "--force without --resume")
    assert "line " in line and snapshot(out) == before
    fails(capsys, [*OTI, "--out", out], manifest, "--force")  # neither --resume nor --force: the same advice
    status, _, err = searle(capsys, *OTI, "--out", out, "--force")
    assert status == 0, err
    assert torch.equal(_tokens(out), reference) and json.loads(manifest.read_text())["complete"]


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_truncated_chunk_names_the_file_and_is_recoverable(reference, tmp_path, capsys, monkeypatch):
    out = _interrupted_run(tmp_path, capsys, monkeypatch)
    chunk = sorted((out / "chunks").glob("*.pt"))[0]
    chunk.write_bytes(chunk.read_bytes()[:100])
    before = snapshot(out)
    fails(capsys, [*OTI, "--out", out, "--resume"], chunk, "damaged or not a torch file", "remove it")
    after = snapshot(out)  # only the manifest changed (it records the session that stopped)
    assert {k for k in before | after if before.get(k) != after.get(k)} == {str(out / "manifest.json")}
    chunk.unlink()
    status, _, err = searle(capsys, *OTI, "--out", out, "--resume")
    assert status == 0, err
    assert torch.equal(_tokens(out), reference)


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_damaged_inputs_file_names_it(reference, tmp_path, capsys, monkeypatch):
    out = _interrupted_run(tmp_path, capsys, monkeypatch)
    (out / "inputs.pt").write_bytes(b"\x00" * 64)
    fails(capsys, [*OTI, "--out", out, "--resume"], out / "inputs.pt", "recomputed on --resume")
    (out / "inputs.pt").unlink()
    assert searle(capsys, *OTI, "--out", out, "--resume")[0] == 0
    assert torch.equal(_tokens(out), reference)


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_resume_force_with_changed_settings_is_said_and_recorded(tmp_path, capsys, monkeypatch):
    out = _interrupted_run(tmp_path, capsys, monkeypatch)
    changed = [a if a != "3" else "4" for a in OTI]  # --oti-steps 4
    fails(capsys, [*changed, "--out", out, "--resume"], "oti.steps: 3 in the run, 4 now", "--resume --force")
    status, _, err = searle(capsys, *changed, "--out", out, "--resume", "--force")
    assert status == 0, err
    assert "continuing the OTI run" in err and "oti.steps: 3 in the run, 4 now" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["hyperparameters"]["oti"]["steps"] == 4
    [mixed] = manifest["mixed_hyperparameters"]
    assert mixed["hyperparameters"]["oti"]["steps"] == 3 and mixed["changes"] == ["oti.steps: 3 in the run, 4 now"]


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_second_resume_on_a_locked_folder_is_refused(tmp_path, capsys, monkeypatch):
    out = _interrupted_run(tmp_path, capsys, monkeypatch)
    with open(out / ".lock", "r+") as other:  # as another process working on the folder would hold it
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other.truncate(0)
        other.write("4242")
        other.flush()
        before = snapshot(out)
        fails(capsys, [*OTI, "--out", out, "--resume"], out / ".lock", "pid 4242", "another process")
        assert snapshot(out) == before
    assert searle(capsys, *OTI, "--out", out, "--resume")[0] == 0  # released: the run goes on


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_out_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    status, _, err = searle(capsys, *OTI, "--out", blocker)
    assert status == 2 and str(blocker) in error_line(err) and blocker.read_text() == "keep me"


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_folder_of_another_kind_of_run(reference, tmp_path, capsys):
    fails(
        capsys,
        [
            "train-phi",
            "--oti-tokens",
            tmp_path / "reference",
            "--out",
            tmp_path / "reference",
            "--phi-epochs",
            "1",
            "--no-progress",
        ],
        tmp_path / "reference",
        "'oti' run",
    )


KILL_OTI = [
    "oti",
    "--quick",
    *CLI,
    "--max-images",
    "28",
    "--oti-steps",
    "40",
    "--oti-batch-size",
    "4",
    "--checkpoint-every",
    "1",
    "--seed",
    "3",
]


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
@pytest.mark.slow
def test_oti_killed_at_random_points_resumes_to_identical_tokens(tmp_path, capsys):
    status, _, err = searle(capsys, *KILL_OTI, "--out", tmp_path / "whole")
    assert status == 0, err
    out = tmp_path / "killed"

    def chunks() -> int:
        return len(list((out / "chunks").glob("*.pt"))) if (out / "chunks").is_dir() else 0

    kills = _kill_repeatedly([*KILL_OTI, "--out", out], tmp_path, chunks, [1, 4], random.Random(14))
    assert kills >= 2
    assert torch.equal(_tokens(out), _tokens(tmp_path / "whole"))
    assert len(json.loads((out / "manifest.json").read_text())["sessions"]) == kills + 1
