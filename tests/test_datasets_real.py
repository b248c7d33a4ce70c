"""Real-annotation tests for the CIRR, FashionIQ and CIRCO loaders, image folders and submissions.

The annotation files are the authors' releases in the ``../shared/data`` folder beside the repository
(not copied into the project); images are 8x8 stand-ins hard-linked under the names the annotations
reference.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from cli_helpers import EVALUATE_CIRCO as EVAL
from cli_helpers import searle
from conftest import SHARED_DATA, missing_annotations
from PIL import Image

from searle_core.datasets import (
    CIRBenchmark,
    ImageFolderSource,
    ImageLoadError,
    load_benchmark,
    load_circo,
    load_cirr,
    load_fashioniq,
    query_aspects,
    split_fashioniq_by_category,
    to_rgb,
)
from searle_core.report.submission import (
    circo_submission,
    cirr_submission,
    write_circo_submission,
    write_cirr_submission,
)

DATA = SHARED_DATA


def _need(sub: str) -> Path:
    path = DATA / sub
    if not path.exists():
        pytest.skip(missing_annotations(path))
    return path


def _templates(folder: Path) -> dict[str, Path]:
    """One tiny JPEG and one PNG to hard-link under every needed name (fast for 15k images)."""
    folder.mkdir(parents=True, exist_ok=True)
    jpg, png = folder / "template.jpg", folder / "template.png"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(jpg)
    Image.new("RGB", (8, 8), (200, 10, 30)).save(png)
    return {".jpg": jpg, ".png": png}


def _link(template: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(template, dest)
    except OSError:
        shutil.copyfile(template, dest)


def _link_json(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dest)


# ----------------------------------------------------------------------------------------- CIRR


def _make_cirr(root: Path, splits=("val", "test1"), skip_images: tuple[str, ...] = (), flat: bool = False) -> Path:
    """The release's tree (``root/cirr/{captions,image_splits}``, images in ``root/{dev,test1}``), or with
    ``flat`` the annotation folders directly in ``root``."""
    src = _need("cirr")
    tpl = _templates(root / "_tpl")
    annotations = root if flat else root / "cirr"
    for split in splits:
        _link_json(src / f"captions/cap.rc2.{split}.json", annotations / f"captions/cap.rc2.{split}.json")
        _link_json(src / f"image_splits/split.rc2.{split}.json", annotations / f"image_splits/split.rc2.{split}.json")
        for name, rel in json.loads((src / f"image_splits/split.rc2.{split}.json").read_text()).items():
            if name not in skip_images:
                _link(tpl[".png"], root / rel)
    return root


@pytest.fixture(scope="module")
def cirr_root(tmp_path_factory) -> Path:
    return _make_cirr(tmp_path_factory.mktemp("cirr"))


def test_cirr_val_counts_and_fields(cirr_root):
    bench = load_cirr(cirr_root, "val")
    assert isinstance(bench, CIRBenchmark) and bench.name == "cirr"
    assert len(bench.queries) == 4181 and len(bench.gallery) == 2297
    assert bench.exclude_reference is True
    q = bench.queries[0]
    assert (q.query_id, q.reference, q.target) == ("12060", "dev-244-0-img0", "dev-1028-1-img1")
    assert q.captions == ("show three bottles of soft drink",)
    assert q.ground_truths == ("dev-1028-1-img1",) and len(q.subset) == 6
    assert bench.extra["skipped"]["images"] == 0
    image = bench.images.load_image(q.reference)
    assert image.mode == "RGB" and image.size == (8, 8)


def test_cirr_test_split_alias_has_no_targets(cirr_root):
    bench = load_benchmark("cirr", cirr_root, "test")
    assert bench.split == "test1" and len(bench.queries) == 4148 and len(bench.gallery) == 2315
    assert all(q.target is None and q.ground_truths == () for q in bench.queries)


def test_cirr_layout_error_prints_expected_tree(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_cirr(tmp_path, "val")
    assert "missing cirr/captions/cap.rc2.val.json, cirr/image_splits/split.rc2.val.json" in str(err.value)
    assert "image_splits/split.rc2.{train,val,test1}.json" in str(err.value)
    assert "  cirr/\n    captions/" in str(err.value) and "  dev/*.png" in str(err.value)


def test_cirr_reads_the_release_tree_its_inner_folder_and_a_flat_tree(cirr_root, tmp_path):
    """The release (what the SEARLE and CIRR code read): CIRR/cirr/captions/..., images in CIRR/dev/ with
    split paths relative to CIRR/. The inner cirr/ folder given by itself finds its images beside it."""
    assert (cirr_root / "cirr/captions/cap.rc2.val.json").is_file() and not (cirr_root / "captions").exists()
    assert (cirr_root / "dev/dev-244-0-img0.png").is_file()
    release = load_cirr(cirr_root, "val")
    assert release.images.path("dev-244-0-img0") == cirr_root / "dev/dev-244-0-img0.png"
    inner = load_cirr(cirr_root / "cirr", "val")
    assert inner.images.paths == release.images.paths and inner.queries == release.queries
    flat_root = _make_cirr(tmp_path / "flat", splits=("val",), flat=True)
    flat = load_cirr(flat_root, "val")
    assert flat.images.path("dev-244-0-img0") == flat_root / "dev/dev-244-0-img0.png"
    assert flat.queries == release.queries and flat.gallery == release.gallery


def test_cirr_missing_image_names_file_and_query_then_skip(tmp_path):
    root = _make_cirr(tmp_path / "cirr", splits=("val",), skip_images=("dev-244-0-img0",))
    with pytest.raises(ImageLoadError) as err:
        load_cirr(root, "val")
    msg = str(err.value)
    assert "dev-244-0-img0.png" in msg and "pairid 12060" in msg and "on_missing='skip'" in msg
    bench = load_cirr(root, "val", on_missing="skip")
    caps = json.loads((DATA / "cirr/captions/cap.rc2.val.json").read_text())
    dropped = sum("dev-244-0-img0" in (c["reference"], c["target_hard"]) for c in caps)
    assert bench.extra["skipped"]["images"] == 1
    assert bench.extra["skipped"]["queries"] == dropped and len(bench.queries) == 4181 - dropped
    assert len(bench.gallery) == 2296 and "dev-244-0-img0" not in bench.gallery
    assert all("dev-244-0-img0" not in (q.subset or ()) for q in bench.queries)


# ------------------------------------------------------------------------------------ FashionIQ

FIQ_VAL = {"dress": 2017, "shirt": 2038, "toptee": 1961}


def _make_fiq(root: Path, split: str = "val", png: tuple[str, ...] = (), images: bool = True) -> Path:
    src = _need("fashioniq")
    tpl = _templates(root / "_tpl")
    (root / "images").mkdir(parents=True, exist_ok=True)
    for cat in FIQ_VAL:
        _link_json(src / f"captions/cap.{cat}.{split}.json", root / f"captions/cap.{cat}.{split}.json")
        _link_json(src / f"image_splits/split.{cat}.{split}.json", root / f"image_splits/split.{cat}.{split}.json")
        if images:
            for asin in json.loads((src / f"image_splits/split.{cat}.{split}.json").read_text()):
                ext = ".png" if asin in png else ".jpg"
                if not (root / "images" / f"{asin}{ext}").exists():
                    _link(tpl[ext], root / "images" / f"{asin}{ext}")
    return root


@pytest.fixture(scope="module")
def fiq_root(tmp_path_factory) -> Path:
    return _make_fiq(tmp_path_factory.mktemp("fiq"), png=("B0084Y8XIU",))


def test_fashioniq_all_categories(fiq_root):
    bench = load_benchmark("fashioniq", fiq_root, "val")
    counts = {c: sum(q.category == c for q in bench.queries) for c in FIQ_VAL}
    assert counts == FIQ_VAL and len(bench.queries) == sum(FIQ_VAL.values())
    sizes = {c: len(g) for c, g in bench.extra["gallery_by_category"].items()}
    assert sizes == {"dress": 3817, "shirt": 6346, "toptee": 5373}
    assert len(bench.gallery) == 3817 + 6346 + 5373 - 121  # shirt and toptee share 121 asins
    assert bench.exclude_reference is False
    per_cat = split_fashioniq_by_category(bench)
    assert {c: (len(b.queries), len(b.gallery)) for c, b in per_cat.items()} == {
        c: (FIQ_VAL[c], sizes[c]) for c in FIQ_VAL
    }


def test_fashioniq_caption_stripping_matches_release(fiq_root):
    bench = load_fashioniq(fiq_root, "val", category="shirt")
    raw = json.loads((DATA / "fashioniq/captions/cap.shirt.val.json").read_text())
    assert len(bench.queries) == 2038 and len(bench.gallery) == 6346
    for q, ann in zip(bench.queries, raw):
        assert q.reference == ann["candidate"] and q.target == ann["target"] and q.category == "shirt"
        assert q.captions == tuple(c.strip(".?, ") for c in ann["captions"])
        assert all(not c or (c[0] not in ".?, " and c[-1] not in ".?, ") for c in q.captions)
    assert any(c.endswith(".") for ann in raw for c in ann["captions"])  # the release has them


def test_fashioniq_png_fallback_and_test_split(fiq_root, tmp_path):
    bench = load_fashioniq(fiq_root, "val", category="dress")
    assert bench.images.path("B0084Y8XIU").suffix == ".png"
    assert bench.images.load_image("B0084Y8XIU").getpixel((0, 0)) == (200, 10, 30)
    root = _make_fiq(tmp_path / "fiq", split="test", images=False)
    test = load_fashioniq(root, "test", category="dress", check_images="none")
    assert len(test.queries) == 2024 and all(q.target is None for q in test.queries)
    assert test.queries[0].captions[0] == "yello and more flowing"  # leading space stripped
    with pytest.raises(ValueError, match="dress, shirt, toptee"):
        load_fashioniq(root, "test", category="pants")


def test_fashioniq_layout_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"images/<asin>\.jpg"):
        load_fashioniq(tmp_path, "val")


# ---------------------------------------------------------------------------------------- CIRCO


def _make_circo(
    root: Path, corrupt: str | None = None, missing: str | None = None, unlisted: str | None = None
) -> Path:
    src = _need("circo")
    tpl = _templates(root / "_tpl")
    ids: dict[int, None] = {}
    for split in ("val", "test"):
        _link_json(src / f"annotations/{split}.json", root / f"annotations/{split}.json")
        for ann in json.loads((src / f"annotations/{split}.json").read_text()):
            ids.update(dict.fromkeys([ann["reference_img_id"], *ann.get("gt_img_ids", [])]))
    ids.update(dict.fromkeys([1, 2, 3]))  # distractors only in the gallery
    images = root / "COCO2017_unlabeled/unlabeled2017"
    listing = []
    for i in ids:
        name = f"{i:012d}.jpg"
        if str(i) != unlisted:
            listing.append({"id": i, "file_name": name, "width": 8, "height": 8})
        if str(i) == corrupt:
            images.mkdir(parents=True, exist_ok=True)
            (images / name).write_bytes(b"this is not a jpeg")
        elif str(i) != missing:
            _link(tpl[".jpg"], images / name)
    info = root / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
    info.parent.mkdir(parents=True, exist_ok=True)
    info.write_text(json.dumps({"images": listing}))
    return root


@pytest.fixture(scope="module")
def circo_root(tmp_path_factory) -> Path:
    return _make_circo(tmp_path_factory.mktemp("circo"))


def test_circo_val_ground_truths_and_aspects(circo_root):
    bench = load_circo(circo_root, "val")
    raw = json.loads((DATA / "circo/annotations/val.json").read_text())
    info = json.loads((circo_root / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json").read_text())
    assert len(bench.queries) == 220 and len(bench.gallery) == len(info["images"])
    assert bench.exclude_reference is False
    for q, ann in zip(bench.queries, raw):
        assert q.query_id == str(ann["id"]) and q.reference == str(ann["reference_img_id"])
        assert q.target == str(ann["target_img_id"]) and q.target == q.ground_truths[0]
        assert q.ground_truths == tuple(str(g) for g in ann["gt_img_ids"])
        assert query_aspects(q) == ann["semantic_aspects"]
        assert bench.extra["semantic_aspects"][q.query_id] == ann["semantic_aspects"]
    q0 = bench.queries[0]
    assert q0.aspect == "cardinality,statement_with_conjunction,comparative_statement,spatial_relations_background"
    assert bench.images.path("271520").name == "000000271520.jpg"
    assert bench.images.load_image("271520").mode == "RGB"


def test_circo_test_split(circo_root):
    bench = load_benchmark("circo", circo_root, "test")
    assert len(bench.queries) == 800
    assert all(q.target is None and q.ground_truths == () and q.aspect is None for q in bench.queries)


def test_circo_layout_error(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/val.json").write_text("[]")
    with pytest.raises(FileNotFoundError) as err:
        load_circo(tmp_path, "val")
    assert "image_info_unlabeled2017.json" in str(err.value) and "unlabeled2017/000000271520.jpg" in str(err.value)


def test_circo_corrupt_image_error_and_skip(tmp_path):
    root = _make_circo(tmp_path / "c", corrupt="528417")  # a ground truth of query 0
    lazy = load_circo(root, "val")  # "exists" only stats files: the decode error comes on load
    with pytest.raises(ImageLoadError) as err:
        lazy.images.load_image("528417")
    assert "000000528417.jpg" in str(err.value) and "query id 0" in str(err.value)
    with pytest.raises(ImageLoadError, match="000000528417.jpg"):
        load_circo(root, "val", check_images="open")
    bench = load_circo(root, "val", check_images="open", on_missing="skip")
    assert bench.extra["skipped"]["images"] == 1 and len(bench.queries) == 220
    assert "528417" not in bench.queries[0].ground_truths and "528417" not in bench.gallery


def test_circo_missing_and_unlisted_ids(tmp_path):
    root = _make_circo(tmp_path / "m", missing="271520")  # reference of query 0
    with pytest.raises(
        ImageLoadError, match=r"000000271520\.jpg.*reference_img_id of annotations/val\.json query id 0"
    ):
        load_circo(root, "val")
    bench = load_circo(root, "val", on_missing="skip")
    assert bench.extra["skipped"]["queries"] >= 1 and "0" not in {q.query_id for q in bench.queries}
    root = _make_circo(tmp_path / "u", unlisted="355099")
    with pytest.raises(ImageLoadError, match="not listed"):
        load_circo(root, "val")


# ------------------------------------------------------------------------- folders and RGB modes


def test_image_folder_modes_and_corrupt_files(tmp_path):
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "rgb.jpg")
    (tmp_path / "sub").mkdir()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "sub/cmyk.jpg")
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "rgba.png")
    Image.new("L", (8, 8), 77).save(tmp_path / "ILSVRC2012_test_00000001.JPEG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / ".hidden/x.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG garbage")
    source = ImageFolderSource(tmp_path)
    assert source.names == sorted(
        ["rgb.jpg", "sub/cmyk.jpg", "pal.png", "rgba.png", "ILSVRC2012_test_00000001.JPEG", "corrupt.png"]
    )
    # Decoded in their own modes (the preprocessing converts after the crop, as the authors' does).
    modes = {name: source.load_image(name).mode for name in source.names if name != "corrupt.png"}
    assert modes == {"rgb.jpg": "RGB", "sub/cmyk.jpg": "CMYK", "pal.png": "P", "rgba.png": "RGBA"} | {
        "ILSVRC2012_test_00000001.JPEG": "L"
    }
    assert to_rgb(source.load_image("pal.png")).getpixel((0, 0)) == (0, 0, 255)
    assert to_rgb(source.load_image("rgba.png")).getpixel((0, 0)) == (255, 0, 0)  # alpha dropped, as theirs
    assert to_rgb(source.load_image("ILSVRC2012_test_00000001.JPEG")).getpixel((0, 0)) == (77, 77, 77)
    r, g, b = to_rgb(source.load_image("sub/cmyk.jpg")).getpixel((0, 0))
    assert r > 200 and g < 60 and b < 60  # CMYK (0, 255, 255, 0) is red
    with pytest.raises(ImageLoadError, match="corrupt.png"):
        source.load_image("corrupt.png")


def test_truncated_image_is_an_error(tmp_path):
    Image.effect_noise((64, 64), 50).convert("RGB").save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "half.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="half.png"):
        ImageFolderSource(tmp_path).load_image("half.png")


def test_unknown_benchmark_lists_known(tmp_path):
    with pytest.raises(ValueError, match="cirr, fashioniq, circo"):
        load_benchmark("coco", tmp_path, "val")


# ------------------------------------------------------------------------------------ submissions


def test_circo_submission_matches_example_structure(circo_root, tmp_path):
    example = json.loads((DATA / "circo/submission_val_example.json").read_text())
    bench = load_circo(circo_root, "val")
    predictions = {q: [str(i) for i in ids] + ["1", "2"] for q, ids in example.items()}  # longer: cut
    path = write_circo_submission(tmp_path / "circo_val.json", predictions, bench.queries)
    written = json.loads(path.read_text())
    assert list(written) == list(example) and written == example
    assert all(type(v[0]) is int for v in written.values())
    assert [p.name for p in tmp_path.iterdir()] == ["circo_val.json"]  # no temp file left
    with pytest.raises(ValueError, match="without predictions"):
        circo_submission({k: v for k, v in example.items() if k != "0"}, bench.queries)
    with pytest.raises(ValueError, match="needs 50"):
        circo_submission({"0": example["0"][:49]})
    with pytest.raises(ValueError, match="duplicate"):
        circo_submission({"0": example["0"][:49] + example["0"][:1]})


def test_cirr_submission_format(cirr_root, tmp_path):
    bench = load_cirr(cirr_root, "test1")
    gallery = bench.gallery
    preds, subset = {}, {}
    for q in bench.queries:
        preds[q.query_id] = [g for g in gallery[:52] if g != q.reference][:51]
        subset[q.query_id] = [m for m in q.subset if m != q.reference]
    recall_path, subset_path = write_cirr_submission(tmp_path, preds, subset, name="run", queries=bench.queries)
    assert recall_path.name == "recall_submission_run.json"
    assert subset_path.name == "recall_subset_submission_run.json"
    recall, sub = json.loads(recall_path.read_text()), json.loads(subset_path.read_text())
    assert recall["version"] == "rc2" and recall["metric"] == "recall"
    assert sub["version"] == "rc2" and sub["metric"] == "recall_subset"
    assert len(recall) == len(sub) == 4148 + 2
    assert all(len(v) == 50 for k, v in recall.items() if k not in ("version", "metric"))
    assert all(len(v) == 3 for k, v in sub.items() if k not in ("version", "metric"))
    q = bench.queries[0]
    bad = dict(preds, **{q.query_id: [q.reference] + preds[q.query_id][:49]})
    with pytest.raises(ValueError, match="own top 50"):
        cirr_submission(bad, subset, bench.queries)
    with pytest.raises(ValueError, match="not in the query's img_set"):
        cirr_submission(preds, dict(subset, **{q.query_id: gallery[-3:]}), bench.queries)


# ---- fault cases (@pytest.mark.audit_open; helpers in cli_helpers.py) ----
@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_dataset_folder_that_does_not_exist(tmp_path, capsys):
    status, _, err = searle(capsys, *EVAL, "--dataset-path", tmp_path / "nowhere")
    assert status == 2 and "Traceback" not in err
    assert f"dataset folder {tmp_path / 'nowhere'} is incomplete" in err and not (tmp_path / "nowhere").exists()
