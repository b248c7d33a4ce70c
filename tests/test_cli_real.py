"""``searle evaluate`` and ``searle submission`` end to end on the stand-in datasets.

Every command runs in-process through ``searle_core.cli.main`` with the random-weights small CLIP
(``--backbone shapes-clip --pretrained none``), the real annotation files and generated images.
Where a number can be recomputed with the library (same seed, same preprocessing), it is.
"""

from __future__ import annotations

import csv
import json
import os
import pickle

import pytest
import torch
from PIL import Image
from standins import (  # noqa: F401
    CLI,
    CMYK_ID,
    DATA,
    build_cirr,
    circo_standin,
    cirr_standin,
    cli_backbone,
    fiq_standin,
    protocol_env,
    read_json,
    searle_cache,
)

from searle_core.cli import main
from searle_core.datasets import load_cirr
from searle_core.infra import downloads
from searle_core.inversion.phi_files import load_phi, save_phi
from searle_core.inversion.phrases import load_concepts_csv, save_phrase_pickle, template_phrases
from searle_core.jobs.evaluation import evaluate
from searle_core.method.phi import Phi
from searle_core.methods.context import MethodContext
from searle_core.report.submission import cirr_subset_rankings

pytestmark = pytest.mark.usefixtures("protocol_env")

METHODS = ("image-only", "text-only", "image+text", "searle-oti")
OTI = ["--oti-steps", "2"]
CIRR_KEYS = ["Recall@1", "Recall@5", "Recall@10", "Recall@50", "Recall_subset@1", "Recall_subset@2", "Recall_subset@3"]
CIRCO_KEYS = [
    "mAP@5",
    "mAP@10",
    "mAP@25",
    "mAP@50",
    "Recall@5",
    "Recall@10",
    "Recall@25",
    "Recall@50",
    "semantic_mAP@10",
]


def searle(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def evaluate_json(capsys, dataset: str, root, method: str, *extra, stderr: list | None = None) -> dict:
    """``searle evaluate --json``: the parsed metrics (stderr appended to ``stderr`` if given)."""
    code, out, err = searle(
        capsys,
        "evaluate",
        "--dataset",
        dataset,
        "--dataset-path",
        root,
        "--method",
        method,
        "--json",
        *CLI,
        *OTI,
        *extra,
    )
    assert code == 0, err
    if stderr is not None:
        stderr.append(err)
    lines = out.splitlines()
    assert len(lines) == 1, out  # one JSON object on one line, nothing else on stdout
    return json.loads(lines[0])


def _percentages(metrics: dict) -> list[float]:
    return [v for x in metrics.values() for v in (_percentages(x) if isinstance(x, dict) else [x])]


def test_cirr_every_method(cirr_standin, cli_backbone, capsys):
    results = {m: evaluate_json(capsys, "cirr", cirr_standin, m) for m in METHODS}
    for metrics in results.values():
        assert list(metrics) == CIRR_KEYS and all(0 <= v <= 100 for v in metrics.values())
    assert results["image-only"] != results["text-only"]
    # The CLI's random weights (seed 42) and targetpad give what the library gives.
    library = evaluate("image-only", load_cirr(cirr_standin, "val"), cli_backbone, MethodContext(progress=False))
    assert results["image-only"] == pytest.approx(library.metrics)


def test_cirr_printed_report(cirr_standin, capsys):
    code, out, _ = searle(
        capsys, "evaluate", "--dataset", "cirr", "--dataset-path", cirr_standin, "--method", "image+text", *CLI
    )
    assert code == 0
    header, *rows, settings = out.splitlines()
    assert header.startswith("image+text on cirr val (30 queries, ") and "preprocess targetpad" in header
    assert [r.split()[0] for r in rows] == CIRR_KEYS
    assert settings == ("Settings: preprocessing targetpad; evaluation in fp32; training (OTI, networks) in fp32.")


def test_fashioniq_every_method_and_one_category(fiq_standin, capsys):
    for method in METHODS:
        metrics = evaluate_json(capsys, "fashioniq", fiq_standin, method)
        assert list(metrics) == ["dress", "shirt", "toptee", "average"]
        assert all(list(v) == ["Recall@10", "Recall@50"] for v in metrics.values())
        for k in ("Recall@10", "Recall@50"):
            assert metrics["average"][k] == pytest.approx(sum(metrics[c][k] for c in ("dress", "shirt", "toptee")) / 3)
    dress = evaluate_json(capsys, "fashioniq", fiq_standin, "text-only", "--category", "dress")
    assert list(dress) == ["dress", "average"] and dress["dress"] == dress["average"]


def test_circo_every_method_with_a_cmyk_reference(circo_standin, capsys):
    assert Image.open(circo_standin / f"COCO2017_unlabeled/unlabeled2017/{CMYK_ID:012d}.jpg").mode == "CMYK"
    for method in METHODS:
        metrics = evaluate_json(capsys, "circo", circo_standin, method)
        assert list(metrics) == CIRCO_KEYS and all(0 <= v <= 100 for v in _percentages(metrics))
        assert set(metrics["semantic_mAP@10"]) <= {
            "cardinality",
            "addition",
            "negation",
            "direct_addressing",
            "compare_change",
            "comparative_statement",
            "statement_with_conjunction",
            "spatial_relations_background",
            "viewpoint",
        }


def test_circo_submissions_match_the_server_format(circo_standin, tmp_path, capsys):
    code, out, err = searle(
        capsys,
        "submission",
        "--dataset",
        "circo",
        "--dataset-path",
        circo_standin,
        "--method",
        "image-only",
        "--out",
        tmp_path / "test.json",
        *CLI,
    )
    assert code == 0, err
    assert f"wrote {tmp_path / 'test.json'}" in out
    example = read_json(DATA / "circo/submission_val_example.json")
    written = read_json(tmp_path / "test.json")
    listed = {
        img["id"]
        for img in read_json(circo_standin / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json")["images"]
    }
    assert len(written) == 800 and list(written) == [str(i) for i in range(800)]
    for submission in (written, example):
        assert all(
            k.isdigit() and len(v) == 50 == len(set(v)) and all(type(i) is int for i in v)
            for k, v in submission.items()
        )
    assert all(set(v) <= listed for v in written.values())

    # Validation: the written file, scored like the server, gives the metrics `evaluate` prints.
    code, _, err = searle(
        capsys,
        "submission",
        "--dataset",
        "circo",
        "--dataset-path",
        circo_standin,
        "--split",
        "val",
        "--method",
        "image+text",
        "--out",
        tmp_path / "val.json",
        *CLI,
    )
    assert code == 0, err
    assert list(read_json(tmp_path / "val.json")) == list(example)
    code, out, _ = searle(
        capsys,
        "score",
        "circo",
        "--annotations",
        circo_standin / "annotations/val.json",
        "--predictions",
        tmp_path / "val.json",
        "--json",
    )
    scored = json.loads(out)
    printed = evaluate_json(capsys, "circo", circo_standin, "image+text")
    assert {k: scored[k] for k in CIRCO_KEYS[:-1]} == pytest.approx({k: printed[k] for k in CIRCO_KEYS[:-1]})
    assert scored["semantic_mAP@10"] == pytest.approx(printed["semantic_mAP@10"])


def test_cirr_submission_files(cirr_standin, cli_backbone, tmp_path, capsys):
    code, out, err = searle(
        capsys,
        "submission",
        "--dataset",
        "cirr",
        "--dataset-path",
        cirr_standin,
        "--method",
        "text-only",
        "--name",
        "run1",
        "--out",
        tmp_path,
        *CLI,
    )
    assert code == 0, err
    recall = read_json(tmp_path / "recall_submission_run1.json")
    subset = read_json(tmp_path / "recall_subset_submission_run1.json")
    assert (recall.pop("version"), recall.pop("metric")) == ("rc2", "recall")
    assert (subset.pop("version"), subset.pop("metric")) == ("rc2", "recall_subset")
    bench = load_cirr(cirr_standin, "test")
    assert list(recall) == list(subset) == [q.query_id for q in bench.queries]
    full = evaluate("text-only", bench, cli_backbone, MethodContext(progress=False))
    expected_subset = cirr_subset_rankings(bench.queries, full.rankings)
    for q, ranking in zip(bench.queries, full.rankings):
        assert q.reference not in recall[q.query_id] and recall[q.query_id] == ranking[:50]
        assert len(subset[q.query_id]) == 3 and q.reference not in subset[q.query_id]
        assert set(subset[q.query_id]) <= set(q.subset) and subset[q.query_id] == expected_subset[q.query_id]


@pytest.mark.parametrize(
    "dataset, marker",
    [
        ("cirr", "image_splits/split.rc2.{train,val,test1}.json"),
        ("fashioniq", "images/<asin>.jpg"),
        ("circo", "COCO2017_unlabeled/"),
    ],
)
def test_layout_errors_print_the_expected_layout(dataset, marker, tmp_path, capsys):
    code, out, err = searle(capsys, "evaluate", "--dataset", dataset, "--dataset-path", tmp_path, *CLI)
    assert code == 2 and out == ""
    assert err.startswith("searle evaluate: error: dataset folder") and "Expected layout:" in err and marker in err


def test_usage_errors(cirr_standin, capsys):
    code, _, err = searle(capsys, "evaluate", "--dataset", "circo", *CLI)
    assert code == 2 and "needs --dataset-path" in err
    code, _, err = searle(
        capsys, "evaluate", "--dataset", "cirr", "--dataset-path", cirr_standin, "--split", "test", *CLI
    )
    assert code == 2 and "use `searle submission`" in err
    code, _, err = searle(
        capsys, "evaluate", "--dataset", "cirr", "--dataset-path", cirr_standin, "--method", "searle", *CLI
    )
    assert code == 2 and "--phi-checkpoint" in err
    code, _, err = searle(
        capsys, "submission", "--dataset", "fashioniq", "--dataset-path", cirr_standin, "--out", "x.json", *CLI
    )
    assert code == 2 and "cirr and circo only" in err


def test_trained_baselines_say_where_their_unlabeled_images_come_from(cirr_standin, tmp_path, capsys):
    base = ["evaluate", "--dataset", "cirr", "--dataset-path", cirr_standin, "--method", "pic2word", *CLI]
    code, _, err = searle(capsys, *base)
    assert code == 2 and "--unlabeled DIR" in err and "Traceback" not in err
    code, _, err = searle(capsys, *base, "--unlabeled", tmp_path / "missing")
    assert code == 2 and f"image folder {tmp_path / 'missing'} does not exist" in err


def test_corrupt_image_is_a_one_line_error_or_skipped(tmp_path, capsys):
    root = build_cirr(tmp_path / "cirr", n_queries=3, extra_gallery=0)
    victim = read_json(root / "cirr/captions/cap.rc2.val.json")[0]["reference"]
    (root / read_json(root / "cirr/image_splits/split.rc2.val.json")[victim]).write_bytes(b"not a png")
    code, _, err = searle(
        capsys, "evaluate", "--dataset", "cirr", "--dataset-path", root, "--method", "image-only", *CLI
    )
    assert code == 2 and "Traceback" not in err
    assert f"{victim}.png" in err and "pairid" in err
    code, out, err = searle(
        capsys,
        "evaluate",
        "--dataset",
        "cirr",
        "--dataset-path",
        root,
        "--method",
        "image-only",
        "--check-images",
        "open",
        "--on-missing",
        "skip",
        "--json",
        *CLI,
    )
    assert code == 0 and "skipped 1 missing or unreadable image(s)" in err and list(json.loads(out)) == CIRR_KEYS


def test_phi_checkpoints_in_the_authors_layout(cirr_standin, cli_backbone, tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    path = tmp_path / "SEARLE_shapes.pt"
    save_phi(Phi.for_backbone(cli_backbone), path)
    assert list(torch.load(path, weights_only=True)) == ["Phi"]
    metrics = evaluate_json(capsys, "cirr", cirr_standin, "searle", "--phi-checkpoint", path)
    ctx = MethodContext(phi=load_phi(path, cli_backbone), progress=False)
    library = evaluate("searle", load_cirr(cirr_standin, "val"), cli_backbone, ctx)
    assert list(metrics) == CIRR_KEYS and metrics == pytest.approx(library.metrics)

    seen = {}

    def fake_download(url, dst, hash_prefix=None, progress=True):
        seen.update(url=url)
        with open(dst, "wb") as f:
            f.write(path.read_bytes())

    monkeypatch.setattr(downloads, "fetch_url_to_file", fake_download)
    url = "https://example.invalid/weights/SEARLE_shapes.pt"
    assert evaluate_json(capsys, "cirr", cirr_standin, "searle", "--phi-checkpoint", url) == metrics
    assert seen == {"url": url}

    wide = cli_backbone.embed_dim + 8  # e.g. SEARLE_ViT-L14.pt on a ViT-B-32
    save_phi(Phi(wide, 4 * wide, wide), tmp_path / "wide.pt")
    code, _, err = searle(
        capsys,
        "evaluate",
        "--dataset",
        "cirr",
        "--dataset-path",
        cirr_standin,
        "--method",
        "searle",
        "--phi-checkpoint",
        tmp_path / "wide.pt",
        *CLI,
    )
    assert code == 2 and f"φ maps {wide}-d features to {wide}-d tokens" in err
    assert f"{cli_backbone.embed_dim}-d features and {cli_backbone.token_dim}-d tokens" in err

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"Phi": Exploit()}, tmp_path / "evil.pt")
    code, _, err = searle(
        capsys,
        "evaluate",
        "--dataset",
        "cirr",
        "--dataset-path",
        cirr_standin,
        "--method",
        "searle",
        "--phi-checkpoint",
        tmp_path / "evil.pt",
        *CLI,
    )
    assert code == 2 and "Traceback" not in err and not (tmp_path / "pwned").exists()


def test_searle_oti_with_open_images_concepts_and_phrases(cirr_standin, shared_data, tmp_path, capsys):
    names = load_concepts_csv(shared_data / "concepts/oidv7-class-descriptions.csv")[:20]
    csv = tmp_path / "classes.csv"
    csv.write_text("LabelName,DisplayName\n" + "".join(f'/m/{i},"{n}"\n' for i, n in enumerate(names)))
    bank = template_phrases(names, n_per_concept=4)
    bank[names[0]] = ["a photo of something else entirely"]  # does not contain its concept: dropped
    save_phrase_pickle(bank, tmp_path / "phrases.pkl")
    notes = []
    metrics = evaluate_json(
        capsys,
        "cirr",
        cirr_standin,
        "searle-oti",
        "--concepts",
        csv,
        "--phrases",
        tmp_path / "phrases.pkl",
        stderr=notes,
    )
    assert list(metrics) == CIRR_KEYS and "associated over all 20; 19 of 20 have usable phrases" in notes[0]

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"Dog": [os.system]}))
    code, _, err = searle(
        capsys,
        "evaluate",
        "--dataset",
        "cirr",
        "--dataset-path",
        cirr_standin,
        "--method",
        "searle-oti",
        "--phrases",
        tmp_path / "evil.pkl",
        *CLI,
        *OTI,
    )
    assert code == 2 and "refusing to load" in err and "Traceback" not in err


def test_preprocess_option_selects_the_cached_features(cirr_standin, tmp_path, monkeypatch, capsys):
    # An empty cache of its own: Pic2Word's runs elsewhere fill the session's with CLIP-preprocessed features.
    monkeypatch.setenv("SEARLE_DATA", str(tmp_path))
    evaluate_json(capsys, "cirr", cirr_standin, "image-only", "--preprocess", "targetpad")
    before = set((tmp_path / "cache/features").glob("image-*.pt"))
    clip = evaluate_json(capsys, "cirr", cirr_standin, "image-only", "--preprocess", "clip")
    created = set((tmp_path / "cache/features").glob("image-*.pt")) - before
    # One new file: the gallery under the other preprocessing; the references are served from it.
    assert before and len(created) == 1
    again = evaluate_json(capsys, "cirr", cirr_standin, "image-only", "--preprocess", "clip")
    assert again == clip and set((tmp_path / "cache/features").glob("image-*.pt")) - before == created


def test_oti_without_gpt_phrases_is_labelled_in_the_table(cirr_standin, shared_data, tmp_path, capsys):
    """`searle table` on real data: OTI with template phrases (no --phrases) or without a regulariser
    (no --concepts) is a labelled variant, not "SEARLE-OTI"; with the authors' phrases (their zip) it is."""
    import zipfile

    names = load_concepts_csv(shared_data / "concepts/oidv7-class-descriptions.csv")[:20]
    classes = tmp_path / "classes.csv"
    classes.write_text("LabelName,DisplayName\n" + "".join(f'/m/{i},"{n}"\n' for i, n in enumerate(names)))
    with zipfile.ZipFile(tmp_path / "GPTNeo27B.zip", "w") as z:
        z.writestr("GPTNeo27B/concept_to_phrases.pkl", pickle.dumps(template_phrases(names, n_per_concept=4)))
    base = [
        "table",
        "--dataset",
        "cirr",
        "--dataset-path",
        cirr_standin,
        "--methods",
        "image-only,searle-oti",
        "--bootstrap",
        "10",
        *CLI,
        *OTI,
    ]
    expected = {
        "templates": ["--concepts", classes],
        "no phrases": [],
        None: ["--concepts", classes, "--phrases", tmp_path / "GPTNeo27B.zip"],
    }
    for variant, options in expected.items():
        out = tmp_path / str(variant)
        code, printed, err = searle(capsys, *base, *options, "--out", out)
        assert code == 0, err
        name = "SEARLE-OTI" + (f" ({variant})" if variant else "")
        rows = {r["method"]: r["name"] for r in csv.DictReader((out / "cirr-val.csv").open())}
        assert rows == {"image-only": "Image-only", "searle-oti": name}
        md = (out / "cirr-val.md").read_text()
        assert f"| {name} |" in md and f"{name}  " in printed
        assert (f"({variant}): " in md and "not the paper's OTI" in md) if variant else "not the paper's" not in md
        assert f"| Recall@1 | − {name} |" in (out / "cirr-val-vs-searle-oti.md").read_text()
