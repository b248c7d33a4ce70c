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
