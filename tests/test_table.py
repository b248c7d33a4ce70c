"""The results table: rows, columns, CSV and Markdown, and the `searle table` command."""

import csv
import json

import pytest

from searle_core.jobs import artifacts
from searle_core.report.table import (
    TABLE_METHODS,
    Table,
    TableRow,
    evaluate_methods,
    flatten,
    to_dict,
    to_markdown,
    write_table,
)

SHAPES_COLUMNS = ["mAP@5", "mAP@10", "mAP@25", "mAP@50", "Recall@1", "Recall@5", "Recall@10", "Recall@50"]


@pytest.fixture(autouse=True)
def models_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "models_dir", lambda: tmp_path / "models")


#: The paper's table rows; LinCIR, its successor, follows them in TABLE_METHODS.
PAPER_ROWS = TABLE_METHODS[: TABLE_METHODS.index("searle") + 1]


def hand_table() -> Table:
    rows = [
        TableRow(
            m,
            {c: 10.0 * i + j for j, c in enumerate(SHAPES_COLUMNS)},
            seconds=1.5 * i,
            train_seconds=42.0 if m in ("pic2word", "palavra", "searle") else None,
            trained_now=m == "searle",
        )
        for i, m in enumerate(PAPER_ROWS)
    ]
    return Table(
        rows,
        "shapes",
        "test",
        "shapes-clip",
        400,
        1080,
        gallery_seconds=0.3,
        settings={
            "preprocess": "targetpad",
            "eval_precision": "fp32",
            "train_precision": "fp16",
            "phi_epoch": 100,
            "phi_source": "SEARLE_ViT-B32.pt",
        },
    )


def test_csv_and_markdown_have_every_method_and_metric(tmp_path):
    table = hand_table()
    csv_path, md_path = write_table(table, tmp_path / "out")
    assert (csv_path.name, md_path.name) == ("shapes-test.csv", "shapes-test.md")
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == list(PAPER_ROWS) and TABLE_METHODS == (*PAPER_ROWS, "lincir")
    assert list(rows[0]) == ["method", "name"] + SHAPES_COLUMNS + [
        "seconds",
        "train_seconds",
        "preprocess",
        "eval_precision",
        "train_precision",
        "phi_epoch",
        "phi_source",
    ]
    # How the numbers were made is on every row; φ's epoch and file only on SEARLE's.
    assert {(r["preprocess"], r["eval_precision"], r["train_precision"]) for r in rows} == {
        ("targetpad", "fp32", "fp16")
    }
    assert [r["phi_epoch"] for r in rows] == [""] * 7 + ["100"] and rows[-1]["phi_source"] == "SEARLE_ViT-B32.pt"
    assert float(rows[2]["mAP@10"]) == 21.0 and rows[0]["train_seconds"] == "" and float(rows[5]["train_seconds"]) == 42
    assert [r["name"] for r in rows] == [
        "Image-only",
        "Text-only",
        "Image + Text",
        "Captioning",
        "PALAVRA",
        "Pic2Word",
        "SEARLE-OTI",
        "SEARLE",
    ]
    md = md_path.read_text().splitlines()
    header = next(line for line in md if line.startswith("| Method"))
    assert header == "| Method | " + " | ".join(SHAPES_COLUMNS) + " | Time (s) | Training (s) |"
    body = [line for line in md if line.startswith("| ") and not line.startswith("| Method")]
    assert len(body) == 8 and body[-1].startswith("| SEARLE | 70.00 | 71.00")
    assert "42.0 (cached)" in body[4] and body[-1].endswith("| 10.5 | 42.0 |")
    assert (
        "Settings: preprocessing targetpad; evaluation in fp32; training (OTI, networks) in fp16; "
        "φ SEARLE_ViT-B32.pt, epoch 100."
    ) in md
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_nested_metrics_are_flattened_and_json_is_plain():
    assert flatten({"dress": {"Recall@10": 1.0}, "average": {"Recall@10": 2.0}, "R@1": 3}) == {
        "dress/Recall@10": 1.0,
        "average/Recall@10": 2.0,
        "R@1": 3.0,
    }
    out = to_dict(hand_table())
    assert list(out) == list(PAPER_ROWS) and out["searle"]["train_seconds"] == 42.0
    assert out["image-only"]["train_seconds"] is None
    json.dumps(out)
    assert "shapes test: 400 queries, 1080 gallery images" in to_markdown(hand_table())


@pytest.mark.slow
def test_evaluate_methods_on_the_quick_world_shares_the_gallery():
    from searle_core.world.setup import world_setup

    world, bb = world_setup(quick=True, device="cpu", progress=False)
    bench = world.benchmark("val")
    table = evaluate_methods(bench, bb, ["image-only", "text-only", "image+text"], log=None)
    assert [r.method for r in table.rows] == ["image-only", "text-only", "image+text"]
    assert table.columns == SHAPES_COLUMNS
    assert table.n_queries == len(bench.queries) and table.n_gallery == len(bench.gallery)
    assert all(r.train_seconds is None for r in table.rows)


@pytest.mark.slow
def test_table_command_writes_csv_and_markdown(tmp_path, capsys):
    from searle_core.cli import main

    assert (
        main(
            [
                "table",
                "--dataset",
                "shapes",
                "--split",
                "test",
                "--quick",
                "--device",
                "cpu",
                "--no-progress",
                "--methods",
                "image-only,text-only,captioning",
                "--out",
                str(tmp_path),
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(out) == ["image-only", "text-only", "captioning"]
    assert (tmp_path / "shapes-test-quick.csv").is_file() and (tmp_path / "shapes-test-quick.md").is_file()
    assert not list(tmp_path.glob("*-vs-*"))  # no SEARLE-OTI row, no --compare-to: no comparison
    assert (
        main(
            [
                "table",
                "--quick",
                "--methods",
                "image-only,nonsense",
                "--out",
                str(tmp_path),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "unknown method 'nonsense'" in capsys.readouterr().err
    assert (
        main(
            [
                "table",
                "--quick",
                "--methods",
                "image-only",
                "--compare-to",
                "searle",
                "--out",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "--compare-to 'searle' is not one of the table's methods (image-only)" in capsys.readouterr().err


@pytest.mark.slow
def test_table_command_compares_every_method_to_one(tmp_path, capsys):
    from searle_core.cli import main

    assert (
        main(
            [
                "table",
                "--dataset",
                "shapes",
                "--quick",
                "--device",
                "cpu",
                "--no-progress",
                "--methods",
                "image-only,text-only,image+text",
                "--compare-to",
                "image+text",
                "--bootstrap",
                "200",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "paired bootstrap over the" in out and "| Method | mAP@10 | − Image + Text | 95 % interval | clear |" in out
    with (tmp_path / "shapes-val-quick-vs-image+text.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["image-only", "text-only"]
    table = {r["method"]: float(r["mAP@10"]) for r in csv.DictReader((tmp_path / "shapes-val-quick.csv").open())}
    for r in rows:  # value and difference agree with the table itself
        assert float(r["value"]) == pytest.approx(table[r["method"]], abs=1e-3)
        assert float(r["diff"]) == pytest.approx(table[r["method"]] - table["image+text"], abs=1e-3)
        assert float(r["low"]) <= float(r["diff"]) <= float(r["high"])


def test_markdown_is_the_shared_writer_output():
    """The exact Markdown the README quotes: one writer (``searle_core.infra.markdown``) for every table."""
    from searle_core.infra.markdown import markdown_table

    table = Table(
        [
            TableRow("image-only", {"mAP@5": 1.234, "mAP@10": 2.5}, 0.31),
            TableRow("searle-oti", {"mAP@5": 11.0}, 12.0, 40.0, False, "templates"),
        ],
        "shapes",
        "val",
        "shapes-clip",
        40,
        100,
        0.5,
        notes=["a note"],
    )
    assert to_markdown(table).splitlines()[:6] == [
        "shapes val: 40 queries, 100 gallery images, backbone shapes-clip",
        "",
        "| Method | mAP@5 | mAP@10 | Time (s) | Training (s) |",
        "|---|---:|---:|---:|---:|",
        "| Image-only | 1.23 | 2.50 | 0.3 |  |",
        "| SEARLE-OTI (templates) | 11.00 | nan | 12.0 | 40.0 (cached) |",
    ]
    assert to_markdown(table).splitlines()[6] == "" and to_markdown(table).splitlines()[7].startswith(
        "Time: this run's"
    )
    assert (
        markdown_table(["a", "b", "c"], [[1, "x", 2.5]], [True, False, True])
        == "| a | b | c |\n|---:|---|---:|\n| 1 | x | 2.5 |\n"
    )
    with pytest.raises(ValueError, match="a row of 2 cells under 3 columns"):
        markdown_table(["a", "b", "c"], [[1, 2]])
    with pytest.raises(ValueError, match="2 alignments for 3 columns"):
        markdown_table(["a", "b", "c"], [], [True, False])


def test_one_loop_skips_labels_and_notes_as_both_callers_need(tiny_study, monkeypatch):
    """``evaluate_methods``' bookkeeping without running a method: skipped methods get a note and no
    row; OTI without phrases labels SEARLE-OTI, and SEARLE only when its φ was distilled here; the
    gallery may come from a function (a notebook's cache), called once; a line per finished method."""
    import torch

    from searle_core.methods.context import MethodContext
    from searle_core.methods.pipeline import MethodResult
    from searle_core.report import table as pipeline

    ran, galleries, lines = [], [], []

    def fake_evaluate(method, bench, backbone, ctx, gallery=None):
        ran.append((method, gallery))
        return MethodResult(method, {"mAP@10": float(len(ran))}, [["x"]], torch.zeros(1, 2), 1.0)

    monkeypatch.setattr(pipeline, "evaluate", fake_evaluate)
    ctx = MethodContext(progress=False)  # no vocabulary: OTI without phrases
    ctx.token_seconds["searle-oti"] = 5.0  # tokens given with their compute time, as notebook 4 does
    methods = ["image-only", "pic2word", "searle-oti", "searle"]
    table = evaluate_methods(
        tiny_study.bench,
        tiny_study.backbone,
        methods,
        ctx,
        lines.append,
        gallery=lambda: galleries.append(1) or {"all": "G"},
        skip={"pic2word": "no images"},
        phi_distilled=True,
    )
    assert [m for m, _ in ran] == ["image-only", "searle-oti", "searle"] and all(g == {"all": "G"} for _, g in ran)
    assert (
        galleries == [1]
        and table.skipped == {"pic2word": "no images"}
        and list(table.evaluations) == list(table.rankings)
    )
    assert [(r.method, r.variant, r.seconds) for r in table.rows] == [
        ("image-only", None, 1.0),
        ("searle-oti", "no phrases", 6.0),
        ("searle", "no phrases", 1.0),
    ]
    assert lines == [
        "Image-only: mAP@10 1.00 (1.0 s)",
        "SEARLE-OTI (no phrases): mAP@10 2.00 (6.0 s)",
        "SEARLE (no phrases): mAP@10 3.00 (1.0 s)",
    ]
    assert table.notes[0] == "Pic2Word: not run (no images)." and table.notes[1].startswith("SEARLE-OTI's time is")
    assert table.notes[2].startswith("(no phrases): OTI ran without its phrase regulariser") and len(table.notes) == 3
    given = evaluate_methods(
        tiny_study.bench,
        tiny_study.backbone,
        ["searle-oti", "searle"],
        MethodContext(progress=False),
        None,
        gallery={"all": "G"},
    )  # φ from a checkpoint keeps the paper's name
    assert [r.variant for r in given.rows] == ["no phrases", None] and len(given.notes) == 1
    with pytest.raises(ValueError, match="unknown method 'nonsense'"):
        evaluate_methods(tiny_study.bench, tiny_study.backbone, ["image-only", "nonsense"], ctx, None, gallery={})
    assert len(ran) == 5  # the unknown method stopped the table before any method ran


@pytest.mark.audit_open
@pytest.mark.parametrize("methods", ["", " , "])
def test_table_with_no_method_is_refused_before_anything_is_written(methods, tmp_path, capsys):
    """--methods '' wrote an empty table over the previous results."""
    from cli_helpers import fails

    (tmp_path / "shapes-val-quick.csv").write_text("earlier results\n")
    argv = ["table", "--dataset", "shapes", "--quick", "--device", "cpu", "--methods", methods, "--out", tmp_path]
    fails(capsys, argv, "--methods", "names no method")
    assert (tmp_path / "shapes-val-quick.csv").read_text() == "earlier results\n"
