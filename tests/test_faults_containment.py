"""Annotation text that reaches outside the dataset, and values that load but mean something else.

Every image path an annotation file names (CIRR split entries, FashionIQ asins, CIRCO ``file_name``)
must stay inside the dataset folder and is refused *before* anything is opened: an ``open`` audit
hook records every file opened during each test here and fails the test on one outside the test's
folder (dataset roots, run folders, cache) and the code's own. Symlinks the user placed inside the
dataset keep working. Each case runs through the CLI, as a user would meet it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import open_audit
import pytest
from faults import CLI, fails, searle, snapshot, tiny_circo, tiny_cirr, write_image, write_json

pytestmark = pytest.mark.usefixtures("one_thread")
EVAL = ["evaluate", "--method", "image-only", *CLI, "--num-workers", "0"]


@pytest.fixture(autouse=True)
def opened(tmp_path, monkeypatch):
    """Every file opened during the test; afterwards, asserts all lie in the test's folder or the code's."""
    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "searle_data"))
    recorded = open_audit.start()
    try:
        yield recorded
    finally:
        open_audit.stop()
    stray = open_audit.outside([tmp_path], forbidden=[tmp_path / "outside"])
    assert not stray, f"opened outside the dataset, run folders and cache: {stray[:5]}"


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file outside every dataset root: no test may open it (after this fixture wrote it)."""
    path = write_image(tmp_path / "outside" / "secret.png", 7)
    open_audit.OPENED.remove(str(path))
    return path


def _cirr_with_entry(root: Path, entry: str) -> Path:
    tiny_cirr(root)
    split = root / "cirr/image_splits/split.rc2.val.json"
    names = json.loads(split.read_text())
    names["dev-2-0-img0"] = entry
    write_json(split, names)
    return split


# ---- 1. containment --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_cirr_split_entry_outside_the_folder_is_refused_before_it_is_opened(kind, tmp_path, capsys, secret, opened):
    root = tmp_path / "cirr"
    entry = str(secret) if kind == "absolute" else "./dev/../../outside/secret.png"
    split = _cirr_with_entry(root, entry)
    before = snapshot(root)
    fails(capsys, [*EVAL, "--dataset", "cirr", "--dataset-path", root], split, "'dev-2-0-img0'", repr(entry))
    assert str(secret) not in opened
    assert snapshot(root) == before and not list((tmp_path / "searle_data").rglob("image-*.pt"))


def test_cirr_split_entry_naming_etc_passwd_is_refused_before_opening(tmp_path, capsys, opened):
    split = _cirr_with_entry(tmp_path / "cirr", "/etc/passwd")
    fails(capsys, [*EVAL, "--dataset", "cirr", "--dataset-path", tmp_path / "cirr"], split, "'/etc/passwd'")
    assert "/etc/passwd" not in opened


def test_control_the_audit_sees_an_annotation_path_that_escapes(tmp_path, tmp_path_factory, capsys, monkeypatch):
    """The audits' control: with containment switched off (as the code was), the file a CIRR entry names
    outside the dataset is opened and ranked, and both this module's audit and the battery's (over
    every ``test_faults_*`` test, ``conftest.py``) list it."""
    from searle_core.datasets import loaders as cirr

    elsewhere = Path(tempfile.mkdtemp(prefix="searle-audit-control-"))  # outside every pytest folder
    secret = write_image(elsewhere / "secret.png", 7)
    try:
        open_audit.forget(secret)  # written by the test itself
        monkeypatch.setattr(cirr, "contained_path", lambda root, entry, annotation, where: Path(root) / entry)
        root = tmp_path / "cirr"
        _cirr_with_entry(root, str(secret))
        status, _, err = searle(capsys, *EVAL, "--dataset", "cirr", "--dataset-path", root)
        assert status == 0, err
        assert str(secret) in open_audit.outside([tmp_path])
        assert open_audit.battery_stray([tmp_path_factory.getbasetemp()]) == [str(secret)]
    finally:
        shutil.rmtree(elsewhere)
        open_audit.forget(elsewhere)  # what the audits would have failed this test on


@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_circo_file_name_outside_the_folder_is_refused(kind, tmp_path, capsys, secret, opened):
    root = tiny_circo(tmp_path / "circo")
    info = root / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
    listing = json.loads(info.read_text())
    entry = str(secret) if kind == "absolute" else "../../../outside/secret.png"
    listing["images"][3]["file_name"] = entry
    write_json(info, listing)
    fails(capsys, [*EVAL, "--dataset", "circo", "--dataset-path", root], info, "image id 4", repr(entry))
    assert str(secret) not in opened


def _fashioniq(root: Path, asins=("a1", "a2", "a3")) -> Path:
    for cat in ("dress", "shirt", "toptee"):
        write_json(root / f"image_splits/split.{cat}.val.json", list(asins))
        write_json(root / f"captions/cap.{cat}.val.json", [{"candidate": "a1", "target": "a2", "captions": ["x", "y"]}])
    for i, asin in enumerate(("a1", "a2", "a3")):
        write_image(root / "images" / f"{asin}.jpg", i)
    return root


@pytest.mark.parametrize("where", ["split", "candidate"])
def test_fashioniq_asin_outside_the_folder_is_refused(where, tmp_path, capsys, secret, opened):
    root = _fashioniq(tmp_path / "fiq")
    asin = "../../outside/secret"
    if where == "split":
        write_json(root / "image_splits/split.shirt.val.json", ["a1", "a2", asin])
        culprit = "split.shirt.val.json"
    else:
        bad = [{"candidate": asin, "target": "a2", "captions": ["x", "y"]}]
        write_json(root / "captions/cap.dress.val.json", bad)
        culprit = "cap.dress.val.json"
    fails(capsys, [*EVAL, "--dataset", "fashioniq", "--dataset-path", root], culprit, repr(asin), "outside")
    assert not any("secret" in p for p in opened)


def test_symlinks_placed_inside_the_dataset_keep_working(tmp_path, capsys, opened):
    """A linked image folder (dev -> elsewhere) and a linked file are the user's choice: they load."""
    root = tiny_cirr(tmp_path / "cirr")
    real = tmp_path / "disk" / "dev"
    real.parent.mkdir()
    (root / "dev").rename(real)
    (root / "dev").symlink_to(real, target_is_directory=True)
    linked = real / "dev-3-0-img0.png"
    linked.rename(tmp_path / "disk" / "moved.png")
    linked.symlink_to(tmp_path / "disk" / "moved.png")
    status, out, err = searle(capsys, *EVAL, "--dataset", "cirr", "--dataset-path", root, "--json")
    assert status == 0, err
    assert "Recall@1" in json.loads(out)
    assert str(root / "dev/dev-3-0-img0.png") in opened  # through both links


# ---- 2. ids, captions, repeats, JSON that parses into something else ---------------------------------
def _cirr_caption_field(root: Path, field: str, raw: str) -> Path:
    """Write ``raw`` (JSON text) as ``field`` of the second CIRR caption entry."""
    tiny_cirr(root)
    caps_file = root / "cirr/captions/cap.rc2.val.json"
    caps = json.loads(caps_file.read_text())
    caps[1][field] = "@@RAW@@"
    caps_file.write_text(json.dumps(caps).replace('"@@RAW@@"', raw))
    return caps_file


@pytest.mark.parametrize("raw,culprit", [("NaN", "NaN"), ("1e300", "1e+300"), ('"12.5"', "'12.5'"), ("1.0", "1.0")])
def test_cirr_pairid_that_is_not_an_integer(raw, culprit, tmp_path, capsys):
    caps = _cirr_caption_field(tmp_path / "cirr", "pairid", raw)
    line = fails(capsys, [*EVAL, "--dataset", "cirr", "--dataset-path", tmp_path / "cirr"], caps, "pairid", culprit)
    assert "[1]" in line or "#1" in line  # the entry


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


@pytest.mark.parametrize("raw,kind", [("null", "null"), ("42", "int"), ('{"text": "is red"}', "dict")])
def test_cirr_caption_that_is_not_text(raw, kind, tmp_path, capsys):
    caps = _cirr_caption_field(tmp_path / "cirr", "caption", raw)
    fails(capsys, [*EVAL, "--dataset", "cirr", "--dataset-path", tmp_path / "cirr"], caps, "pairid 1", "caption", kind)


def test_circo_ids_and_captions_are_checked(tmp_path, capsys):
    from faults import circo_annotations

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


def test_circo_nan_names_file_and_field(tmp_path, capsys):
    root = tiny_circo(tmp_path / "circo")
    ann = root / "annotations/val.json"
    ann.write_text(ann.read_text().replace('"reference_img_id": 2', '"reference_img_id": NaN', 1))
    fails(capsys, [*EVAL, "--dataset", "circo", "--dataset-path", root], ann, "[1].reference_img_id", "NaN")


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


def test_deeply_nested_json_names_the_file(tmp_path, capsys):
    root = tiny_cirr(tmp_path / "cirr")
    caps = root / "cirr/captions/cap.rc2.val.json"
    caps.write_text("[" * 200_000 + "]" * 200_000)
    fails(capsys, [*EVAL, "--dataset", "cirr", "--dataset-path", root], caps, "nested too deeply")


def test_file_name_with_a_lone_surrogate_names_the_file(tmp_path, capsys):
    root = tiny_circo(tmp_path / "circo")
    info = root / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
    info.write_text(info.read_text().replace('"000000000004.jpg"', '"\\ud800.jpg"'))
    fails(capsys, [*EVAL, "--dataset", "circo", "--dataset-path", root], info, "image id 4", "\\ud800")


def test_cirr_captions_of_another_split_name_both_files_not_an_api(tmp_path, capsys):
    root = tiny_cirr(tmp_path / "cirr")
    split = root / "cirr/image_splits/split.rc2.val.json"
    write_json(split, {f"test1-{i}-0-img0": f"./test1/test1-{i}-0-img0.png" for i in range(8)})
    for i in range(8):
        write_image(root / "test1" / f"test1-{i}-0-img0.png", i)
    line = fails(capsys, [*EVAL, "--dataset", "cirr", "--dataset-path", root], "cap.rc2.val.json", split, "same split")
    assert "rank_by_scores" not in line


# ---- 3. feature caches ------------------------------------------------------------------------------
def test_feature_cache_not_fooled_by_a_restored_timestamp(tmp_path, random_backbone):
    """``cp -p`` / ``rsync -a`` / ``tar x``: other pixels, same size, same mtime."""
    import torch

    from searle_core.datasets import FileImageSource
    from searle_core.datasets.features import configure_images, image_features

    backbone = configure_images(random_backbone, "clip")
    names = [f"img{i}" for i in range(3)]
    paths = {n: write_image(tmp_path / "images" / f"{n}.bmp", i) for i, n in enumerate(names)}  # BMP: size fixed
    old = image_features(backbone, FileImageSource(paths), names, progress=False)
    for i, n in enumerate(names):
        st = os.stat(paths[n])
        write_image(paths[n], 500 + i)
        os.utime(paths[n], ns=(st.st_atime_ns, st.st_mtime_ns))
        assert os.stat(paths[n]).st_size == st.st_size and os.stat(paths[n]).st_mtime_ns == st.st_mtime_ns
    fresh = image_features(backbone, FileImageSource(paths), names, progress=False, cache=False)
    assert not torch.allclose(old, fresh)
    assert torch.equal(image_features(backbone, FileImageSource(paths), names, progress=False), fresh)


def test_cirr_img_set_that_is_not_an_object(tmp_path, capsys):
    caps = _cirr_caption_field(tmp_path / "cirr", "img_set", '["dev-0-0-img0"]')
    fails(capsys, [*EVAL, "--dataset", "cirr", "--dataset-path", tmp_path / "cirr"], caps, "pairid 1", "img_set")


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
