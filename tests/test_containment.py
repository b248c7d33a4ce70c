"""Containment: every image path an annotation file names (CIRR split entries, FashionIQ asins, CIRCO
``file_name``) must stay inside the dataset folder and is refused *before* anything is opened; the
``opened`` fixture records every file opened during each test here and fails the test on one outside
the test's folder (dataset roots, run folders, cache) and the code's own. Symlinks the user placed
inside the dataset keep working. Each case runs through the CLI, as a user would meet it."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import open_audit
import pytest
from cli_helpers import CLI, fails, searle, snapshot, tiny_circo, tiny_cirr, write_image, write_json
from cli_helpers import tiny_fashioniq as _fashioniq

pytestmark = [pytest.mark.audit_open, pytest.mark.usefixtures("one_thread", "opened")]


EVAL = ["evaluate", "--method", "image-only", *CLI, "--num-workers", "0"]


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
    outside the dataset is opened and ranked, and both this module's audit and the one of every
    ``@pytest.mark.audit_open`` test (``conftest.py``) list it."""
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
