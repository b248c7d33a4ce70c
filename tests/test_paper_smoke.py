"""The paper-smoke profile: every notebook on the paper path at toy size, as CI runs it.

Real annotation files in the authors' layouts with generated images, open_clip ViT-B-32 with seeded
random weights in OpenAI's state-dict layout, a random φ in the authors' checkpoint layout, a small
phrase pickle and concepts CSV, CPU (``tests/paper_smoke_data.py``). The numbers themselves mean
nothing; the test checks that the paper path runs end to end and reports what the paper run would:
figures, tables with the paper's column, notebook numbers equal to the CLI's, QuickGELU throughout.
"""

from __future__ import annotations

import json
import math
import warnings
from types import SimpleNamespace

import nbformat
import pandas as pd
import pytest
from paper_smoke_data import DEFAULT

from searle_core.infra.paths import REPO_ROOT
from searle_core.notebook.papermill_runner import NOTEBOOKS
from searle_core.notebook.record import load_record

MISMATCH = "QuickGELU mismatch"
WEIGHTS = DEFAULT / "weights" / "ViT-B-32-random.pt"
PHI = DEFAULT / "checkpoints" / "SEARLE_ViT-B32-random.pt"

FIGURES = [
    "01_images",
    "01_oti_losses",
    "01_self_retrieval",
    "01_composed_before_after",
    "02_nearest_words",
    "02_token_paths",
    "02_wordness",
    "02_oti_vs_phi_words",
    "02_oti_vs_phi_agreement",
    "03_phi_training",
    "03_oti_vs_phi_agreement",
    "03_time_per_image",
    "04_methods_cirr",
    "04_methods_fashioniq",
    "04_methods_circo",
    "04_examples_cirr_ViT-B-32",
    "04_examples_fashioniq_ViT-B-32",
    "04_examples_circo_ViT-B-32",
    "05_ablations",
]
TABLES = ["results.csv", "results-cirr.md", "results-fashioniq.md", "results-circo.md", "ablations.csv", "ablations.md"]


@pytest.fixture(scope="module")
def smoke(paper_smoke_background):
    """The data built as ``make paper-smoke`` builds it, then ``searle paper --profile paper-smoke``, in a
    process of its own (conftest's ``paper_smoke_background``, which the quick run may have started).

    Returns:
        ``(run folder, [(name, record)] per notebook, the run's stderr lines)`` (every warning shown).
    """
    assert DEFAULT == REPO_ROOT / "runs" / "paper-smoke-data"  # where the profile's "../runs/..." paths point
    proc, run_dir, log = paper_smoke_background
    status = proc.wait(timeout=1800)
    err = log.read_text()
    assert status == 0, f"searle paper --profile paper-smoke exited {status}:\n{err[-4000:]}"
    summary = json.loads((run_dir / "summary.json").read_text())
    runs = [SimpleNamespace(name=n["name"], record=load_record(run_dir, n["name"])) for n in summary["notebooks"]]
    return run_dir, runs, err.splitlines()


@pytest.mark.slow
def test_every_notebook_runs_and_writes_its_figures_and_tables(smoke):
    run_dir, runs, _ = smoke
    assert [r.name for r in runs] == list(NOTEBOOKS)
    assert all(r.record for r in runs), [r.name for r in runs if not r.record]
    missing = [f for f in FIGURES if not (run_dir / "figures" / f"{f}.png").is_file()]
    assert not missing, f"figures not written: {missing}"
    missing = [t for t in TABLES if not (run_dir / "tables" / t).is_file()]
    assert not missing, f"tables not written: {missing}"
    # Notebook 4 writes the test-split server files (CIRR test1: 50-long rankings, CIRCO test).
    circo = json.loads((run_dir / "submissions" / "circo" / "ViT-B-32" / "searle.json").read_text())
    assert circo and all(len(r) == 50 for r in circo.values())
    assert list((run_dir / "submissions" / "cirr" / "ViT-B-32").glob("*.json"))
    summary = json.loads((run_dir / "summary.json").read_text())
    print("\n".join(f"{n['name']}: {n['seconds']} s" for n in summary["notebooks"]))


@pytest.mark.slow
def test_vit_b32_rows_carry_the_papers_numbers(smoke):
    run_dir, _, _ = smoke
    table = pd.read_csv(run_dir / "tables" / "results.csv")
    rows = table[table.backbone == "ViT-B-32"]
    # PALAVRA is re-implemented here: its paper number is the original model's, without a difference.
    palavra = rows[(rows.dataset == "fashioniq") & (rows.method == "palavra")]
    assert len(palavra) and palavra.paper.notna().all() and palavra["diff"].isna().all(), palavra
    for method in ("image-only", "text-only", "image+text", "searle-oti", "searle"):
        fiq = rows[(rows.dataset == "fashioniq") & (rows.method == method)]
        assert len(fiq) and fiq.paper.notna().all() and fiq["diff"].notna().all(), (method, fiq)
        assert ((fiq.reproduced - fiq.paper - fiq["diff"]).abs() < 1e-3).all()
        for dataset in ("cirr", "circo"):  # the paper reports test only: shown for reference, no difference
            part = rows[(rows.dataset == dataset) & (rows.method == method)]
            assert len(part) and part.paper.notna().all() and (part.paper_split == "test").all(), (dataset, method)
            assert part["diff"].isna().all()
    circo_md = (run_dir / "tables" / "results-circo.md").read_text()
    assert "| ViT-B-32 | Image-only | " in circo_md and "(paper test: 1.34)" in circo_md  # Image-only CIRCO test mAP@5
    record = load_record(run_dir, "04_results_tables")
    # Skipped, each with its reason under the table: Captioning (transformers is not installed) and
    # LinCIR (on a real dataset it trains on a caption corpus, which the notebooks do not take).
    assert record["circo/ViT-B-32/skipped"] == ["captioning", "lincir"]
    notes = (run_dir / "tables" / "circo-val-ViT-B-32.md").read_text()
    assert "Captioning: not run (needs a captioning model" in notes and "LinCIR: not run (trains on captions" in notes
    settings = record["circo/ViT-B-32/settings"]
    assert settings["preprocess"] == "targetpad" and settings["eval_precision"] == "fp32"
    assert settings["phi_epoch"] == 3  # read from the authors' {"epoch", "Phi"} layout


@pytest.mark.slow
def test_notebook_and_cli_numbers_agree(smoke, capsys):
    """`searle evaluate` on the same toy CIRCO (notebook 4 uses all its queries) gives notebook 4's numbers."""
    from searle_core.cli import main

    run_dir, _, _ = smoke
    record = load_record(run_dir, "04_results_tables")
    common = [
        "--dataset",
        "circo",
        "--dataset-path",
        str(DEFAULT / "CIRCO"),
        "--backbone",
        "ViT-B-32",
        "--pretrained",
        f"openai:{WEIGHTS}",
        "--device",
        "cpu",
        "--no-progress",
        "--json",
    ]
    for method, extra in (("image-only", []), ("searle", ["--phi-checkpoint", str(PHI)])):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(["evaluate", *common, "--method", method, *extra]) == 0
        out, err = capsys.readouterr()
        assert MISMATCH not in out + err and not [w for w in caught if MISMATCH in str(w.message)]
        cli = json.loads(out.strip().splitlines()[-1])
        compared = {
            k: v for k, v in cli.items() if f"circo/ViT-B-32/{method}/{k}" in record and isinstance(v, (int, float))
        }
        assert {"mAP@5", "mAP@50"} <= set(compared), (method, cli)
        for metric, value in compared.items():
            assert math.isclose(value, record[f"circo/ViT-B-32/{method}/{metric}"], abs_tol=1e-6), (method, metric)


@pytest.mark.slow
def test_openai_layout_file_is_built_with_quick_gelu_and_no_mismatch_warning(smoke):
    from searle_core.clip.backbone import load_backbone

    run_dir, _, caught = smoke
    assert not [m for m in caught if MISMATCH in m]
    for stem in NOTEBOOKS:
        nb = nbformat.read(run_dir / f"{stem}.ipynb", as_version=4)
        text = json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])
        assert MISMATCH not in text, stem
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backbone = load_backbone("ViT-B-32", f"openai:{WEIGHTS}", device="cpu")
    assert backbone.quick_gelu and backbone.weights_id.endswith("+quickgelu")


def test_baseline_knobs_size_pic2word_and_palavra_training():
    """Notebook 4's baseline_epochs / baseline_images reach Pic2Word's and PALAVRA's configs; 0 keeps the defaults."""
    import dataclasses
    from types import SimpleNamespace

    from searle_core.baselines.palavra import PalavraConfig
    from searle_core.baselines.pic2word import Pic2WordConfig
    from searle_core.methods.context import MethodContext
    from searle_core.notebook.results import _size_baselines

    source = SimpleNamespace(names=[f"{i}.jpg" for i in range(10)])
    ctx = MethodContext()
    ctx.unlabeled = source
    _size_baselines(ctx, 0, 0)
    assert ctx.pic2word_config is None and ctx.palavra_config is None
    assert ctx.unlabeled is source
    _size_baselines(ctx, 2, 3)
    assert ctx.pic2word_config == dataclasses.replace(Pic2WordConfig(), epochs=2)
    assert ctx.palavra_config == dataclasses.replace(PalavraConfig(), epochs=2)
    assert ctx.unlabeled == (source, ["0.jpg", "1.jpg", "2.jpg"])
