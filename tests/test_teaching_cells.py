"""The notebooks' written-out OTI (notebook 1) and φ training loop (notebook 3), run from their cells.

Each notebook checks its written-out code against the library (``oti``, ``train_phi``) from the same
seed and prints "agree" or "DIFFER"; tests/test_notebooks.py asserts the agreement on the quick
profile. Here the same cells run in-process on a tiny world with a random CLIP (fast), and the
controls change one line of the written-out code at a time, as a learner's slip would, and show the
check then says "DIFFER": a check that could not fail would teach nothing.
"""

from __future__ import annotations

import dataclasses
import json
import types

import pytest
import torch

from searle_core.infra.paths import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"


def cell(notebook: str, cell_id: str) -> str:
    """The source of the cell ``cell_id`` of ``notebooks/{notebook}.ipynb``."""
    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())["cells"]
    found = [c for c in cells if c.get("id") == cell_id]
    assert found, f"{notebook} has no cell {cell_id!r}: the test names the cells it runs"
    return "".join(found[0]["source"])


def namespace(notebook: str, imports_id: str, parameters_id: str, study) -> dict:
    """The notebook's parameters and imports (not its ``open_study``: the tiny study stands in)."""
    ns: dict = {}
    exec(cell(notebook, parameters_id), ns)
    source = cell(notebook, imports_id)
    exec("\n".join(line for line in source.splitlines() if line.startswith(("import ", "from "))), ns)
    ns.update(study=study, clip=study.backbone)
    return ns


def assert_verdict(ns: dict, gap: str, control: str, printed: str) -> None:
    """The check cell's verdict: "agree" within its 1e-4 for the notebook's code as written, "DIFFER"
    (by over ten times the tolerance) for each control."""
    if control == "none":
        assert ns["verdict"] == "agree" and ns[gap] < 1e-4 and "they agree" in printed, printed
    else:
        assert ns["verdict"] == "DIFFER" and ns[gap] > 1e-3, (control, printed)


def run_checked(ns: dict, notebook: str, loop_id: str, check_id: str, change: tuple[str, str] | None) -> None:
    """The written-out cell ``loop_id`` (with one line ``change``d: ``(old, new)``, for a control), then
    the cell ``check_id`` that compares its result with the library's."""
    loop = cell(notebook, loop_id)
    if change:
        assert change[0] in loop, f"the control's line is gone from the cell: {change[0]!r}"
        loop = loop.replace(*change, 1)
    exec(loop, ns)
    exec(cell(notebook, check_id), ns)


# ---- notebook 1: OTI written out ----------------------------------------------------------------------
EMA = "    with torch.no_grad():\n        ema.mul_(config.ema_decay).add_(v, alpha=1 - config.ema_decay)"
OTI_CONTROLS = {
    "none": None,
    # the text features read at the last column instead of the end-of-text token
    "read at the last token": ("ids.argmax(-1)] @ model.text_projection", "-1] @ model.text_projection"),
    # the EMA of the token before the step
    "EMA before the step": (f"    optimizer.step()\n{EMA}", f"{EMA}\n    optimizer.step()"),
    # the phrase regulariser left out
    "no L_gpt": ("loss = loss + config.lambda_gpt *", "loss = loss + 0 *"),
}


@pytest.fixture(scope="module")
def oti_cells(tiny_study, one_thread):
    ns = namespace("01_textual_inversion", "d86492fc", "007db827", tiny_study)
    names = [tiny_study.query(i).reference for i in range(2)]
    ns["features"] = tiny_study.features(names)
    ns["concepts_per_image"] = tiny_study.concepts(ns["features"], top_k=15)
    assert ns["concepts_per_image"], "the tiny world has a vocabulary: the regulariser runs"
    exec(cell("01_textual_inversion", "oti-draws"), ns)
    assert any(ns["phrase_draws"]), "the regulariser draws phrases, so 'no L_gpt' is a real change"
    return ns


@pytest.mark.parametrize("control", list(OTI_CONTROLS))
def test_notebook1_oti_check_agrees_and_sees_each_slip(oti_cells, control, capsys):
    ns = dict(oti_cells)
    run_checked(ns, "01_textual_inversion", "oti-loop", "oti-check", OTI_CONTROLS[control])
    assert_verdict(ns, "oti_from_scratch_gap", control, capsys.readouterr().out)


# ---- notebook 3: φ's training loop written out ----------------------------------------------------
PHI_CONTROLS = {
    "none": None,
    # NT-Xent without its temperature
    "no temperature": ("z @ z.T / config.loss.temperature", "z @ z.T"),
    # the dropout masks drawn from wherever the generator happens to be
    "dropout not reseeded": ('torch.manual_seed(derive_seed(config.seed, 0, b, "dropout"))', "pass"),
    # the batch in the stored order instead of the epoch's permutation
    "no shuffle": ("idx = order[b * B:(b + 1) * B].tolist()", "idx = list(range(b * B, (b + 1) * B))"),
}


@pytest.fixture(scope="module")
def phi_cells(tiny_study, one_thread):
    ns = namespace("03_training_phi", "73ab365d", "529d4d9c", tiny_study)
    names = tiny_study.bench.reference_names()[:8]
    features = tiny_study.features(names)
    tokens = torch.randn(len(names), tiny_study.backbone.token_dim, generator=torch.Generator().manual_seed(1))
    # φ's OTI targets: any tokens serve, both sides train on the same ones
    ns.update(targets=types.SimpleNamespace(names=names, tokens=tokens * 0.3), unlabeled_features=features)
    exec(cell("03_training_phi", "phi-recipe"), ns)
    return ns


@pytest.mark.parametrize("control", list(PHI_CONTROLS))
def test_notebook3_phi_check_agrees_and_sees_each_slip(phi_cells, control, capsys):
    ns = dict(phi_cells)
    ns["recipe"] = dataclasses.replace(ns["recipe"], batch_size=4)  # two steps of 4
    exec(cell("03_training_phi", "phi-loop"), ns)
    assert ns["concepts_demo"] and ns["n"] // ns["B"] == 2
    run_checked(ns, "03_training_phi", "phi-loop-run", "phi-check", PHI_CONTROLS[control])
    assert_verdict(ns, "phi_from_scratch_gap", control, capsys.readouterr().out)
