"""The evaluation protocol on the real annotation files with stand-in images, checked by hand.

Each test recomputes one step of the protocol the plain way (scores, sorting, averaging) and
compares it with the pipeline: CIRR's reference exclusion and metrics, FashionIQ's two caption
orders and per-category galleries, CIRCO's full validation split scored like the server. Counts
are checked on the full annotation files without images.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from standins import (  # noqa: F401
    CMYK_ID,
    DATA,
    build_circo,
    build_cirr,
    build_fashioniq,
    circo_standin,
    cirr_standin,
    cli_backbone,
    fiq_standin,
    protocol_env,
    read_json,
    searle_cache,
)

from searle_core.datasets import ImageLoadError, load_circo, load_cirr, load_fashioniq
from searle_core.jobs.evaluation import evaluate
from searle_core.method.encoding import encode_with_pseudo_tokens
from searle_core.methods.context import MethodContext
from searle_core.methods.pipeline import gallery_features
from searle_core.metrics.benchmarks import cirr_metrics
from searle_core.metrics.circo_server import score_circo
from searle_core.report.submission import write_circo_submission
from searle_core.retrieval.queries import pseudo_query_features, text_query_features

pytestmark = pytest.mark.usefixtures("protocol_env")

CIRR_KEYS = ["Recall@1", "Recall@5", "Recall@10", "Recall@50", "Recall_subset@1", "Recall_subset@2", "Recall_subset@3"]
QUIET = MethodContext(progress=False)


def test_full_counts_of_the_real_annotation_files(tmp_path):
    cirr = build_cirr(tmp_path / "cirr", n_queries=None, images=False)
    val, test = load_cirr(cirr, "val", check_images="none"), load_cirr(cirr, "test", check_images="none")
    assert (len(val.queries), len(val.gallery)) == (4181, 2297)
    assert (len(test.queries), len(test.gallery)) == (4148, 2315)
    fiq = build_fashioniq(tmp_path / "fiq", n_queries=None, images=False)
    bench = load_fashioniq(fiq, "val", check_images="none")
    assert {c: sum(q.category == c for q in bench.queries) for c in ("dress", "shirt", "toptee")} == {
        "dress": 2017,
        "shirt": 2038,
        "toptee": 1961,
    }
    circo = build_circo(tmp_path / "circo", images=False)
    assert len(load_circo(circo, "val", check_images="none").queries) == 220
    test = load_circo(circo, "test", check_images="none")
    listed = read_json(circo / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json")["images"]
    assert len(test.queries) == 800 and len(test.gallery) == len(listed) == 1962  # 1,903 needed + 59 fillers


def test_cirr_excludes_the_reference_and_scores_like_a_plain_computation(cirr_standin, cli_backbone):
    bench = load_cirr(cirr_standin, "val")
    gallery = gallery_features(cli_backbone, bench, progress=False)
    result = evaluate("image-only", bench, cli_backbone, QUIET, gallery)
    g = gallery["all"]
    row = {n: i for i, n in enumerate(bench.gallery)}
    scores = (g[[row[q.reference] for q in bench.queries]] @ g.T).numpy()
    hits = dict.fromkeys((1, 5, 10, 50), 0)
    subset_hits = dict.fromkeys((1, 2, 3), 0)
    for i, q in enumerate(bench.queries):
        ref = row[q.reference]
        assert scores[i].argmax() == ref  # without the exclusion every query would retrieve its reference
        ranked = result.rankings[i]
        assert q.reference not in ranked and len(ranked) == len(bench.gallery) - 1
        s = scores[i].copy()
        s[ref] = -np.inf
        plain = [bench.gallery[j] for j in np.argsort(-s, kind="stable")][:-1]
        assert ranked == plain
        for k in hits:
            hits[k] += q.target in plain[:k]
        members = [m for m in plain if m in set(q.subset) - {q.reference}]
        assert len(members) == 5
        for k in subset_hits:
            subset_hits[k] += q.target in members[:k]
    n = len(bench.queries)
    plain_metrics = {f"Recall@{k}": 100 * v / n for k, v in hits.items()}
    plain_metrics.update({f"Recall_subset@{k}": 100 * v / n for k, v in subset_hits.items()})
    assert list(result.metrics) == CIRR_KEYS
    assert result.metrics == pytest.approx(plain_metrics)
    full = cirr_metrics(
        result.rankings,
        [q.target for q in bench.queries],
        [q.subset for q in bench.queries],
        [q.reference for q in bench.queries],
    )  # scored on the whole rankings
    assert full == pytest.approx(result.metrics)


def _plain_text(backbone, prompts: list[str]) -> torch.Tensor:
    with torch.no_grad():  # open_clip's own encode_text: the untruncated 77-token reference
        return F.normalize(backbone.model.encode_text(backbone.tokenize(prompts)).float(), dim=-1)


def test_fashioniq_averages_both_caption_orders(fiq_standin, cli_backbone):
    bench = load_fashioniq(fiq_standin, "val")
    raw = read_json(DATA / "fashioniq/captions/cap.toptee.val.json")
    queries = [q for q in bench.queries if q.category == "toptee"][:4]
    for q, ann in zip(queries, raw):
        assert q.captions == tuple(c.strip(".?, ") for c in ann["captions"])
    plain = []
    for q in queries:
        c1, c2 = q.captions
        both = _plain_text(cli_backbone, [f"{c1} and {c2}", f"{c2} and {c1}"])
        plain.append(F.normalize(both.mean(0), dim=-1))
    torch.testing.assert_close(
        text_query_features(cli_backbone, queries, cache=False), torch.stack(plain), atol=1e-5, rtol=1e-5
    )

    torch.manual_seed(0)
    tokens = {q.reference: 0.02 * torch.randn(cli_backbone.token_dim) for q in queries}
    expected = []
    for q in queries:
        c1, c2 = q.captions
        prompts = [f"a photo of $ that {c1} and {c2}", f"a photo of $ that {c2} and {c1}"]
        with torch.no_grad():
            feats = encode_with_pseudo_tokens(
                cli_backbone.model,
                cli_backbone.tokenize(prompts),
                torch.stack([tokens[q.reference]] * 2),
                cli_backbone.dollar_token_id,
                truncate=False,
            )
        expected.append(F.normalize(F.normalize(feats, dim=-1).mean(0), dim=-1))
    torch.testing.assert_close(
        pseudo_query_features(cli_backbone, queries, tokens), torch.stack(expected), atol=1e-5, rtol=1e-5
    )


def test_fashioniq_ranks_each_category_against_its_own_gallery(fiq_standin, cli_backbone):
    bench = load_fashioniq(fiq_standin, "val")
    gallery = gallery_features(cli_backbone, bench, progress=False)
    assert {c: len(g) for c, g in gallery.items()} == {c: len(n) for c, n in bench.extra["gallery_by_category"].items()}
    result = evaluate("image+text", bench, cli_backbone, QUIET, gallery)
    for q, ranking in zip(bench.queries, result.rankings):
        assert len(ranking) == 50 and set(ranking) <= set(bench.extra["gallery_by_category"][q.category])
    metrics = result.metrics
    assert list(metrics) == ["dress", "shirt", "toptee", "average"]
    for k in ("Recall@10", "Recall@50"):
        by_hand = {
            c: 100
            * np.mean([q.target in r[: int(k[7:])] for q, r in zip(bench.queries, result.rankings) if q.category == c])
            for c in ("dress", "shirt", "toptee")
        }
        assert {c: metrics[c][k] for c in by_hand} == pytest.approx(by_hand)
        assert metrics["average"][k] == pytest.approx(np.mean(list(by_hand.values())))


def test_circo_full_validation_scored_like_the_server(circo_standin, cli_backbone, tmp_path):
    bench = load_circo(circo_standin, "val")
    assert len(bench.queries) == 220
    assert bench.images.load_image(str(CMYK_ID)).mode == "CMYK"  # converted after the crop, as theirs
    ctx = MethodContext(progress=False)
    gallery = gallery_features(cli_backbone, bench, progress=False)
    text = evaluate("text-only", bench, cli_backbone, ctx, gallery)
    both = evaluate("image+text", bench, cli_backbone, ctx, gallery)  # same gallery, reused
    assert text.metrics != both.metrics
    assert all(len(r) == 50 == len(set(r)) for r in both.rankings)
    path = write_circo_submission(
        tmp_path / "val.json", {q.query_id: r for q, r in zip(bench.queries, both.rankings)}, bench.queries
    )
    example = read_json(DATA / "circo/submission_val_example.json")
    written = json.loads(path.read_text())
    assert list(written) == list(example)
    assert all(type(i) is int for ids in written.values() for i in ids)
    server = score_circo(circo_standin / "annotations/val.json", path)
    for key in ("mAP@5", "mAP@10", "mAP@25", "mAP@50", "Recall@5", "Recall@10", "Recall@25", "Recall@50"):
        assert both.metrics[key] == pytest.approx(server[key])
    assert both.metrics["semantic_mAP@10"] == pytest.approx(server["semantic_mAP@10"])


def test_corrupt_image_fails_naming_file_and_query_or_is_skipped(tmp_path, cli_backbone):
    root = build_cirr(tmp_path / "cirr", n_queries=3, extra_gallery=0)
    bench = load_cirr(root, "val")
    victim = bench.queries[0].reference
    rel = read_json(root / "cirr/image_splits/split.rc2.val.json")[victim]
    (root / rel).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    lazy = load_cirr(root, "val")  # "exists" only stats files: decoding fails in the pipeline
    with pytest.raises(ImageLoadError) as err:
        evaluate("image-only", lazy, cli_backbone, QUIET)
    assert f"{victim}.png" in str(err.value) and "pairid" in str(err.value)
    skipped = load_cirr(root, "val", check_images="open", on_missing="skip")
    assert skipped.extra["skipped"]["images"] == 1 and victim not in skipped.gallery
    assert all(victim not in (q.reference, q.target) for q in skipped.queries)
    result = evaluate("image-only", skipped, cli_backbone, QUIET)
    assert all(victim not in r for r in result.rankings) and list(result.metrics) == CIRR_KEYS


def test_cmyk_image_gives_the_features_of_the_file_as_opened(circo_standin, cli_backbone):
    from searle_core.datasets.features import image_features

    bench = load_circo(circo_standin, "val", check_images="none")
    path = bench.images.path(str(CMYK_ID))
    assert Image.open(path).mode == "CMYK"
    feats = image_features(cli_backbone, bench.images, [str(CMYK_ID)], cache=False, progress=False)
    pixels = cli_backbone.preprocess(Image.open(path))[None]  # padded as CMYK, converted last
    with torch.no_grad():
        plain = F.normalize(cli_backbone.model.encode_image(pixels).float(), dim=-1)
    torch.testing.assert_close(feats, plain, atol=1e-5, rtol=1e-5)


def test_standins_are_built_in_the_authors_layouts(cirr_standin, fiq_standin, circo_standin):
    """The trees of the SEARLE README (what their datasets.py opens), so every test that uses a stand-in
    runs the loaders on exactly the layout a user downloads."""
    cirr_files = [
        "cirr/captions/cap.rc2.val.json",
        "cirr/captions/cap.rc2.test1.json",
        "cirr/image_splits/split.rc2.val.json",
        "cirr/image_splits/split.rc2.test1.json",
    ]
    assert all((cirr_standin / f).is_file() for f in cirr_files)
    assert not (cirr_standin / "captions").exists() and not (cirr_standin / "image_splits").exists()
    for split, folder in (("val", "dev"), ("test1", "test1")):
        for name, rel in read_json(cirr_standin / f"cirr/image_splits/split.rc2.{split}.json").items():
            assert rel == f"./{folder}/{name}.png" and (cirr_standin / rel).is_file()  # relative to CIRR/
    for cat in ("dress", "shirt", "toptee"):
        assert (fiq_standin / f"captions/cap.{cat}.val.json").is_file()
        for asin in read_json(fiq_standin / f"image_splits/split.{cat}.val.json"):
            assert (fiq_standin / "images" / f"{asin}.jpg").is_file()
    info = read_json(circo_standin / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json")
    assert (circo_standin / "annotations/val.json").is_file() and (circo_standin / "annotations/test.json").is_file()
    assert all((circo_standin / "COCO2017_unlabeled/unlabeled2017" / i["file_name"]).is_file() for i in info["images"])
