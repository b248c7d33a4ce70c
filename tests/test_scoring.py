"""score_circo on the real CIRCO validation files, and every way a prediction file can be wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import circo_annotations, fails, snapshot, write_json
from conftest import SHARED_DATA, missing_annotations

from searle_core.metrics.benchmarks import CIRCO_ASPECTS
from searle_core.metrics.circo_server import CIRCOScoringError, format_circo_scores, score_circo

DATA = SHARED_DATA
CIRCO = DATA / "circo"
VAL = CIRCO / "annotations" / "val.json"
TEST = CIRCO / "annotations" / "test.json"
EXAMPLE = CIRCO / "submission_val_example.json"

KEYS = [f"mAP@{k}" for k in (5, 10, 25, 50)] + [f"Recall@{k}" for k in (5, 10, 25, 50)]


@pytest.fixture(scope="module")
def circo_files():
    if not (VAL.is_file() and TEST.is_file() and EXAMPLE.is_file()):
        pytest.skip(missing_annotations(CIRCO))
    annotations = json.loads(VAL.read_text())
    example = json.loads(EXAMPLE.read_text())
    return annotations, example


def _official_scores(annotations, predictions):
    """The arithmetic of the official CIRCO evaluation.py (numpy cumsum form), in percent."""
    by_id = {a["id"]: a for a in annotations}
    aps, recalls, semantic = {}, {}, {}
    for query_id, preds in predictions.items():
        ann = by_id[int(query_id)]
        preds = np.array(preds, dtype=int)
        labels = np.isin(preds, ann["gt_img_ids"])
        precisions = np.cumsum(labels) * labels / np.arange(1, len(labels) + 1)
        for k in (5, 10, 25, 50):
            aps.setdefault(k, []).append(precisions[:k].sum() / min(len(ann["gt_img_ids"]), k))
            recalls.setdefault(k, []).append(float((preds == ann["target_img_id"])[:k].sum()))
        for aspect in ann["semantic_aspects"]:
            ap10 = precisions[:10].sum() / min(len(ann["gt_img_ids"]), 10)
            semantic.setdefault(aspect, []).append(ap10)
    out = {f"mAP@{k}": 100 * np.mean(v) for k, v in aps.items()}
    out.update({f"Recall@{k}": 100 * np.mean(v) for k, v in recalls.items()})
    out["semantic_mAP@10"] = {a: 100 * np.mean(v) for a, v in semantic.items()}
    return out


def test_example_submission_keys_ranges_and_official_arithmetic(circo_files):
    annotations, example = circo_files
    scores = score_circo(VAL, EXAMPLE)
    assert list(scores) == KEYS + ["semantic_mAP@10"]
    for key in KEYS:
        assert isinstance(scores[key], float) and 0.0 <= scores[key] <= 100.0
    # mAP@K and Recall@K can only grow with K on a fixed top-50 list
    assert scores["Recall@5"] <= scores["Recall@10"] <= scores["Recall@25"] <= scores["Recall@50"]
    assert list(scores["semantic_mAP@10"]) == list(CIRCO_ASPECTS)
    assert all(0.0 <= v <= 100.0 for v in scores["semantic_mAP@10"].values())
    official = _official_scores(annotations, example)
    for key in KEYS:
        assert scores[key] == pytest.approx(official[key], abs=1e-9)
    assert scores["semantic_mAP@10"] == pytest.approx(official["semantic_mAP@10"], abs=1e-9)
    # JSON-serialisable as the CLI prints it
    assert json.loads(json.dumps(scores)) == scores
    # loaded objects give the same as paths
    assert score_circo(annotations, example) == scores


def _perfect(annotations):
    filler = iter(range(10**9, 10**9 + 10**6))
    out = {}
    for ann in annotations:
        gts = list(ann["gt_img_ids"])
        out[str(ann["id"])] = gts + [next(filler) for _ in range(50 - len(gts))]
    return out


def test_perfect_predictions_score_100(circo_files):
    annotations, _ = circo_files
    scores = score_circo(VAL, _perfect(annotations))
    for key in KEYS:
        assert scores[key] == pytest.approx(100.0)  # target_img_id is the first GT
    assert all(v == pytest.approx(100.0) for v in scores["semantic_mAP@10"].values())


def test_int_keys_and_int_like_string_ids_are_accepted(circo_files):
    annotations, example = circo_files
    reference = score_circo(VAL, example)
    as_strings = {int(q): [str(i) for i in ids] for q, ids in example.items()}
    assert score_circo(VAL, as_strings) == reference


def test_more_than_50_keeps_first_50(circo_files):
    annotations, example = circo_files
    perfect = _perfect(annotations)
    # put the ground truths after rank 50: they must not count
    longer = {q: example[q] + [i for i in perfect[q] if i not in example[q]] for q in example}
    assert all(len(v) > 50 for v in longer.values())
    assert score_circo(VAL, longer) == score_circo(VAL, example)


def test_missing_queries_are_listed(circo_files):
    _, example = circo_files
    bad = {q: v for q, v in example.items() if q not in {"0", "7", "219"}}
    with pytest.raises(CIRCOScoringError) as info:
        score_circo(VAL, bad)
    message = str(info.value)
    assert "no predictions for query id(s) 0, 7, 219" in message
    assert "220 annotation ids (0..219)" in message


def test_many_missing_queries_are_summarised(circo_files):
    _, example = circo_files
    with pytest.raises(CIRCOScoringError, match=r"0, 1, 2, 3, 4, \.\.\. \(200 in all\)"):
        score_circo(VAL, {q: v for q, v in example.items() if int(q) >= 200})


def test_unknown_query_ids(circo_files):
    _, example = circo_files
    for key in ("220", "abc", "-1"):
        bad = dict(example, **{key: example["0"]})
        with pytest.raises(CIRCOScoringError, match=rf"unknown query id\(s\) '{key}'.*0\.\.219"):
            score_circo(VAL, bad)


def test_same_query_under_two_keys(circo_files):
    _, example = circo_files
    with pytest.raises(CIRCOScoringError, match="query id 5 appears under two keys"):
        score_circo(VAL, dict(example, **{"05": example["5"]}))


def test_duplicates_are_rejected_naming_query_and_image(circo_files):
    _, example = circo_files
    bad = dict(example)
    ids = list(example["12"])
    ids[30] = ids[3]
    bad["12"] = ids
    with pytest.raises(CIRCOScoringError, match=rf"query 12: image id {ids[3]} appears twice \(ranks 4 and 31\)"):
        score_circo(VAL, bad)


def test_non_integer_ids_are_rejected(circo_files):
    _, example = circo_files
    for wrong in (1.5, "img_9761", True, None, [3]):
        bad = dict(example)
        bad["3"] = [wrong] + example["3"][1:]
        with pytest.raises(CIRCOScoringError, match=r"query 3: image id .* is not an integer"):
            score_circo(VAL, bad)
    with pytest.raises(CIRCOScoringError, match="query 4: value is str, expected a list"):
        score_circo(VAL, dict(example, **{"4": "9761"}))


def test_fewer_than_50_is_an_error_unless_allowed(circo_files):
    annotations, example = circo_files
    short = dict(example, **{"9": example["9"][:10]})
    with pytest.raises(CIRCOScoringError, match=r"query 9: 10 image ids, expected the top 50"):
        score_circo(VAL, short)
    # allowed on request: missing ranks count as misses, so a prefix never scores higher
    scores = score_circo(VAL, short, min_predictions=0)
    assert scores["mAP@50"] <= score_circo(VAL, example)["mAP@50"]
    assert scores["mAP@5"] == score_circo(VAL, example)["mAP@5"]


def test_test_split_cannot_be_scored(circo_files):
    _, example = circo_files
    with pytest.raises(CIRCOScoringError) as info:
        score_circo(TEST, example)
    message = str(info.value)
    assert str(TEST) in message and "'gt_img_ids'" in message
    assert "only the validation split" in message and "evaluation server" in message


def test_errors_name_the_file(circo_files, tmp_path):
    _, example = circo_files
    bad_file = tmp_path / "preds.json"
    bad_file.write_text(json.dumps({q: v for q, v in example.items() if q != "42"}))
    with pytest.raises(CIRCOScoringError, match=rf"{bad_file}: no predictions for query id\(s\) 42"):
        score_circo(VAL, bad_file)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(CIRCOScoringError, match=rf"{broken}, line 1 column 2: not valid JSON"):
        score_circo(VAL, broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(CIRCOScoringError, match=r"expected a JSON object"):
        score_circo(VAL, listed)
    with pytest.raises(FileNotFoundError, match="predictions file"):
        score_circo(VAL, tmp_path / "absent.json")


def test_malformed_annotations(circo_files):
    annotations, example = circo_files
    no_target = [dict(a) for a in annotations]
    del no_target[3]["target_img_id"]
    with pytest.raises(CIRCOScoringError, match="annotation id 3: missing field 'target_img_id'"):
        score_circo(no_target, example)
    repeated = [dict(a) for a in annotations] + [dict(annotations[0])]
    with pytest.raises(CIRCOScoringError, match="annotation id 0: field 'id' repeats"):
        score_circo(repeated, example)
    with pytest.raises(CIRCOScoringError, match="expected a JSON list"):
        score_circo({"0": annotations[0]}, example)


def test_annotations_without_semantic_aspects_are_accepted(circo_files):
    annotations, example = circo_files
    old_release = [{k: v for k, v in a.items() if k != "semantic_aspects"} for a in annotations]
    scores = score_circo(old_release, example)
    assert scores["semantic_mAP@10"] == {}
    assert scores["mAP@10"] == score_circo(VAL, example)["mAP@10"]


def test_format_circo_scores(circo_files):
    scores = score_circo(VAL, EXAMPLE)
    table = format_circo_scores(scores)
    lines = table.splitlines()
    assert lines[1].split() == ["@5", "@10", "@25", "@50"]
    assert lines[2].split() == ["mAP"] + [f"{scores[f'mAP@{k}']:.2f}" for k in (5, 10, 25, 50)]
    assert lines[3].split() == ["Recall"] + [f"{scores[f'Recall@{k}']:.2f}" for k in (5, 10, 25, 50)]
    for aspect, value in scores["semantic_mAP@10"].items():
        assert any(line.split() == [aspect, f"{value:.2f}"] for line in lines)


# ---- fault cases (@pytest.mark.audit_open; helpers in cli_helpers.py) ----
@pytest.fixture
def scoring(tmp_path):
    anns = write_json(tmp_path / "val.json", circo_annotations(2))
    return anns, tmp_path / "preds.json"


def _score_fails(capsys, anns, preds, *culprits):
    before = snapshot(anns.parent)
    fails(capsys, ["score", "circo", "--annotations", anns, "--predictions", preds], *culprits)
    assert snapshot(anns.parent) == before


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_prediction_file_invalid_json(scoring, capsys):
    anns, preds = scoring
    preds.write_text('{"0": [1, 2, 3],\n "1": [4, 5\n')
    _score_fails(capsys, anns, preds, preds, "line 3", "not valid JSON")


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_prediction_file_not_utf8(scoring, capsys):
    anns, preds = scoring
    preds.write_bytes(b'{"0": [1], "\xff": [2]}')
    _score_fails(capsys, anns, preds, preds, "not UTF-8")


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_prediction_file_missing(scoring, capsys):
    anns, preds = scoring
    _score_fails(capsys, anns, preds, preds, "does not exist")


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_prediction_list_with_a_float_id(scoring, capsys):
    anns, preds = scoring
    write_json(preds, {"0": [1.5] + list(range(100, 149)), "1": list(range(100, 150))})
    _score_fails(capsys, anns, preds, preds, "1.5")


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_prediction_file_with_a_repeated_key_is_rejected(tmp_path, capsys):
    anns = write_json(
        tmp_path / "val.json",
        [
            {"id": 0, "reference_img_id": 1, "target_img_id": 2, "gt_img_ids": [2], "relative_caption": "x"},
            {"id": 1, "reference_img_id": 3, "target_img_id": 4, "gt_img_ids": [4], "relative_caption": "y"},
        ],
    )
    good, bad = list(range(100, 150)), list(range(200, 250))
    preds = tmp_path / "preds.json"
    preds.write_text(f'{{"0": {json.dumps(good)}, "1": {json.dumps(good)}, "0": {json.dumps(bad)}}}')
    with pytest.raises(CIRCOScoringError, match=rf"{preds}: key '0' appears 2 times"):
        score_circo(anns, preds)
    fails(capsys, ["score", "circo", "--annotations", anns, "--predictions", preds], preds, "'0'")
