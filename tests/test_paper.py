"""The paper's numbers as data, the recorder, and the runner's failure path (no world CLIP needed)."""

import json
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from cli_helpers import snapshot

from searle_core.notebook import papermill_runner as paper
from searle_core.notebook.record import Recorder, load_record
from searle_core.report.paper_numbers import (
    PAPER_TABLE_METRICS,
    compare_with_paper,
    paper_results,
    results_frame,
)
from searle_core.report.table import flatten


def paper_value(dataset, backbone, method, metric):
    df = paper_results()
    hit = df[(df.dataset == dataset) & (df.backbone == backbone) & (df.method == method) & (df.metric == metric)]
    return float(hit.value.iloc[0]) if len(hit) else None


def test_paper_numbers_match_the_facts():
    # A few cells of each table, read back from the data file.
    assert paper_value("cirr", "ViT-B-32", "searle-oti", "Recall@1") == 24.27
    assert paper_value("cirr", "ViT-L-14", "searle", "Recall_subset@3") == 88.19
    assert paper_value("fashioniq", "ViT-B-32", "searle", "average/Recall@50") == 42.53
    assert paper_value("fashioniq", "ViT-L-14", "pic2word", "shirt/Recall@10") == 26.20
    assert paper_value("circo", "ViT-B-32", "image-only", "mAP@50") == 2.41
    assert paper_value("circo", "ViT-L-14", "searle", "mAP@10") == 12.73
    # "–" in the paper: no row.
    assert paper_value("cirr", "ViT-B-32", "captioning", "Recall@50") is None
    assert paper_value("circo", "ViT-B-32", "captioning", "mAP@10") == 5.77
    df = paper_results()
    assert set(df.dataset) == {"cirr", "fashioniq", "circo"}
    assert set(df.split) == {"test", "val"}
    assert len(df) == 174 + 3  # SEARLE's tables + LinCIR's three ViT-L/14 headline numbers
    assert not df.duplicated(["dataset", "backbone", "method", "metric"]).any()
    for dataset, metrics in PAPER_TABLE_METRICS.items():
        table = df[df.dataset == dataset]
        assert set(table.metric) <= set(metrics)
        assert table.groupby(["backbone", "method"]).ngroups == 11  # 7 ViT-B/32 rows + 3 ViT-L/14 rows + LinCIR's


def test_compare_with_paper():
    metrics = {"mAP@5": 8.0, "mAP@10": 9.0, "Recall@5": 1.0, "semantic_mAP@10": {"negation": 3.0}}
    assert flatten(metrics)["semantic_mAP@10/negation"] == 3.0
    frame = results_frame(
        {("circo", "ViT-B-32", "searle-oti"): metrics, ("shapes", "shapes-clip", "searle"): {"mAP@10": 40.0}}
    )
    frame.insert(1, "split", ["test"] * 4 + ["val"])  # CIRCO scored on test (a server's score), shapes val
    out = compare_with_paper(frame)
    circo = out[out.dataset == "circo"].set_index("metric")
    assert list(circo.index) == ["mAP@5", "mAP@10"]  # only the paper table's columns
    assert circo.loc["mAP@10", "paper"] == 7.83
    assert circo.loc["mAP@10", "diff"] == pytest.approx(9.0 - 7.83)
    shapes = out[out.dataset == "shapes"]
    assert len(shapes) == 1 and pd.isna(shapes.paper.iloc[0]) and pd.isna(shapes["diff"].iloc[0])


def test_paper_numbers_are_differences_only_on_the_same_split_and_the_same_method():
    """CIRR and CIRCO: the paper reports test (server) numbers, a run scores val: the paper's number
    stands beside ours, labelled, with no difference. FashionIQ val against val: a difference. A row
    that is not the paper's method (OTI on template phrases) gets no paper number at all."""
    frame = results_frame(
        {
            ("circo", "ViT-B-32", "searle-oti"): {"mAP@10": 9.0},
            ("fashioniq", "ViT-B-32", "searle-oti"): {"average/Recall@10": 23.0},
            ("fashioniq", "ViT-B-32", "image-only"): {"average/Recall@10": 6.0},
        }
    )
    frame.insert(1, "split", "val")
    frame["variant"] = ["", "templates", ""]
    out = compare_with_paper(frame).set_index(["dataset", "method"])
    circo = out.loc[("circo", "searle-oti")]
    assert (circo.paper, circo.paper_split) == (7.83, "test") and pd.isna(circo["diff"])
    templates = out.loc[("fashioniq", "searle-oti")]
    assert pd.isna(templates.paper) and pd.isna(templates["diff"])
    image_only = out.loc[("fashioniq", "image-only")]
    assert image_only.paper == 5.90 and image_only["diff"] == pytest.approx(6.0 - 5.90)
    assert pd.isna(compare_with_paper(frame.drop(columns="split"))["diff"]).all()  # split unknown: none


def test_reimplemented_baselines_show_the_original_models_number_without_a_difference():
    """FashionIQ val against the paper's val: SEARLE and image-only get a difference; Pic2Word, PALAVRA
    and Captioning (re-implemented: other training data, another captioner) get the paper's number
    labelled as the original model's, and none."""
    from searle_core.notebook import results

    frame = results_frame(
        {
            ("fashioniq", "ViT-B-32", "searle"): {"average/Recall@10": 26.0},
            ("fashioniq", "ViT-B-32", "image-only"): {"average/Recall@10": 6.0},
            ("fashioniq", "ViT-B-32", "captioning"): {"average/Recall@10": 12.0},
            ("fashioniq", "ViT-B-32", "palavra"): {"average/Recall@10": 18.0},
            ("fashioniq", "ViT-L-14", "pic2word"): {"average/Recall@10": 22.0},
        }
    )
    frame.insert(1, "split", "val")
    out = compare_with_paper(frame).set_index("method")
    assert out.loc["searle", "diff"] == pytest.approx(26.0 - out.loc["searle", "paper"])
    assert out.loc["image-only", "diff"] == pytest.approx(6.0 - 5.90)
    assert list(out.loc[["searle", "image-only"], "paper_label"]) == ["paper", "paper"]
    for method, name, number in (("captioning", "Captioning", 13.98), ("palavra", "PALAVRA", 19.76)):
        assert out.loc[method, "paper"] == number and pd.isna(out.loc[method, "diff"])
        assert out.loc[method, "paper_label"] == f"original {name}"
    assert out.loc["pic2word", "paper"] == 24.70 and pd.isna(out.loc["pic2word", "diff"])
    cells = results.wide_table(compare_with_paper(frame), "fashioniq")["average/Recall@10"]
    assert cells[("ViT-L-14", "Pic2Word")] == "22.00 (original Pic2Word val: 24.70)"
    assert "original model's" in results.table_note(compare_with_paper(frame), "fashioniq")


def test_recorder_writes_json_and_memory_only(tmp_path):
    rec = Recorder(tmp_path / "run", "03_training_phi.ipynb")
    import numpy as np
    import torch

    assert rec.record("a", np.float32(1.5)) == pytest.approx(1.5)
    rec.record(b=torch.tensor(2.0), c={"x": float("nan")}, d=[np.int64(3)])
    values = load_record(tmp_path / "run", "03_training_phi")
    assert values == {"a": 1.5, "b": 2.0, "c": {"x": None}, "d": [3]}
    assert json.loads((tmp_path / "run" / "03_training_phi.json").read_text())["notebook"] == "03_training_phi"
    memory = Recorder("", "x")
    memory.record("k", 1)
    assert memory.values["k"] == 1 and memory.path is None
    with pytest.raises(FileNotFoundError, match="recorded no numbers"):
        load_record(tmp_path, "nothing")


def test_profiles_parse_and_name_only_known_notebooks():
    assert {"quick", "shapes", "paper"} <= set(paper.list_profiles())
    for name in ("quick", "shapes", "paper"):
        profile = paper.load_profile(name)
        assert set(profile.notebooks) == set(paper.NOTEBOOKS)
        assert profile.description
    with pytest.raises(FileNotFoundError, match="known: "):
        paper.load_profile("no-such-profile")


def _write_notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": paper.KERNEL, "display_name": paper.KERNEL_DISPLAY_NAME, "language": "python"}
    params = nbformat.v4.new_code_cell("x = 1\nfigures_dir = ''\nout_dir = ''")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)


@pytest.mark.slow
def test_runner_stops_at_the_failing_cell(tmp_path, monkeypatch):
    """A failing notebook stops the run; the error names the notebook, the cell (its execution count in the
    executed copy, papermill's injected-parameters cell included) and the exception."""
    monkeypatch.setenv("SEARLE_NOTEBOOKS", str(tmp_path))
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "t.yaml").write_text(
        "description: test\nnotebooks:\n  01_textual_inversion: {x: 2}\n  02_pseudo_word_visualisation: {x: 3}\n"
    )
    _write_notebook(
        tmp_path / "01_textual_inversion.ipynb",
        ["from searle_core.notebook.record import Recorder\nRecorder(out_dir, '01_textual_inversion').record('x', x)"],
    )
    _write_notebook(tmp_path / "02_pseudo_word_visualisation.ipynb", ["y = x + 1", "raise ValueError(f'boom {y}')"])
    with pytest.raises(
        paper.NotebookFailed, match=r"02_pseudo_word_visualisation failed in cell \[4\]: ValueError: boom 4"
    ):
        paper.run_paper(
            "t",
            out=tmp_path / "runs",
            figures=tmp_path / "figs",
            log=None,
            notebooks=["01_textual_inversion", "02_pseudo_word_visualisation"],
        )
    # The first notebook ran with the profile's parameter and recorded it.
    assert load_record(tmp_path / "runs" / "t", "01_textual_inversion") == {"x": 2}
    # The failed notebook's executed copy is kept beside, never under its published name.
    run = tmp_path / "runs" / "t"
    assert (run / "02_pseudo_word_visualisation.partial.ipynb").is_file()
    assert not (run / "02_pseudo_word_visualisation.ipynb").exists()
    # Unknown profile keys fail before anything runs.
    (tmp_path / "profiles" / "bad.yaml").write_text("description: bad\nnotebooks:\n  01_textual_inversion: {zzz: 1}\n")
    with pytest.raises(ValueError, match="unknown parameters \\['zzz'\\]"):
        paper.run_paper("bad", out=tmp_path / "runs", log=None, notebooks=["01_textual_inversion"])


@pytest.mark.slow
def test_a_cell_past_the_timeout_fails_the_run(tmp_path, monkeypatch):
    """A kernel that stops answering (a cell that never ends) fails the run instead of hanging it."""
    monkeypatch.setenv("SEARLE_NOTEBOOKS", str(tmp_path))
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "t.yaml").write_text("description: test\nnotebooks:\n  01_textual_inversion: {x: 2}\n")
    _write_notebook(tmp_path / "01_textual_inversion.ipynb", ["import time\ntime.sleep(600)"])
    start = time.perf_counter()
    with pytest.raises(paper.NotebookFailed, match=r"01_textual_inversion: a cell ran longer than 3 s"):
        paper.run_paper("t", out=tmp_path / "runs", log=None, notebooks=["01_textual_inversion"], cell_timeout=3)
    assert time.perf_counter() - start < 120


def test_results_tables_written_as_csv_markdown_latex(tmp_path):
    from types import SimpleNamespace

    from searle_core.notebook import results

    def setting(dataset, backbone, metrics_by_method, variants=None):
        study = SimpleNamespace(
            dataset=dataset, backbone=SimpleNamespace(name=backbone), bench=SimpleNamespace(split="val")
        )
        evaluations = {m: SimpleNamespace(metrics=v) for m, v in metrics_by_method.items()}
        run = {
            "preprocess": "targetpad",
            "eval_precision": "fp32",
            "train_precision": "fp16",
            "phi_epoch": 20,
            "phi_source": "phi.pt",
        }
        return SimpleNamespace(
            study=study, evaluations=evaluations, variants=variants or {}, table=SimpleNamespace(settings=run)
        )

    circo = {
        "mAP@5": 7.0,
        "mAP@10": 8.0,
        "mAP@25": 9.0,
        "mAP@50": 10.0,
        "Recall@5": 1.0,
        "semantic_mAP@10": {"negation": 3.0},
    }
    fiq = {"average": {"Recall@10": 20.0, "Recall@50": 40.0}}
    settings = [
        setting(
            "circo",
            "ViT-B-32",
            {"image-only": circo, "searle-oti": circo, "searle": circo},
            {"searle-oti": "templates"},
        ),
        setting("fashioniq", "ViT-B-32", {"searle": fiq, "searle-oti": fiq}, {"searle-oti": "no phrases"}),
        setting(
            "shapes",
            "shapes-clip",
            {"searle": {"mAP@10": 40.0, "Recall@1": 30.0}, "image-only": {"mAP@10": 5.0, "Recall@1": 4.0}},
        ),
    ]
    compared = results.comparison(settings)
    wide = results.wide_table(compared, "circo")
    assert list(wide.columns) == ["mAP@5", "mAP@10", "mAP@25", "mAP@50"]
    # CIRCO val beside the paper's test number: both splits named, no difference.
    assert wide.loc[("ViT-B-32", "SEARLE"), "mAP@10"] == "8.00 (paper test: 9.94)"
    assert wide.loc[("ViT-B-32", "Image-only"), "mAP@5"] == "7.00 (paper test: 1.34)"
    # OTI on template phrases: labelled, and no paper number beside it.
    assert wide.loc[("ViT-B-32", "SEARLE-OTI (templates)"), "mAP@10"] == "8.00"
    assert ("ViT-B-32", "SEARLE-OTI") not in wide.index
    # FashionIQ val against the paper's val: the difference.
    fashion = results.wide_table(compared, "fashioniq")
    assert fashion.loc[("ViT-B-32", "SEARLE"), "average/Recall@10"] == "20.00 (22.89, -2.89)"
    assert fashion.loc[("ViT-B-32", "SEARLE-OTI (no phrases)"), "average/Recall@10"] == "20.00"
    shapes = results.wide_table(compared, "shapes")
    assert shapes.loc[("shapes-clip", "SEARLE"), "mAP@10"] == "40.00"
    md = results.markdown(wide)
    assert md.splitlines()[0] == "| Backbone | Method | mAP@5 | mAP@10 | mAP@25 | mAP@50 |"
    paths = results.write_comparison(compared, tmp_path)
    assert sorted(p.name for p in paths) == [
        "results-circo.md",
        "results-circo.tex",
        "results-fashioniq.md",
        "results-fashioniq.tex",
        "results-shapes.md",
        "results-shapes.tex",
        "results.csv",
    ]
    assert "\\begin{tabular}" in (tmp_path / "results-circo.tex").read_text()
    circo_md = (tmp_path / "results-circo.md").read_text()
    assert "Cells: ours on val (the paper's number on test). Different splits: no difference" in circo_md
    assert "(templates): OTI's phrase regulariser used offline template phrases" in circo_md
    fashion_md = (tmp_path / "results-fashioniq.md").read_text()
    assert "ours (paper, ours − paper); ours and the paper's on val" in fashion_md
    assert "Cells" not in (tmp_path / "results-shapes.md").read_text()
    rows, title = results.headline_rows(compared, "circo")
    assert title == "circo val: mAP@10 (ticks: paper, test)"
    assert list(rows.method) == ["image-only", "SEARLE-OTI (templates)", "searle"]
    assert rows.set_index("method").paper.isna().to_dict() == {
        "image-only": False,
        "SEARLE-OTI (templates)": True,
        "searle": False,
    }
    back = pd.read_csv(tmp_path / "results.csv")
    assert set(back.columns) == {
        "dataset",
        "split",
        "backbone",
        "method",
        "metric",
        "reproduced",
        "variant",
        "paper",
        "paper_split",
        "paper_label",
        "diff",
        "preprocess",
        "eval_precision",
        "train_precision",
        "phi_epoch",
        "phi_source",
    }
    assert set(back.preprocess) == {"targetpad"} and set(back.train_precision) == {"fp16"}
    assert set(back[back.method == "searle"].phi_epoch) == {20} and back[back.method != "searle"].phi_epoch.isna().all()
    assert (
        "shapes-clip: Settings: preprocessing targetpad; evaluation in fp32; training (OTI, networks) in fp16; "
        "φ phi.pt, epoch 20."
    ) in (tmp_path / "results-shapes.md").read_text()


def test_cli_paper_is_registered():
    from searle_core.cli import build_parser

    args = build_parser().parse_args(["paper", "--profile", "quick", "--out", "x", "--only", "01,04"])
    assert (args.profile, args.out, args.only, args.figures) == ("quick", "x", "01,04", None)
    assert build_parser().parse_args(["paper"]).profile == "shapes"  # the README's main command


def test_oti_without_gpt_phrases_is_a_named_variant(tmp_path):
    """Notebooks and CLI: template phrases (no phrases file) or no regulariser is not the paper's OTI."""
    import pickle
    import zipfile

    from searle_core.inversion.concepts import Vocabulary
    from searle_core.inversion.phrases import template_phrases
    from searle_core.jobs.from_settings import open_vocabulary
    from searle_core.method.oti import OTIConfig
    from searle_core.methods.context import MethodContext
    from searle_core.methods.pipeline import regulariser_variant
    from searle_core.settings import RunSettings

    bank = {"Dog": ["a photo of Dog that runs"]}
    assert regulariser_variant(MethodContext(vocabulary=Vocabulary(["Dog"], bank))) is None
    assert regulariser_variant(MethodContext(vocabulary=Vocabulary(["Dog"], bank, phrases="templates"))) == "templates"
    assert regulariser_variant(MethodContext()) == "no phrases"
    no_gpt = MethodContext(vocabulary=Vocabulary(["Dog"], bank), oti_config=OTIConfig(lambda_gpt=0.0))
    assert regulariser_variant(no_gpt) == "no phrases"
    csv = tmp_path / "classes.csv"
    csv.write_text('LabelName,DisplayName\n/m/0,Dog\n/m/1,"Ducks, geese and swans"\n')
    with zipfile.ZipFile(tmp_path / "GPTNeo27B.zip", "w") as z:
        z.writestr("GPTNeo27B/concept_to_phrases.pkl", pickle.dumps(template_phrases(["Dog"])))
    assert open_vocabulary(RunSettings(dataset="cirr", concepts=str(csv), phrases="")).phrases == "templates"
    given = open_vocabulary(RunSettings(dataset="cirr", concepts=str(csv), phrases=str(tmp_path / "GPTNeo27B.zip")))
    assert given.phrases == "given" and given.concepts == ["Dog", "Ducks, geese and swans"]  # the whole vocabulary
    assert list(given.phrase_bank) == ["Dog"]  # only concepts with usable phrases


# ---- fault cases (@pytest.mark.audit_open; helpers in cli_helpers.py) ----
def _fake_papermill(monkeypatch, interrupt: bool, value: float) -> None:
    """papermill.execute_notebook stand-in: records ``value`` as the notebook would, writes the
    executed notebook, and (``interrupt``) is stopped by Ctrl-C half-way, after both."""
    import papermill

    from searle_core.notebook import papermill_runner
    from searle_core.notebook.record import Recorder

    def execute(source, output, parameters, **kwargs):
        Recorder(parameters["out_dir"], Path(source).stem).record("value", value)
        Path(output).write_text(json.dumps({"cells": 3 if interrupt else 30}))
        if interrupt:
            raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    monkeypatch.setattr(papermill_runner, "require_kernel", lambda kernel=None: None)


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_paper_rerun_interrupted_leaves_previous_results_listed(tmp_path, monkeypatch):
    from searle_core.notebook.papermill_runner import run_paper

    _fake_papermill(monkeypatch, interrupt=False, value=1.0)
    runs = run_paper("quick", tmp_path, notebooks=["01_textual_inversion"], log=None)
    folder = tmp_path / "quick"
    assert runs[0].record == {"value": 1.0}
    before = snapshot(folder)
    _fake_papermill(monkeypatch, interrupt=True, value=2.0)
    with pytest.raises(KeyboardInterrupt):
        run_paper("quick", tmp_path, notebooks=["01_textual_inversion"], log=None)
    after = snapshot(folder)
    kept = {k: v for k, v in after.items() if k in before}
    assert kept == before, "the finished notebook, its JSON or summary.json changed"
    summary = json.loads((folder / "summary.json").read_text())
    for listed in summary["notebooks"]:
        assert Path(listed["output"]).is_file()
    assert json.loads((folder / "01_textual_inversion.json").read_text())["values"] == {"value": 1.0}
    _fake_papermill(monkeypatch, interrupt=False, value=3.0)  # a finished re-run replaces both
    assert run_paper("quick", tmp_path, notebooks=["01_textual_inversion"], log=None)[0].record == {"value": 3.0}
    assert json.loads((folder / "01_textual_inversion.ipynb").read_text()) == {"cells": 30}
