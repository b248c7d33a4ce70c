"""Damaged run folders, interruptions and kills of ``searle oti`` / ``searle train-phi``.

In-process cases use a tiny OTI run (12 shapes images, 3 steps, random-weights CLIP). The kill
tests start ``python -m searle_core`` and SIGKILL it at random points (after a random delay once
some progress is on disk), several times, then let it finish: tokens and φ's weights must equal an
uninterrupted run's bit for bit.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from faults import CLI, error_line, fails, searle, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")
OTI = [
    "oti",
    "--quick",
    *CLI,
    "--max-images",
    "12",
    "--oti-steps",
    "3",
    "--oti-batch-size",
    "4",
    "--checkpoint-every",
    "1",
    "--seed",
    "5",
]


@pytest.fixture(autouse=True)
def _data(tmp_path, monkeypatch):
    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "searle_data"))


@pytest.fixture
def reference(tmp_path, capsys) -> torch.Tensor:
    """Tokens of the uninterrupted tiny run."""
    status, _, err = searle(capsys, *OTI, "--out", tmp_path / "reference")
    assert status == 0, err
    return torch.load(tmp_path / "reference/tokens.pt", weights_only=True)["tokens"]


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


def test_ctrl_c_says_how_to_resume_and_resume_completes(reference, tmp_path, capsys, monkeypatch):
    out = _interrupted_run(tmp_path, capsys, monkeypatch)
    status, _, err = searle(capsys, *OTI, "--out", out, "--resume")
    assert status == 0, err
    assert torch.equal(_tokens(out), reference)


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


def test_damaged_inputs_file_names_it(reference, tmp_path, capsys, monkeypatch):
    out = _interrupted_run(tmp_path, capsys, monkeypatch)
    (out / "inputs.pt").write_bytes(b"\x00" * 64)
    fails(capsys, [*OTI, "--out", out, "--resume"], out / "inputs.pt", "recomputed on --resume")
    (out / "inputs.pt").unlink()
    assert searle(capsys, *OTI, "--out", out, "--resume")[0] == 0
    assert torch.equal(_tokens(out), reference)


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


def test_out_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    status, _, err = searle(capsys, *OTI, "--out", blocker)
    assert status == 2 and str(blocker) in error_line(err) and blocker.read_text() == "keep me"


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


def test_train_phi_on_a_folder_without_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    fails(
        capsys,
        ["train-phi", "--oti-tokens", tmp_path / "empty", "--out", tmp_path / "phi"],
        tmp_path / "empty",
        "no manifest.json",
    )
    assert not (tmp_path / "phi").exists()


def test_train_phi_takes_the_backbone_from_the_oti_run(tmp_path, capsys):
    # Random weights drawn under --seed 7: train-phi's own --seed (42) must not change the CLIP.
    out = tmp_path / "oti7"
    assert searle(capsys, *[a if a != "5" else "7" for a in OTI], "--out", out)[0] == 0
    status, _, err = searle(
        capsys,
        "train-phi",
        "--oti-tokens",
        out,
        "--out",
        tmp_path / "phi",
        "--phi-epochs",
        "1",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--no-progress",
        "--val-dataset",
        "none",
    )
    assert status == 0, err
    assert (tmp_path / "phi/phi.pt").is_file()


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


def test_train_phi_resume_with_a_changed_setting(reference, tmp_path, capsys):
    phi = [
        "train-phi",
        "--oti-tokens",
        tmp_path / "reference",
        "--out",
        tmp_path / "phi",
        "--phi-epochs",
        "2",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--no-progress",
        "--val-dataset",
        "none",
    ]
    assert searle(capsys, *phi)[0] == 0
    before = snapshot(tmp_path / "phi")
    fails(capsys, [*phi, "--resume", "--lr", "0.001"], "phi.lr: 0.0001 in the run, 0.001 now")
    assert snapshot(tmp_path / "phi") == before


# ---- SIGKILL at random points --------------------------------------------------------------------
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


def _env(tmp_path) -> dict:
    return {
        **os.environ,
        "SEARLE_DATA": str(tmp_path / "searle_data"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }


def _kill_repeatedly(argv, tmp_path, progress, targets, rng) -> int:
    """Start ``argv`` with --resume; once ``progress()`` reaches each target, SIGKILL it after a random
    delay; finally let it finish. Returns how many kills landed."""
    kills = 0
    for target in [*targets, None]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "searle_core", *map(str, argv), "--resume"],
            env=_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if target is None:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
            return kills
        deadline = time.monotonic() + 90
        while proc.poll() is None and progress() < target and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
    return kills


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
