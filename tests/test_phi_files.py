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
