"""The dataset loaders (``searle_core.datasets``) on damaged annotation files: invalid JSON, other encodings,
missing keys, ids and captions of the wrong type, repeated ids, NaN; each is one error line naming the
file and the entry. What the real releases hold still loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import (
    CLI,
    circo,  # noqa: F401
    circo_annotations,
    fails,
    snapshot,
    tiny_circo,
    tiny_cirr,
    write_image,
    write_json,
)
from cli_helpers import evaluate_fails as _evaluate_fails
from cli_helpers import tiny_fashioniq as _fashioniq

from searle_core.datasets import load_circo, load_cirr
from searle_core.infra.errors import InputError

pytestmark = pytest.mark.audit_open


EVAL = ["evaluate", "--method", "image-only", *CLI, "--num-workers", "0"]


def _cirr_caption_field(root: Path, field: str, raw: str) -> Path:
    """Write ``raw`` (JSON text) as ``field`` of the second CIRR caption entry."""
    tiny_cirr(root)
    caps_file = root / "cirr/captions/cap.rc2.val.json"
    caps = json.loads(caps_file.read_text())
    caps[1][field] = "@@RAW@@"
    caps_file.write_text(json.dumps(caps).replace('"@@RAW@@"', raw))
    return caps_file


@pytest.mark.usefixtures("one_thread", "opened")
@pytest.mark.parametrize("raw,culprit", [("NaN", "NaN"), ("1e300", "1e+300"), ('"12.5"', "'12.5'"), ("1.0", "1.0")])
def test_cirr_pairid_that_is_not_an_integer(raw, culprit, tmp_path, capsys):
    caps = _cirr_caption_field(tmp_path / "cirr", "pairid", raw)
    line = fails(capsys, [*EVAL, "--dataset", "cirr", "--dataset-path", tmp_path / "cirr"], caps, "pairid", culprit)
    assert "[1]" in line or "#1" in line  # the entry


@pytest.mark.usefixtures("one_thread", "opened")
def test_cirr_test1_pairid_never_reaches_the_server_file(tmp_path, capsys):
    """A reported case: test1's ``pairid`` of ``NaN`` gave the server file the key ``"nan"``."""
    root = tiny_cirr(tmp_path / "cirr")
    names = [f"test1-{i}-0-img0" for i in range(52)]  # the server file needs 50 per query
    caps = [
        {"pairid": p, "reference": names[q], "caption": "is red", "img_set": {"id": q, "members": names[q : q + 6]}}
        for q, p in enumerate([0, 1, "@"])
    ]
    caps_file = root / "cirr/captions/cap.rc2.test1.json"
    caps_file.write_text(json.dumps(caps).replace('"@"', "NaN"))
    write_json(root / "cirr/image_splits/split.rc2.test1.json", {n: f"./test1/{n}.png" for n in names})
    for i, name in enumerate(names):
        write_image(root / "test1" / f"{name}.png", i)
    argv = ["submission", "--dataset", "cirr", "--dataset-path", root, "--split", "test1", *EVAL[1:]]
    fails(capsys, [*argv, "--out", tmp_path / "sub"], caps_file, "[2].pairid", "NaN")
    assert not (tmp_path / "sub").exists() or not list((tmp_path / "sub").rglob("*.json"))


@pytest.mark.usefixtures("one_thread", "opened")
@pytest.mark.parametrize("raw,kind", [("null", "null"), ("42", "int"), ('{"text": "is red"}', "dict")])
def test_cirr_caption_that_is_not_text(raw, kind, tmp_path, capsys):
    caps = _cirr_caption_field(tmp_path / "cirr", "caption", raw)
    fails(capsys, [*EVAL, "--dataset", "cirr", "--dataset-path", tmp_path / "cirr"], caps, "pairid 1", "caption", kind)


@pytest.mark.usefixtures("one_thread", "opened")
def test_circo_ids_and_captions_are_checked(tmp_path, capsys):
    from cli_helpers import circo_annotations

    root = tiny_circo(tmp_path / "circo")
    ann = root / "annotations/val.json"
    for field, value, culprit in [
        ("id", "12.5", "'12.5'"),
        ("reference_img_id", True, "True"),
        ("gt_img_ids", [2, 2.5], "2.5"),
        ("relative_caption", None, "null"),
    ]:
        anns = circo_annotations()
        anns[1][field] = value
        write_json(ann, anns)
        fails(capsys, [*EVAL, "--dataset", "circo", "--dataset-path", root], ann, field, culprit)


@pytest.mark.usefixtures("one_thread", "opened")
def test_circo_nan_names_file_and_field(tmp_path, capsys):
    root = tiny_circo(tmp_path / "circo")
    ann = root / "annotations/val.json"
    ann.write_text(ann.read_text().replace('"reference_img_id": 2', '"reference_img_id": NaN', 1))
    fails(capsys, [*EVAL, "--dataset", "circo", "--dataset-path", root], ann, "[1].reference_img_id", "NaN")


@pytest.mark.usefixtures("one_thread", "opened")
def test_repeated_ids_in_every_table_the_loaders_read(tmp_path, capsys):
    root = tiny_circo(tmp_path / "circo")
    info = root / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
    listing = json.loads(info.read_text())
    listing["images"][5]["id"] = 3  # id 3 now names two files
    write_json(info, listing)
    fails(capsys, [*EVAL, "--dataset", "circo", "--dataset-path", root], info, "image id '3'", "2 times")
    fiq = _fashioniq(tmp_path / "fiq", asins=("a1", "a2", "a3", "a2"))
    fails(capsys, [*EVAL, "--dataset", "fashioniq", "--dataset-path", fiq], "split.dress.val.json", "asin 'a2'")
    tiny_circo(root)
    anns = json.loads((root / "annotations/val.json").read_text())
    anns[0]["gt_img_ids"] = [2, 3, 2]
    write_json(root / "annotations/val.json", anns)
    fails(capsys, [*EVAL, "--dataset", "circo", "--dataset-path", root], "query id 0", "gt_img_ids entry '2'")


@pytest.mark.usefixtures("one_thread", "opened")
def test_file_name_with_a_lone_surrogate_names_the_file(tmp_path, capsys):
    root = tiny_circo(tmp_path / "circo")
    info = root / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
    info.write_text(info.read_text().replace('"000000000004.jpg"', '"\\ud800.jpg"'))
    fails(capsys, [*EVAL, "--dataset", "circo", "--dataset-path", root], info, "image id 4", "\\ud800")


@pytest.mark.usefixtures("one_thread", "opened")
def test_cirr_captions_of_another_split_name_both_files_not_an_api(tmp_path, capsys):
    root = tiny_cirr(tmp_path / "cirr")
    split = root / "cirr/image_splits/split.rc2.val.json"
    write_json(split, {f"test1-{i}-0-img0": f"./test1/test1-{i}-0-img0.png" for i in range(8)})
    for i in range(8):
        write_image(root / "test1" / f"test1-{i}-0-img0.png", i)
    line = fails(capsys, [*EVAL, "--dataset", "cirr", "--dataset-path", root], "cap.rc2.val.json", split, "same split")
    assert "rank_by_scores" not in line


@pytest.mark.usefixtures("one_thread", "opened")
def test_cirr_img_set_that_is_not_an_object(tmp_path, capsys):
    caps = _cirr_caption_field(tmp_path / "cirr", "img_set", '["dev-0-0-img0"]')
    fails(capsys, [*EVAL, "--dataset", "cirr", "--dataset-path", tmp_path / "cirr"], caps, "pairid 1", "img_set")


@pytest.mark.usefixtures("one_thread", "opened")
def test_the_checks_accept_what_the_releases_hold(tmp_path):
    """Test splits without ground truths, ids given as digit strings, paths with ``./``: all load."""
    from searle_core.datasets import load_circo, load_cirr

    circo = load_circo(tiny_circo(tmp_path / "circo"), "test")
    assert [q.ground_truths for q in circo.queries] == [(), (), ()] and len(circo.gallery) == 8
    root = tiny_cirr(tmp_path / "cirr")
    caps = json.loads((root / "cirr/captions/cap.rc2.val.json").read_text())
    caps[0]["pairid"] = "0"
    write_json(root / "cirr/captions/cap.rc2.val.json", caps)
    cirr = load_cirr(root, "val")
    assert [q.query_id for q in cirr.queries] == ["0", "1", "2"]
    assert cirr.images.path("dev-1-0-img0") == root / "dev" / "dev-1-0-img0.png"


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_annotation_file_with_invalid_json_names_file_and_line(circo, tmp_path, capsys):
    ann = circo / "annotations/val.json"
    ann.write_text('[\n  {"id": 0,\n   "reference_img_id": 1\n')
    _evaluate_fails(capsys, tmp_path, circo, ann, "line 4", "not valid JSON")


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_annotation_file_not_utf8(circo, tmp_path, capsys):
    ann = circo / "annotations/val.json"
    ann.write_bytes(json.dumps(circo_annotations()).encode().replace(b"is number 1", b"is n\xe9mber 1"))
    _evaluate_fails(capsys, tmp_path, circo, ann, "not UTF-8", "0xe9")


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_annotation_missing_a_key_names_field_and_query(circo, tmp_path, capsys):
    anns = circo_annotations()
    del anns[1]["relative_caption"]
    write_json(circo / "annotations/val.json", anns)
    _evaluate_fails(capsys, tmp_path, circo, circo / "annotations/val.json", "id 1", "'relative_caption'")


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_annotation_file_that_is_not_a_list(circo, tmp_path, capsys):
    write_json(circo / "annotations/val.json", {"0": circo_annotations()[0]})
    _evaluate_fails(capsys, tmp_path, circo, circo / "annotations/val.json", "expected a JSON list")


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_annotation_entry_that_is_not_an_object(circo, tmp_path, capsys):
    write_json(circo / "annotations/val.json", [*circo_annotations(2), 17])
    _evaluate_fails(capsys, tmp_path, circo, circo / "annotations/val.json", "annotation #2")


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_image_info_without_images_list(circo, tmp_path, capsys):
    info = circo / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
    write_json(info, {"licenses": []})
    _evaluate_fails(capsys, tmp_path, circo, info, "'images'")


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_fashioniq_caption_without_captions_field(tmp_path, capsys):
    root = tmp_path / "fiq"
    for cat in ("dress", "shirt", "toptee"):
        write_json(root / f"image_splits/split.{cat}.val.json", ["a1", "a2"])
        write_json(root / f"captions/cap.{cat}.val.json", [{"candidate": "a1", "target": "a2", "captions": ["x", "y"]}])
        for asin in ("a1", "a2"):
            write_image(root / "images" / f"{asin}.jpg", 1)
    bad = root / "captions/cap.shirt.val.json"
    write_json(bad, [{"candidate": "a1", "target": "a2", "caption": "x"}])
    before = snapshot(root)
    fails(
        capsys,
        ["evaluate", "--dataset", "fashioniq", "--dataset-path", root, "--method", "image-only", *CLI],
        bad,
        "annotation #0",
        "'captions'",
    )
    assert snapshot(root) == before


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_cirr_caption_without_pairid(tmp_path, capsys):
    from cli_helpers import tiny_cirr

    root = tiny_cirr(tmp_path / "cirr")
    caps = json.loads((root / "cirr/captions/cap.rc2.val.json").read_text())
    del caps[0]["pairid"]
    write_json(root / "cirr/captions/cap.rc2.val.json", caps)
    fails(
        capsys,
        ["evaluate", "--dataset", "cirr", "--dataset-path", root, "--method", "image-only", *CLI],
        root / "cirr/captions/cap.rc2.val.json",
        "'pairid'",
    )


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_repeated_circo_id_is_rejected_on_load(tmp_path, capsys):
    ann_file = tiny_circo(tmp_path / "circo", n=3) / "annotations/val.json"
    anns = json.loads(ann_file.read_text())
    anns[2]["id"] = 1
    write_json(ann_file, anns)
    with pytest.raises(InputError, match=rf"{ann_file}: id 1 appears 2 times"):
        load_circo(tmp_path / "circo", "val")
    fails(
        capsys,
        ["evaluate", "--dataset", "circo", "--dataset-path", tmp_path / "circo", "--method", "image-only", *CLI],
        ann_file,
        "id 1",
    )
    # The test split too: `searle submission` must not write one query fewer.
    test_file = tmp_path / "circo/annotations/test.json"
    test = json.loads(test_file.read_text())
    test[1]["id"] = 0
    write_json(test_file, test)
    before = snapshot(tmp_path)
    fails(
        capsys,
        [
            "submission",
            "--dataset",
            "circo",
            "--dataset-path",
            tmp_path / "circo",
            "--method",
            "image-only",
            "--out",
            tmp_path / "sub/circo.json",
            *CLI,
        ],
        test_file,
        "id 0",
    )
    assert snapshot(tmp_path) == before and not (tmp_path / "sub/circo.json").exists()


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_repeated_cirr_pairid_is_rejected_on_load(tmp_path):
    root = tiny_cirr(tmp_path / "cirr", n=3, pairids=[7, 8, 7])
    with pytest.raises(InputError, match=rf"{root / 'cirr/captions/cap.rc2.val.json'}: pairid 7 appears 2 times"):
        load_cirr(root, "val")
    assert len(load_cirr(tiny_cirr(tmp_path / "ok", n=3), "val").queries) == 3


def test_captions_file_with_a_byte_order_mark_or_unicode_line_separators(tmp_path):
    """A CSV saved with a byte-order mark failed on its header ('\\ufeffcaption'); U+2028 and U+0085 inside a
    caption split it in two (str.splitlines): both read as written."""
    from searle_core.datasets.loaders import read_captions

    (tmp_path / "bom.csv").write_bytes("caption,id\na cat,1\na dog,2\n".encode("utf-8-sig"))
    assert read_captions(tmp_path / "bom.csv").captions() == ["a cat", "a dog"]
    (tmp_path / "lines.txt").write_text("a cat\u2028on a mat\nthe dog\u0085barks\n", encoding="utf-8")
    assert read_captions(tmp_path / "lines.txt").captions() == ["a cat\u2028on a mat", "the dog\u0085barks"]
    (tmp_path / "lines.csv").write_text('caption\n"a cat\u2028on a mat"\n', encoding="utf-8")
    assert read_captions(tmp_path / "lines.csv").captions() == ["a cat\u2028on a mat"]


@pytest.mark.usefixtures("one_thread", "opened")
def test_a_repeated_fashioniq_category_is_refused(tmp_path, capsys):
    """--category dress,dress evaluated every dress query twice (and counted them twice in the metrics)."""
    fiq = _fashioniq(tmp_path / "fiq")
    fails(capsys, [*EVAL, "--dataset", "fashioniq", "--dataset-path", fiq, "--category", "dress,dress"], "'dress'")
