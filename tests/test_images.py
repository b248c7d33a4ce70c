"""Image files the datasets and ``searle invert`` read: truncated, too large to decode safely or missing,
found up front with ``--check-images open`` or skipped with ``--on-missing skip``."""

from __future__ import annotations

import json

import pytest
from cli_helpers import (
    CLI,
    circo,  # noqa: F401
    fails,
    images,  # noqa: F401
    searle,
    snapshot,
    write_image,
)
from cli_helpers import EVALUATE_CIRCO as EVAL
from cli_helpers import evaluate_fails as _evaluate_fails
from cli_helpers import truncated_image as _truncated
from PIL import Image

pytestmark = pytest.mark.audit_open


def _truncate(path):
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_truncated_image_found_up_front_with_check_images_open(circo, tmp_path, capsys):
    victim = circo / "COCO2017_unlabeled/unlabeled2017/000000000002.jpg"
    write_image(victim, 2, size=(64, 64))
    _truncate(victim)  # its header still reads: only a full decode finds it
    _evaluate_fails(capsys, tmp_path, circo, victim, extra=["--check-images", "open"])


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_truncated_image_skipped_with_on_missing_skip(circo, tmp_path, capsys):
    victim = circo / "COCO2017_unlabeled/unlabeled2017/000000000008.jpg"
    write_image(victim, 8, size=(64, 64))
    _truncate(victim)
    status, out, err = searle(
        capsys, *EVAL, "--dataset-path", circo, "--check-images", "open", "--on-missing", "skip", "--json"
    )
    assert status == 0, err
    assert "skipped 1 missing or unreadable image(s)" in err and str(victim) in err
    assert "mAP@10" in json.loads(out)


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_image_too_large_to_decode_safely(circo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # 16x10 = 160 pixels: over twice the limit
    status, _, err = searle(capsys, *EVAL, "--dataset-path", circo, "--check-images", "none")
    assert status == 2
    line = [x for x in err.splitlines() if ": error: " in x][0]
    assert "too large to decode safely" in line and "unlabeled2017/0000000000" in line


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_missing_image_names_file_and_query(circo, tmp_path, capsys):
    (circo / "COCO2017_unlabeled/unlabeled2017/000000000001.jpg").unlink()
    status, _, err = searle(capsys, *EVAL, "--dataset-path", circo)
    assert status == 2 and "Traceback" not in err
    assert "000000000001.jpg" in err and "reference_img_id of annotations/val.json query id 0" in err


OTI = ["oti", "--dataset", "imagenet", *CLI, "--oti-steps", "1", "--oti-batch-size", "4", "--lambda-gpt", "0"]


@pytest.mark.usefixtures("one_thread", "opened")
def test_invert_on_a_truncated_jpeg_names_the_file(tmp_path, capsys):
    bad = _truncated(tmp_path / "photo.jpg")
    line = fails(capsys, ["invert", bad, "--backbone", "shapes-clip", "--pretrained", "none", "--device", "cpu"], bad)
    assert "--check-images" not in line and "--on-missing" not in line  # flags invert does not have


@pytest.mark.usefixtures("one_thread", "opened")
def test_oti_on_an_image_folder_checks_images_up_front(images, tmp_path, capsys):
    before = snapshot(images)
    line = fails(
        capsys, [*OTI, "--dataset-path", images, "--check-images", "open", "--out", tmp_path / "run"], "img9.jpg"
    )
    assert "--check-images open" not in line  # not the flag just given
    assert snapshot(images) == before


@pytest.mark.usefixtures("one_thread", "opened")
def test_oti_on_an_image_folder_skips_unreadable_images(images, tmp_path, capsys):
    argv = [*OTI, "--dataset-path", images, "--check-images", "open", "--on-missing", "skip"]
    status, out, err = searle(capsys, *argv, "--out", tmp_path / "run", "--json")
    assert status == 0, err
    assert "skipped 1 missing or unreadable image(s)" in err and "img9.jpg" in err
    assert json.loads(out.strip().splitlines()[-1])["images"] == 4


def test_image_folder_follows_linked_sub_folders_once(tmp_path):
    """A sub-folder that is a symbolic link is walked (its images were once dropped without a word); a link
    back up to the folder is a cycle, walked once, not forever."""
    import os

    from searle_core.datasets import ImageFolderSource

    folder, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    write_image(folder / "a.png", 0)
    write_image(elsewhere / "b.png", 1)
    write_image(elsewhere / "deeper/c.png", 2)
    os.symlink(elsewhere, folder / "linked")
    os.symlink(folder, folder / "linked" / "back-up")  # a cycle through the link
    assert ImageFolderSource(folder).names == ["a.png", "linked/b.png", "linked/deeper/c.png"]


def test_image_folder_names_an_unreadable_sub_folder(tmp_path, monkeypatch):
    """A sub-folder that cannot be listed is an error naming it (it was skipped, its images lost silently)."""
    import os

    from searle_core.datasets import ImageFolderSource
    from searle_core.infra.errors import InputError

    folder = tmp_path / "images"
    write_image(folder / "a.png", 0)
    write_image(folder / "locked/b.png", 1)
    scandir = os.scandir

    def refuse(path="."):  # as chmod 000 does for anyone but root (the tests may run as root)
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(InputError, match=r"cannot read .*locked \(Permission denied\)"):
        ImageFolderSource(folder)


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
@pytest.mark.parametrize("check", ["none", "open"])
def test_image_over_pillows_warning_limit_is_refused(check, circo, tmp_path, capsys, monkeypatch):
    """Between Pillow's warning and error limits (a PNG declaring 100 M pixels: 1.35 GB) an image was decoded,
    announced only by Pillow's warning; now refused naming the file, up front with --check-images open."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 16x10 = 160 pixels: over the limit, under twice it
    status, _, err = searle(capsys, *EVAL, "--dataset-path", circo, "--check-images", check)
    assert status == 2, err
    line = [x for x in err.splitlines() if ": error: " in x][0]
    assert "unlabeled2017/0000000000" in line and ("too large to decode safely" in line or check == "open")


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_an_image_file_name_too_long_names_the_annotation_and_the_entry(circo, tmp_path, capsys):
    """A 300-character file_name was Errno 36 naming neither the annotation file nor the entry."""
    info = circo / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
    listing = json.loads(info.read_text())
    listing["images"][2]["file_name"] = "x" * 300 + ".jpg"
    info.write_text(json.dumps(listing))
    _evaluate_fails(capsys, tmp_path, circo, "x" * 300 + ".jpg (image '", "of annotations/val.json query id")


def test_an_image_folder_hints_only_at_flags_its_command_has(tmp_path):
    """train-phi's and --unlabeled's folders have no --check-images: their error says what to do instead."""
    from searle_core.datasets import ImageFolderSource
    from searle_core.datasets.folder import CHECK_IMAGES_HINT, ImageLoadError

    _truncated(tmp_path / "photo.jpg")
    with pytest.raises(ImageLoadError, match="photo.jpg") as plain:
        ImageFolderSource(tmp_path).load_image("photo.jpg")
    assert "--check-images" not in str(plain.value) and "remove or replace that file" in str(plain.value)
    with pytest.raises(ImageLoadError, match="--check-images open"):  # searle oti's folders: it has the flag
        ImageFolderSource(tmp_path, hint=CHECK_IMAGES_HINT).load_image("photo.jpg")
