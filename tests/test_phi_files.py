"""φ checkpoint files given to ``searle evaluate --phi-checkpoint``: damaged, foreign, unsafe, NaN, missing,
a ``file:`` URL or a folder; each is one error line naming the file."""

from __future__ import annotations

import os

import pytest
import torch
from cli_helpers import (
    CLI,
    circo,  # noqa: F401
    fails,
)
from cli_helpers import EVALUATE_CIRCO as EVAL
from cli_helpers import evaluate_fails as _evaluate_fails

pytestmark = pytest.mark.audit_open


EVALUATE = ["evaluate", "--quick", *CLI, "--method", "searle"]


@pytest.mark.usefixtures("tmp_searle_data")
def test_phi_checkpoint_as_a_file_url_or_a_folder_is_said_so(tmp_path, capsys):
    weights = tmp_path / "phi.pt"
    weights.write_bytes(b"x")
    line = fails(capsys, [*EVALUATE, "--phi-checkpoint", f"file://{weights}"], "file:", str(weights))
    assert "not found" not in line
    # A folder is read as a φ run (RUN, RUN:EPOCH): one without φ's files says what it lacks and has.
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "other.pt").write_bytes(b"x")
    line = fails(capsys, [*EVALUATE, "--phi-checkpoint", folder], str(folder), "has no phi.pt", "it has: none")
    assert "not found" not in line


def _phi(tmp_path, random_backbone, name="phi.pt"):
    from searle_core.inversion.phi_files import save_phi
    from searle_core.method.phi import Phi

    torch.manual_seed(0)
    path = tmp_path / name
    save_phi(Phi.for_backbone(random_backbone), path)
    return path


def _searle_fails(capsys, tmp_path, circo, checkpoint, *culprits):
    return _evaluate_fails(
        capsys, tmp_path, circo, *culprits, extra=["--method", "searle", "--phi-checkpoint", checkpoint]
    )


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_truncated_phi_checkpoint(circo, tmp_path, capsys, random_backbone):
    path = _phi(tmp_path, random_backbone)
    path.write_bytes(path.read_bytes()[:300])
    _searle_fails(capsys, tmp_path, circo, path, path, "damaged or not a torch file", "φ checkpoint")


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_phi_checkpoint_that_is_a_text_file(circo, tmp_path, capsys):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    _searle_fails(capsys, tmp_path, circo, path, path, "damaged or not a torch file")


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_phi_checkpoint_with_nan_weights(circo, tmp_path, capsys, random_backbone):
    path = _phi(tmp_path, random_backbone)
    state = torch.load(path, weights_only=True)
    state["Phi"]["layers.3.weight"][0, 0] = float("nan")
    torch.save(state, path)
    _searle_fails(capsys, tmp_path, circo, path, path, "layers.3.weight", "NaN")


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_phi_checkpoint_that_runs_code_is_refused(circo, tmp_path, capsys):
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pt"
    torch.save({"Phi": Exploit()}, path)
    _searle_fails(capsys, tmp_path, circo, path, path, "refused to load this φ checkpoint")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_phi_checkpoint_of_another_layout(circo, tmp_path, capsys):
    path = tmp_path / "other.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, path)
    _searle_fails(capsys, tmp_path, circo, path, path, "not a φ checkpoint")


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_phi_checkpoint_that_does_not_exist(circo, tmp_path, capsys):
    _searle_fails(capsys, tmp_path, circo, tmp_path / "SEARLE_ViT-B32.pt", "SEARLE_ViT-B32.pt", "not found")


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_phi_producing_nan_tokens(circo, tmp_path, capsys, random_backbone):
    path = _phi(tmp_path, random_backbone)
    state = torch.load(path, weights_only=True)
    for layer in (0, 3, 6):  # finite weights whose products overflow: infinite or NaN tokens
        state["Phi"][f"layers.{layer}.weight"].fill_(1e30)
    torch.save(state, path)
    line = fails(
        capsys,
        [*EVAL, "--dataset-path", circo, "--method", "searle", "--phi-checkpoint", path],
        "φ produced",
        "NaN",
        "reference image",
    )
    assert "'1'" in line or "'2'" in line or "'3'" in line


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_phi_checkpoint_of_integer_tensors_is_refused(dtype, circo, tmp_path, capsys, random_backbone):
    """Right shapes stored as int64 or bool were cast to float silently."""
    path = _phi(tmp_path, random_backbone)
    state = torch.load(path, weights_only=True)
    state["Phi"]["layers.0.weight"] = state["Phi"]["layers.0.weight"].to(dtype)
    torch.save(state, path)
    _searle_fails(capsys, tmp_path, circo, path, path, "layers.0.weight", str(dtype), "expected floating point")


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_phi_made_with_other_weights_is_refused_unless_accepted(circo, tmp_path, capsys, random_backbone):
    """φ records the backbone and weights that trained it; other weights of the same width ran without a word.
    Refused naming both; --accept-other-weights runs it and says so in the results; the right weights run."""
    import re

    from cli_helpers import searle

    path = _phi(tmp_path, random_backbone)
    state = torch.load(path, weights_only=True)
    torch.save({**state, "hyperparameters": {"backbone": "shapes-clip", "weights": "random-0123"}}, path)
    line = _searle_fails(capsys, tmp_path, circo, path, path, "made with shapes-clip (random-0123)", "--accept-other")
    argv = [*EVAL, "--dataset-path", circo, "--method", "searle", "--phi-checkpoint", path]
    status, out, err = searle(capsys, *argv, "--accept-other-weights")
    assert status == 0, err
    assert "warning: φ checkpoint" in err and "other weights accepted" in out
    used = re.search(r"not the shapes-clip \((random-[0-9a-f]+)\) in use", line).group(1)
    torch.save({**state, "hyperparameters": {"backbone": "shapes-clip", "weights": used}}, path)
    status, out, err = searle(capsys, *argv)  # the control: the weights it records run without a word
    assert status == 0 and "made with" not in err + out, err


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_oti_tokens_made_with_other_weights_are_refused(circo, tmp_path, capsys):
    """An OTI run folder records its backbone and weights: tokens of other weights are refused before use."""
    import json

    run = tmp_path / "oti-run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"hyperparameters": {"backbone": "ViT-B-32", "weights": "openai"}}))
    argv = [*EVAL, "--dataset-path", circo, "--method", "searle-oti", "--oti-tokens", run]
    fails(capsys, argv, f"--oti-tokens {run} was made with ViT-B-32 (openai)", "--accept-other-weights")


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_phi_run_checkpoint_is_compared_with_its_runs_manifest(circo, tmp_path, capsys, random_backbone):
    """RUN:last holds no hyper-parameters of its own: the φ run's manifest says which CLIP trained it."""
    import json

    run = tmp_path / "phi-run"
    run.mkdir()
    _phi(run, random_backbone, name="phi_last.pt")
    (run / "manifest.json").write_text(json.dumps({"hyperparameters": {"backbone": "ViT-B-32", "weights": "openai"}}))
    _searle_fails(capsys, tmp_path, circo, f"{run}:last", "made with ViT-B-32 (openai)", "--accept-other-weights")
