"""Hand-worked checks of the retrieval metrics (CIRR, FashionIQ, CIRCO) and of rank_by_scores."""

from __future__ import annotations

import numpy as np
import pytest

from searle_core.metrics.benchmarks import (
    CIRCO_ASPECTS,
    average_precision_at_k,
    circo_metrics,
    cirr_metrics,
    fashioniq_metrics,
    map_at_k,
    rank_by_scores,
    recall_at_k,
    recall_subset_at_k,
)

# ------------------------------------------------------------------------------------------------
# recall@k
# ------------------------------------------------------------------------------------------------


def test_recall_at_k_hand_worked():
    rankings = [["a", "b", "c"], ["c", "t", "a"], ["x", "y", "z"], [1, 2, 3]]
    targets = ["a", "t", "t", 3]
    assert recall_at_k(rankings, targets, 1) == pytest.approx(25.0)
    assert recall_at_k(rankings, targets, 2) == pytest.approx(50.0)
    assert recall_at_k(rankings, targets, 3) == pytest.approx(75.0)


def test_recall_k_larger_than_ranking_counts_missing_ranks_as_misses():
    rankings = [["a"], ["b", "t"], []]
    assert recall_at_k(rankings, ["a", "t", "t"], 50) == pytest.approx(200 / 3)
    assert recall_at_k(rankings, ["a", "t", "t"], 1) == pytest.approx(100 / 3)


def test_recall_names_are_compared_by_value_and_type():
    assert recall_at_k([[123]], ["123"], 1) == 0.0
    assert recall_at_k([[123]], [123], 1) == 100.0


def test_duplicates_raise_naming_query_and_item():
    with pytest.raises(ValueError, match=r"index 1.*'a'"):
        recall_at_k([["a", "b"], ["a", "b", "a"]], ["a", "b"], 2)
    with pytest.raises(ValueError, match=r"index 0.*7"):
        map_at_k([[7, 8, 7]], [[9]], 10)
    with pytest.raises(ValueError, match="duplicate"):
        average_precision_at_k(["x", "x"], ["x"], 1)
    # a duplicate beyond k is still an error: the ranking itself is malformed
    with pytest.raises(ValueError, match="duplicate"):
        recall_at_k([["a", "b", "c", "b"]], ["a"], 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k([["a"]], ["a"], 0)
    with pytest.raises(ValueError, match="2 rankings but 1 targets"):
        recall_at_k([["a"], ["b"]], ["a"], 1)
    with pytest.raises(ValueError, match="no queries"):
        map_at_k([], [], 5)
    with pytest.raises(ValueError, match="ground truth"):
        average_precision_at_k(["a"], [], 5)


# ------------------------------------------------------------------------------------------------
# CIRR: Recall_subset and the bundle
# ------------------------------------------------------------------------------------------------


def test_recall_subset_restricts_to_img_set_and_removes_reference():
    subset = ["ref", "t", "m1", "m2", "m3", "m4"]
    # gallery ranking: the reference and outsiders come first, they must be ignored
    ranking_a = ["ref", "out1", "t", "m1", "out2", "m2", "m3", "m4"]  # restricted: t, m1, ...
    ranking_b = ["m1", "ref", "out1", "t", "m2", "m3", "m4"]  # restricted: m1, t, ...
    ranking_c = ["m3", "m2", "m1", "t", "m4", "ref"]  # restricted: m3, m2, m1, t
    rankings = [ranking_a, ranking_b, ranking_c]
    targets, subsets, refs = ["t"] * 3, [subset] * 3, ["ref"] * 3
    assert recall_subset_at_k(rankings, targets, subsets, refs, 1) == pytest.approx(100 / 3)
    assert recall_subset_at_k(rankings, targets, subsets, refs, 2) == pytest.approx(200 / 3)
    assert recall_subset_at_k(rankings, targets, subsets, refs, 3) == pytest.approx(200 / 3)
    assert recall_subset_at_k(rankings, targets, subsets, refs, 4) == pytest.approx(100.0)
    # were the reference kept, query b would miss at @2 ([m1, ref]): the exclusion matters
    assert recall_subset_at_k([ranking_b], ["t"], [subset], ["other"], 2) == 0.0


def test_cirr_metrics_bundle():
    gallery_rank_a = ["ref", "t", "m1", "m2", "x", "m3", "m4"]
    gallery_rank_b = ["x", "y", "m2", "ref", "m1", "t", "m3", "m4"]
    scores = cirr_metrics(
        [gallery_rank_a, gallery_rank_b],
        ["t", "t"],
        [["ref", "t", "m1", "m2", "m3", "m4"]] * 2,
        ["ref", "ref"],
    )
    assert list(scores) == [
        "Recall@1",
        "Recall@5",
        "Recall@10",
        "Recall@50",
        "Recall_subset@1",
        "Recall_subset@2",
        "Recall_subset@3",
    ]
    # a: reference dropped, target first. b: without reference, target is 5th.
    assert scores["Recall@1"] == pytest.approx(50.0)
    assert scores["Recall@5"] == pytest.approx(100.0)
    assert scores["Recall@50"] == pytest.approx(100.0)
    # b restricted: m2, m1, t -> hit at 3 only
    assert scores["Recall_subset@1"] == pytest.approx(50.0)
    assert scores["Recall_subset@2"] == pytest.approx(50.0)
    assert scores["Recall_subset@3"] == pytest.approx(100.0)


def test_cirr_metrics_needs_every_subset_member():
    with pytest.raises(ValueError, match=r"query index 0.*'m4'.*full-gallery"):
        cirr_metrics([["t", "m1", "m2", "m3"]], ["t"], [["ref", "t", "m1", "m2", "m3", "m4"]], ["ref"])


def test_cirr_with_rank_by_scores_exclusion():
    names = ["ref", "t", "m1", "m2", "x"]
    scores = np.array([[0.9, 0.5, 0.7, 0.1, 0.8]])
    rankings = rank_by_scores(scores, names, k=len(names), exclude=["ref"])
    assert rankings == [["x", "m1", "t", "m2"]]
    out = cirr_metrics(rankings, ["t"], [["ref", "t", "m1", "m2"]], ["ref"])
    assert out["Recall@1"] == 0.0 and out["Recall@5"] == 100.0
    assert out["Recall_subset@1"] == 0.0 and out["Recall_subset@2"] == 100.0


# ------------------------------------------------------------------------------------------------
# FashionIQ
# ------------------------------------------------------------------------------------------------


def test_fashioniq_average_is_unweighted_mean_of_categories():
    far = [f"g{i}" for i in range(30)]  # target at rank 31: a miss @10, a hit @50
    rankings = {
        "shirt": [["t"] + far[:9]],  # hit @10
        "dress": [far + ["t"], ["t"], ["x"]],  # @10: 1/3, @50: 2/3
        "toptee": [["x"] * 1],  # no hit at all
    }
    targets = {"shirt": ["t"], "dress": ["t", "t", "t"], "toptee": ["t"]}
    out = fashioniq_metrics(rankings, targets)
    assert list(out) == ["dress", "shirt", "toptee", "average"]
    assert out["dress"] == pytest.approx({"Recall@10": 100 / 3, "Recall@50": 200 / 3})
    assert out["shirt"] == pytest.approx({"Recall@10": 100.0, "Recall@50": 100.0})
    assert out["toptee"] == pytest.approx({"Recall@10": 0.0, "Recall@50": 0.0})
    # mean over categories (not over the 5 queries pooled, which would give 40 and 60)
    assert out["average"]["Recall@10"] == pytest.approx((100 / 3 + 100 + 0) / 3)
    assert out["average"]["Recall@50"] == pytest.approx((200 / 3 + 100 + 0) / 3)


def test_fashioniq_subset_of_categories_and_mismatch():
    out = fashioniq_metrics({"shirt": [["a"]]}, {"shirt": ["a"]})
    assert list(out) == ["shirt", "average"]
    assert out["average"] == out["shirt"]
    with pytest.raises(ValueError, match="categories differ"):
        fashioniq_metrics({"shirt": [["a"]]}, {"dress": ["a"]})
    with pytest.raises(ValueError, match="'dress'.*duplicate"):
        fashioniq_metrics({"dress": [["a", "a"]]}, {"dress": ["a"]})


# ------------------------------------------------------------------------------------------------
# CIRCO: AP@K, mAP@K and the bundle
# ------------------------------------------------------------------------------------------------


def test_average_precision_hand_worked():
    ranking = ["a", "x", "b", "y", "c"]
    gts = ["a", "b", "c"]
    # hits at ranks 1, 3, 5: precisions 1, 2/3, 3/5; divided by min(3, 5) = 3
    assert average_precision_at_k(ranking, gts, 5) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # k = 2: hit at rank 1 only, divided by min(3, 2) = 2
    assert average_precision_at_k(ranking, gts, 2) == pytest.approx(0.5)
    # k = 3: divided by min(3, 3) = 3
    assert average_precision_at_k(ranking, gts, 3) == pytest.approx((1 + 2 / 3) / 3)


def test_average_precision_divides_by_min_gt_k_not_by_hits():
    # one hit at rank 2 out of two ground truths: 0.5 / 2, not 0.5 / 1
    assert average_precision_at_k(["x", "a"], ["a", "b"], 5) == pytest.approx(0.25)


def test_average_precision_fewer_gt_than_k():
    assert average_precision_at_k(["x", "a", "y"], ["a"], 10) == pytest.approx(0.5)
    assert average_precision_at_k(["a", "b"] + [f"n{i}" for i in range(20)], ["a", "b"], 50) == 1.0


def test_average_precision_k_larger_than_ranking_and_zero_hits():
    assert average_precision_at_k(["a"], ["a", "b"], 50) == pytest.approx(0.5)
    assert average_precision_at_k([], ["a"], 5) == 0.0
    assert average_precision_at_k(["x", "y", "z"], ["a", "b"], 3) == 0.0


def test_average_precision_duplicate_ground_truths_count_once():
    assert average_precision_at_k(["a"], ["a", "a"], 5) == 1.0


def _brute_force_ap(ranking, gts, k):
    """AP@k by the textbook definition, with precision@i recomputed from scratch."""
    gts = set(gts)
    total = 0.0
    for i in range(1, min(k, len(ranking)) + 1):
        if ranking[i - 1] in gts:
            total += len(set(ranking[:i]) & gts) / i
    return total / min(len(gts), k)


def test_average_precision_matches_brute_force_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(300):
        gallery = int(rng.integers(5, 60))
        n_gt = int(rng.integers(1, min(gallery, 15) + 1))
        length = int(rng.integers(0, gallery + 1))
        k = int(rng.integers(1, 70))
        ranking = [int(v) for v in rng.permutation(gallery)[:length]]
        gts = [int(v) for v in rng.choice(gallery, size=n_gt, replace=False)]
        expected = _brute_force_ap(ranking, gts, k)
        assert average_precision_at_k(ranking, gts, k) == pytest.approx(expected, abs=1e-12)
        assert 0.0 <= expected <= 1.0


def test_map_is_mean_of_ap_in_percent():
    rankings = [["a", "x"], ["x", "y"], ["b", "a"]]
    gts = [["a"], ["a"], ["a", "b"]]
    assert map_at_k(rankings, gts, 2) == pytest.approx(100 * (1.0 + 0.0 + 1.0) / 3)
    assert map_at_k(rankings, gts, 1) == pytest.approx(100 * (1.0 + 0.0 + 1.0) / 3)
    assert map_at_k([["x", "a"]], [["a", "b", "c"]], 5) == pytest.approx(100 * 0.5 / 3)


def test_circo_metrics_keys_values_and_aspects():
    rankings = [
        [10, 11, 12, 13, 14, 15],  # GT 11, 14 -> AP@5 = (1/2 + 2/5) / 2; target 14
        [20, 21, 22],  # GT 20 -> AP = 1; target 20
        [30, 31],  # GT 39: zero hits; target 39
    ]
    gts = [[14, 11], [20], [39]]
    targets = [14, 20, 39]
    aspects = [["negation", "cardinality"], "cardinality", ["my_aspect", "negation"]]
    out = circo_metrics(rankings, gts, targets, aspects)
    assert list(out) == [
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
    ap0 = (1 / 2 + 2 / 5) / 2
    for k in (5, 10, 25, 50):
        assert out[f"mAP@{k}"] == pytest.approx(100 * (ap0 + 1 + 0) / 3)
        assert out[f"Recall@{k}"] == pytest.approx(200 / 3)
    semantic = out["semantic_mAP@10"]
    # official aspects in official order, unknown ones after, aspects without queries omitted
    assert list(semantic) == ["cardinality", "negation", "my_aspect"]
    assert semantic["cardinality"] == pytest.approx(100 * (ap0 + 1) / 2)
    assert semantic["negation"] == pytest.approx(100 * (ap0 + 0) / 2)
    assert semantic["my_aspect"] == 0.0


def test_circo_metrics_recall_uses_target_only_and_custom_ks():
    # the target is ranked 3rd; another GT is first
    out = circo_metrics([["g", "x", "t"]], [["t", "g"]], ["t"], [None], ks=(1, 3))
    assert set(out) == {"mAP@1", "mAP@3", "Recall@1", "Recall@3", "semantic_mAP@10"}
    assert out["Recall@1"] == 0.0 and out["Recall@3"] == 100.0
    assert out["mAP@1"] == 100.0
    assert out["mAP@3"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert out["semantic_mAP@10"] == {}


def test_circo_aspect_order_follows_official_list():
    aspects = [[a] for a in reversed(CIRCO_ASPECTS)]
    rankings = [["t"] for _ in aspects]
    out = circo_metrics(rankings, [["t"]] * 9, ["t"] * 9, aspects)
    assert tuple(out["semantic_mAP@10"]) == CIRCO_ASPECTS
    assert all(v == 100.0 for v in out["semantic_mAP@10"].values())


def test_circo_metrics_duplicate_raises():
    with pytest.raises(ValueError, match=r"index 1.*'b'"):
        circo_metrics([["a"], ["b", "b"]], [["a"], ["b"]], ["a", "b"], [[], []])


# ------------------------------------------------------------------------------------------------
# rank_by_scores
# ------------------------------------------------------------------------------------------------


def test_rank_by_scores_ties_lower_gallery_index_first():
    names = ["a", "b", "c", "d", "e"]
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1], [1.0, 1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    # the tie at the k-th boundary (a vs c) is broken by gallery index too
    assert rank_by_scores(scores, names, 3) == [["b", "d", "a"], ["a", "b", "c"]]
    assert rank_by_scores(scores, names, 5) == [["b", "d", "a", "c", "e"], names]
    assert rank_by_scores(scores, names, 50) == [["b", "d", "a", "c", "e"], names]


def test_rank_by_scores_exclusion():
    names = [100, 101, 102, 103]
    scores = np.array([[0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1]])
    out = rank_by_scores(scores, names, 2, exclude=[100, None, 999])
    assert out == [[101, 102], [100, 101], [100, 101]]
    # capped at gallery size minus the excluded name
    assert rank_by_scores(scores[:1], names, 10, exclude=[102]) == [[100, 101, 103]]


def test_rank_by_scores_matches_stable_full_sort_with_many_ties():
    rng = np.random.default_rng(1)
    n_gallery = 2000
    names = [f"img{j}" for j in range(n_gallery)]
    scores = rng.integers(0, 20, size=(12, n_gallery)).astype(np.float32)  # heavy ties
    exclude = [names[int(j)] for j in rng.integers(0, n_gallery, size=12)]
    exclude[3] = None
    for k in (1, 7, 50, 150):
        got = rank_by_scores(scores, names, k, exclude=exclude)
        for i in range(scores.shape[0]):
            order = np.argsort(-scores[i], kind="stable")
            expected = [names[j] for j in order if names[j] != exclude[i]][:k]
            assert got[i] == expected


def test_rank_by_scores_integer_scores_and_errors():
    assert rank_by_scores(np.array([[0, 3, 3]], dtype=np.uint8), ["a", "b", "c"], 2) == [["b", "c"]]
    with pytest.raises(ValueError, match="NaN"):
        rank_by_scores(np.array([[0.1, np.nan]]), ["a", "b"], 1)
    with pytest.raises(ValueError, match="3 names"):
        rank_by_scores(np.zeros((1, 2)), ["a", "b", "c"], 1)
    with pytest.raises(ValueError, match="appears twice"):
        rank_by_scores(np.zeros((1, 2)), ["a", "a"], 1)
    with pytest.raises(ValueError, match="2-D"):
        rank_by_scores(np.zeros(3), ["a", "b", "c"], 1)
    with pytest.raises(ValueError, match="exclude"):
        rank_by_scores(np.zeros((2, 2)), ["a", "b"], 1, exclude=["a"])
