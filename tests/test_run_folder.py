"""Run folders (``searle_core.jobs.run_folder``): ours or refused, under every rank; the lock never follows a
link; every finished OTI batch is on disk at once, and SIGTERM keeps them as SIGINT does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import CLI, fails, searle, snapshot

from searle_core.infra.errors import InputError

pytestmark = [pytest.mark.audit_open, pytest.mark.usefixtures("one_thread", "tmp_searle_data")]


OTI = ["oti", "--quick", *CLI, "--max-images", "8", "--oti-steps", "2", "--oti-batch-size", "4", "--seed", "5"]


@pytest.fixture
def oti_run(tmp_path, capsys) -> Path:
    """A finished tiny OTI run (8 shapes images, 2 batches)."""
    out = tmp_path / "oti"
    status, _, err = searle(capsys, *OTI, "--out", out)
    assert status == 0, err
    return out


def test_oti_out_holding_a_users_log_is_refused(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "log.csv").write_text("my,own\n1,2\n")
    before = snapshot(out)
    line = fails(capsys, [*OTI, "--out", out], out, "log.csv", "not empty")
    assert "--force" not in line  # forcing must not be offered over files that are not ours
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == ["log.csv"]  # no .lock either
    fails(capsys, [*OTI, "--out", out, "--force"], out, "log.csv")  # --force deletes only runs of ours
    assert snapshot(out) == before


def test_train_phi_out_holding_a_users_phi_and_history_is_refused(oti_run, tmp_path, capsys):
    out = tmp_path / "phi"
    out.mkdir()
    (out / "phi.pt").write_bytes(b"my weights")
    (out / "history.csv").write_text("epoch\n1\n")
    before = snapshot(out)
    args = ["train-phi", "--oti-tokens", oti_run, "--out", out, "--device", "cpu", "--no-progress"]
    fails(capsys, [*args, "--phi-epochs", "1", "--val-dataset", "none"], out, "history.csv", "phi.pt")
    assert snapshot(out) == before


def test_foreign_inputs_in_a_new_folder_are_refused_not_loaded(oti_run, tmp_path, capsys):
    out = tmp_path / "new"
    out.mkdir()
    (out / "inputs.pt").write_bytes((oti_run / "inputs.pt").read_bytes())  # a plausible file, not ours
    before = snapshot(out)
    fails(capsys, [*OTI, "--out", out], out, "inputs.pt")
    assert snapshot(out) == before


def test_our_own_empty_or_interrupted_folder_is_still_taken(tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    status, _, err = searle(capsys, *OTI, "--out", out)
    assert status == 0, err
    status, _, err = searle(capsys, *OTI, "--out", out, "--resume")  # ours: its manifest says so
    assert status == 0, err


#: Each of two gloo processes opens an OTI run in a folder of the user's; each writes what it met.
_TWO_RANKS = """
import datetime, sys
from pathlib import Path
import torch.distributed as dist
from searle_core.infra.errors import InputError
from searle_core.jobs.run_folder import open_run
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=20))
try:
    open_run(Path(sys.argv[1]), "oti", {}, {}, False, False, [])
    said = "opened"
except InputError as err:
    said = "refused: " + str(err)
Path(sys.argv[2]).write_text(said)
dist.destroy_process_group()
"""


@pytest.mark.parametrize("rank", [0, 1])
def test_every_rank_stops_on_rank_0s_refusal_before_writing(rank, tmp_path, monkeypatch):
    """The decision in one process: rank 0 checks and sends its verdict; rank 1 (which never checks
    the folder itself) raises what it receives, before anything is written."""
    from searle_core.jobs import run_folder

    out = tmp_path / "mine"
    out.mkdir()
    (out / "log.csv").write_text("the user's own log\n")
    sent = []

    def broadcast(obj, src=0):  # rank 1 receives what rank 0 found in the same folder
        sent.append(obj)
        return obj if rank == 0 else "--out mine is not empty and holds no run of ours: it holds log.csv"

    monkeypatch.setattr(run_folder.dist, "is_main", lambda: rank == 0)
    monkeypatch.setattr(run_folder.dist, "broadcast_object", broadcast)
    monkeypatch.setattr(run_folder.dist, "barrier", lambda: pytest.fail("a rank went on past the refusal"))
    with pytest.raises(InputError, match="log.csv"):
        run_folder.open_run(out, "oti", {}, {}, False, False, [])
    assert len(sent) == 1 and (sent[0] is None) == (rank == 1)  # rank 0 sends its refusal, rank 1 its nothing
    assert sorted(p.name for p in out.iterdir()) == ["log.csv"]


@pytest.mark.slow  # two Python processes importing torch and the package: ~10 s on an idle machine
def test_under_torchrun_every_rank_learns_that_the_folder_is_refused(tmp_path):
    import socket

    out = tmp_path / "mine"
    out.mkdir()
    (out / "log.csv").write_text("the user's own log\n")
    before = snapshot(out)
    with socket.socket() as probe:  # a free port for the group's rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": "2",
        "OMP_NUM_THREADS": "1",
    }
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", _TWO_RANKS, str(out), str(tmp_path / f"rank{r}.txt")],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    logs = [p.communicate(timeout=120)[0].decode(errors="replace")[-2000:] for p in ranks]
    for r in range(2):  # rank 1 never checks the folder itself: it must learn rank 0's refusal
        said = tmp_path / f"rank{r}.txt"
        assert said.is_file(), f"rank {r} did not finish: {logs[r]}"
        assert said.read_text().startswith("refused: ") and "log.csv" in said.read_text(), said.read_text()
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == ["log.csv"]


def test_lock_that_links_to_a_users_file_is_refused_untouched(oti_run, tmp_path, capsys):
    precious = tmp_path / "precious.txt"
    precious.write_text("do not truncate me")
    lock = oti_run / ".lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(precious)
    fails(capsys, [*OTI, "--out", oti_run, "--resume"], lock, "symbolic link")
    assert precious.read_text() == "do not truncate me" and lock.is_symlink()


def _chunk_batches(out: Path) -> int:
    return sum(len(torch.load(p, weights_only=True)["log"]) for p in (out / "chunks").glob("*.pt"))


def test_every_finished_batch_is_on_disk_before_the_next_starts(tmp_path, capsys, monkeypatch):
    import searle_core.method.oti as batch

    real, on_disk = batch.oti, []
    out = tmp_path / "run"

    def oti_checking_disk(*args, **kwargs):
        on_disk.append(_chunk_batches(out) if (out / "chunks").is_dir() else 0)
        if len(on_disk) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "oti", oti_checking_disk)
    argv = [a if a != "8" else "24" for a in OTI]  # 6 batches of 4
    status, _, err = searle(capsys, *argv, "--checkpoint-every", "10", "--out", out)
    assert status == 130, err
    assert on_disk == [0, 1, 2, 3]  # with checkpoint_every=10, not [0, 0, 0, 0]
    assert err.strip().splitlines()[-1] == (
        f"searle oti: interrupted; kept 3 finished batches in {out}; resume with --resume (--out {out})"
    )


@pytest.mark.slow
def test_sigterm_keeps_finished_batches_and_resume_recomputes_none(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = [a if a != "8" else "32" for a in OTI]  # 8 batches of 4
    argv = [a if a != "2" else "40" for a in argv]  # 40 steps: a batch takes a while
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "searle_core", *argv, "--checkpoint-every", "10", "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "chunks").is_dir() and _chunk_batches_safe(out) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    kept = _chunk_batches(out)
    assert 2 <= kept < 8 and not (out / "tokens.pt").exists()
    assert err.strip().splitlines()[-1] == (
        f"searle oti: interrupted; kept {kept} finished batches in {out}; resume with --resume (--out {out})"
    )
    kept_tokens = {}
    for path in (out / "chunks").glob("*.pt"):
        part = torch.load(path, weights_only=True)
        kept_tokens.update(zip(part["names"], part["tokens"]))

    import searle_core.method.oti as batch

    calls, real = [], batch.oti
    monkeypatch.setattr(batch, "oti", lambda *a, **k: calls.append(1) or real(*a, **k))
    status, _, err = searle(capsys, *argv, "--checkpoint-every", "10", "--out", out, "--resume")
    assert status == 0, err
    assert len(calls) == 8 - kept  # nothing finished is computed again
    final = torch.load(out / "tokens.pt", weights_only=True)
    by_name = dict(zip(final["names"], final["tokens"]))
    assert all(torch.equal(by_name[n], t) for n, t in kept_tokens.items())


def _chunk_batches_safe(out: Path) -> int:
    try:
        return _chunk_batches(out)
    except Exception:  # a chunk being renamed into place
        return 0
