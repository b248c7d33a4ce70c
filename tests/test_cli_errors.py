"""The CLI's error policy: bad input is one line naming it; a bug shows its traceback; ``--debug`` and
``SEARLE_DEBUG=1`` show the traceback of every error."""

import subprocess
import sys

import pytest
from cli_helpers import error_line, searle

from searle_core import cli
from searle_core.cli import score
from searle_core.infra.errors import InputError


def _missing(tmp_path) -> list[str]:
    return ["score", "circo", "--annotations", str(tmp_path / "nope.json"), "--predictions", str(tmp_path / "p.json")]


def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys):
    assert cli.main(_missing(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.json" in err and "Traceback" not in err


def test_a_broken_call_shows_its_traceback(tmp_path, monkeypatch):
    """A torch shape error inside a command is a bug, not the user's input: it is not swallowed."""

    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x512 and 768x768)")

    monkeypatch.setattr(score, "score_circo", broken)
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        cli.main(_missing(tmp_path))


def test_a_plain_value_error_from_a_library_is_a_bug_too(tmp_path, monkeypatch):
    monkeypatch.setattr(score, "score_circo", lambda *a: int("x"))
    with pytest.raises(ValueError, match="invalid literal"):
        cli.main(_missing(tmp_path))


def test_debug_shows_the_traceback_of_bad_input(tmp_path, monkeypatch):
    def bad(*args, **kwargs):
        raise InputError("predictions file p.json: query 3 is not a list")

    monkeypatch.setattr(score, "score_circo", bad)
    assert cli.main(_missing(tmp_path)) == 2  # without --debug: one line
    with pytest.raises(InputError):
        cli.main(["--debug", *_missing(tmp_path)])
    monkeypatch.setenv("SEARLE_DEBUG", "1")
    with pytest.raises(InputError):
        cli.main(_missing(tmp_path))


@pytest.mark.slow
def test_the_command_prints_a_traceback_under_searle_debug(tmp_path):
    """The installed entry point, as a user runs it: one line, or the whole stack with SEARLE_DEBUG=1."""
    run = [sys.executable, "-m", "searle_core", *_missing(tmp_path)]
    plain = subprocess.run(run, capture_output=True, text=True)
    debug = subprocess.run(run, capture_output=True, text=True, env={**__import__("os").environ, "SEARLE_DEBUG": "1"})
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and "nope.json" in plain.stderr
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


# ---- fault cases (@pytest.mark.audit_open; helpers in cli_helpers.py) ----
@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
@pytest.mark.parametrize(
    "argv, flag",
    [
        (["evaluate", "--batch-size", "0"], "--batch-size"),
        (["evaluate", "--oti-steps", "-1"], "--oti-steps"),
        (["evaluate", "--num-workers", "-2"], "--num-workers"),
        (["oti", "--oti-steps", "0", "--out", "OUT"], "--oti-steps"),
        (["oti", "--max-images", "-495", "--out", "OUT"], "--max-images"),
        (["oti", "--oti-batch-size", "ten", "--out", "OUT"], "--oti-batch-size"),
        (["oti", "--checkpoint-every", "0", "--out", "OUT"], "--checkpoint-every"),
        (["oti", "--lambda-gpt", "-0.5", "--out", "OUT"], "--lambda-gpt"),
        (["train-phi", "--oti-tokens", "T", "--phi-epochs", "0", "--out", "OUT"], "--phi-epochs"),
        (["train-phi", "--oti-tokens", "T", "--lr", "0", "--out", "OUT"], "--lr"),
        (["train-phi", "--oti-tokens", "T", "--temperature", "nan", "--out", "OUT"], "--temperature"),
        (["train-phi", "--oti-tokens", "T", "--dropout", "1.5", "--out", "OUT"], "--dropout"),  # was a traceback
        (["train-phi", "--oti-tokens", "T", "--dropout", "1", "--out", "OUT"], "--dropout"),
        (["train-phi", "--oti-tokens", "T", "--lambda-distil", "nan", "--out", "OUT"], "--lambda-distil"),
        (["table", "--bootstrap", "0"], "--bootstrap"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_bad_numbers_are_argument_errors(tmp_path, capsys, argv, flag):
    argv = [str(tmp_path / a) if a in ("OUT", "T") else a for a in argv]
    status, out, err = searle(capsys, *argv)
    assert status == 2 and f"argument {flag}" in err and "Traceback" not in err and not out
    assert not (tmp_path / "OUT").exists() and not (tmp_path / "searle_data").exists()


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_train_phi_with_every_loss_weight_zero_is_refused(tmp_path, capsys):
    """--lambda-distil 0 without a vocabulary optimised nothing (loss 0.0 every epoch) and wrote the random φ
    as trained: refused naming the flag, before any epoch and without a run folder."""
    from cli_helpers import TINY_OTI

    status, _, err = searle(capsys, *TINY_OTI, "--lambda-gpt", "0", "--out", tmp_path / "oti")
    assert status == 0, err
    argv = ["train-phi", "--oti-tokens", tmp_path / "oti", "--out", tmp_path / "phi", "--phi-epochs", "1"]
    argv += ["--device", "cpu", "--no-progress", "--val-dataset", "none", "--lambda-gpt", "0"]
    line = error_line(searle(capsys, *argv, "--lambda-distil", "0")[2], "--lambda-distil 0", "every loss weight is 0")
    assert "--lambda-gpt" in line and not (tmp_path / "phi").exists()
    status, _, err = searle(capsys, *argv, "--lambda-distil", "0.5")  # the control: a weight left, φ trains
    assert status == 0, err
