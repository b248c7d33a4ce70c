"""Notebook 6's tables: single-target vs every-ground-truth scoring, false negatives, and the real
benchmarks' annotation files counted."""

import json

import pytest

from searle_core.datasets.base import CIRQuery
from searle_core.infra.errors import InputError
from searle_core.metrics.benchmarks import map_at_k, recall_at_k
from searle_core.notebook import evaluation

QUERIES = [
    CIRQuery("q0", "r0", ("is blue",), target="a", ground_truths=("a", "b", "c")),
    CIRQuery("q1", "r1", ("is red",), target="d", ground_truths=("d", "e")),
    CIRQuery("q2", "r2", ("is big",), target="f", ground_truths=("f",)),
]
RANKINGS = [["x", "b", "a", "y"], ["e", "x", "y", "z"], ["x", "y", "z", "f"]]


def test_single_target_and_every_ground_truth_scored_on_the_same_rankings():
    table = evaluation.single_vs_all(RANKINGS, QUERIES, k=2)
    # q0: b (a ground truth, not the target) at 2; q1: e at 1, target d absent; q2: nothing in the top 2
    assert table["target in top 2"].tolist() == [False, False, False]
    assert table["any ground truth in top 2"].tolist() == [True, True, False]
    assert table["ground truths in top 2"].tolist() == [1, 1, 0]
    assert 100 * table["target in top 2"].mean() == recall_at_k(RANKINGS, [q.target for q in QUERIES], 2)
    # AP@2: q0 (1/2)/2, q1 (1/1)/2, q2 0
    assert table["AP@2"].tolist() == pytest.approx([25.0, 50.0, 0.0])
    assert table["AP@2"].mean() == pytest.approx(map_at_k(RANKINGS, [q.ground_truths for q in QUERIES], 2))


def test_false_negatives_are_ground_truths_other_than_the_target():
    assert evaluation.false_negatives(RANKINGS, QUERIES, k=3) == [(0, ["b"]), (1, ["e"])]
    assert evaluation.false_negatives(RANKINGS, QUERIES, k=1) == [(1, ["e"])]


def test_a_query_without_labels_is_refused_by_name():
    with pytest.raises(InputError, match="query 't0' has no labelled target"):
        evaluation.single_vs_all([["a"]], [CIRQuery("t0", "r", ("c",))], k=1)
    with pytest.raises(InputError, match="2 rankings for 3 queries"):
        evaluation.single_vs_all(RANKINGS[:2], QUERIES, k=1)


def test_missing_folders_are_skipped_with_the_reason(tmp_path):
    table, aspects, skipped = evaluation.annotation_overview("", str(tmp_path / "nowhere"), "")
    assert len(table) == 0 and not aspects
    assert skipped[0] == "CIRR: no annotation folder given"
    assert skipped[1].startswith("FashionIQ: no FashionIQ captions under") and skipped[1].endswith("not found")


def test_a_broken_annotation_file_names_the_file(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "val.json").write_text("[{")
    with pytest.raises(InputError, match=r"val.json, line 1 column 3: not valid JSON"):
        evaluation.annotation_overview(circo=str(tmp_path))


def test_small_circo_file_counted(tmp_path):
    (tmp_path / "annotations").mkdir()
    queries = [
        {"id": 0, "relative_caption": "has two dogs", "gt_img_ids": [1, 2, 3], "semantic_aspects": ["cardinality"]},
        {"id": 1, "relative_caption": "is red", "gt_img_ids": [4], "semantic_aspects": ["cardinality", "addition"]},
    ]
    (tmp_path / "annotations" / "val.json").write_text(json.dumps(queries))
    table, aspects, skipped = evaluation.annotation_overview(circo=str(tmp_path))
    row = table.loc["CIRCO"]
    assert row["queries (val)"] == 2 and row["ground truths per query"] == 2.0 and row["words per caption"] == 2.5
    assert row["gallery (val)"] is None
    assert aspects == {"cardinality": 2, "addition": 1}


def test_real_annotation_files_counted(shared_data):
    table, aspects, skipped = evaluation.annotation_overview(
        str(shared_data / "cirr"), str(shared_data / "fashioniq"), str(shared_data / "circo")
    )
    assert not skipped
    # CIRR val: 4,181 queries over 2,297 images; FashionIQ val: 6,016 queries (2,017 + 2,038 + 1,961);
    # CIRCO val: 220 queries, several ground truths each, nine aspects.
    assert table.loc["CIRR", "queries (val)"] == 4181 and table.loc["CIRR", "gallery (val)"] == 2297
    assert table.loc["FashionIQ", "queries (val)"] == 6016
    assert table.loc["CIRCO", "queries (val)"] == 220
    assert table.loc["CIRCO", "ground truths per query"] > 1
    assert len(aspects) == 9


def test_map_per_aspect_counts_a_query_in_each_of_its_aspects():
    queries = [
        CIRQuery("q0", "r0", ("c",), target="a", ground_truths=("a",), aspect="colour"),
        CIRQuery("q1", "r1", ("c",), target="b", ground_truths=("b",), aspect="colour,colour+shape"),
        CIRQuery("q2", "r2", ("c",), target="c", ground_truths=("c",)),
    ]
    rankings = [["a", "x"], ["x", "b"], ["c"]]
    assert evaluation.map_per_aspect(rankings, queries, k=2) == pytest.approx({"colour": 75.0, "colour+shape": 50.0})
