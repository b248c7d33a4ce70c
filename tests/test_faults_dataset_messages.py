"""Dataset-side messages a user can act on: a truncated image given to ``searle invert``, the
up-front image check of ``searle oti`` on an image folder, and a phrase whose concept CLIP never
reads. Each case runs through the CLI."""

from __future__ import annotations

import json
import pickle

import open_audit
import pytest
from faults import CLI, fails, searle, snapshot, write_image

pytestmark = pytest.mark.usefixtures("one_thread")
OTI = ["oti", "--dataset", "imagenet", *CLI, "--oti-steps", "1", "--oti-batch-size", "4", "--lambda-gpt", "0"]


@pytest.fixture(autouse=True)
def _data(tmp_path, monkeypatch):
    """A tmp SEARLE_DATA; afterwards, no file was opened outside the test's folder and the code's."""
    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "searle_data"))
    open_audit.start()
    try:
        yield
    finally:
        open_audit.stop()
    assert not open_audit.outside([tmp_path])


def _truncated(path):
    write_image(path, 3, size=(64, 64))
    path.write_bytes(path.read_bytes()[:300])  # the header reads; only a full decode fails
    return path


def test_invert_on_a_truncated_jpeg_names_the_file(tmp_path, capsys):
    bad = _truncated(tmp_path / "photo.jpg")
    line = fails(capsys, ["invert", bad, "--backbone", "shapes-clip", "--pretrained", "none", "--device", "cpu"], bad)
    assert "--check-images" not in line and "--on-missing" not in line  # flags invert does not have


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imagenet"
    for i in range(4):
        write_image(folder / f"img{i}.png", i)
    _truncated(folder / "img9.jpg")
    return folder


def test_oti_on_an_image_folder_checks_images_up_front(images, tmp_path, capsys):
    before = snapshot(images)
    line = fails(
        capsys, [*OTI, "--dataset-path", images, "--check-images", "open", "--out", tmp_path / "run"], "img9.jpg"
    )
    assert "--check-images open" not in line  # not the flag just given
    assert snapshot(images) == before


def test_oti_on_an_image_folder_skips_unreadable_images(images, tmp_path, capsys):
    argv = [*OTI, "--dataset-path", images, "--check-images", "open", "--on-missing", "skip"]
    status, out, err = searle(capsys, *argv, "--out", tmp_path / "run", "--json")
    assert status == 0, err
    assert "skipped 1 missing or unreadable image(s)" in err and "img9.jpg" in err
    assert json.loads(out.strip().splitlines()[-1])["images"] == 4


def test_phrase_with_its_concept_past_clips_context_fails_at_load(images, tmp_path, capsys):
    bank = tmp_path / "phrases.pkl"
    long = "a photo of " + " ".join(["very"] * 80) + " large cat that sleeps"
    bank.write_bytes(pickle.dumps({"cat": [long], "dog": ["a photo of dog that runs"]}))
    argv = [*OTI[:-2], "--lambda-gpt", "0.5", "--dataset-path", images, "--phrases", bank]
    fails(capsys, [*argv, "--check-images", "none", "--out", tmp_path / "run"], bank, "'cat'", "77-token")
    assert not (tmp_path / "run" / "chunks").exists()
