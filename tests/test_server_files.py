"""Notebook 4's test-server files: every method of a CIRR / CIRCO setting run again on the test split
and written as the servers take it, on stand-ins (real annotation files, generated images)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from cli_helpers import (
    CLI,
    circo,  # noqa: F401
    fails,
)
from standins import circo_standin, cirr_standin, cli_backbone, protocol_env, read_json, searle_cache  # noqa: F401

from searle_core.datasets import load_circo, load_cirr
from searle_core.jobs.evaluation import evaluate
from searle_core.methods.context import MethodContext
from searle_core.notebook.results import evaluate_setting, write_test_submissions
from searle_core.notebook.study import Study
from searle_core.report.submission import cirr_subset_rankings

pytestmark = pytest.mark.usefixtures("protocol_env")


def test_every_method_of_a_setting_gets_its_server_files(cirr_standin, circo_standin, cli_backbone, tmp_path):
    cirr = evaluate_setting(
        Study("cirr", cli_backbone, load_cirr(cirr_standin, "val"), None),
        ["image-only", "searle-oti"],
        oti_steps=2,
        log=None,
    )
    circo = evaluate_setting(
        Study("circo", cli_backbone, load_circo(circo_standin, "val"), None),
        ["image-only", "text-only"],
        oti_steps=2,
        log=None,
    )
    assert cirr.variants == {"searle-oti": "no phrases"}  # no concepts given; searle did not run
    written = write_test_submissions([cirr, circo], tmp_path, log=None)
    folder = tmp_path / "cirr" / "shapes-clip"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(
        [
            f"cirr/shapes-clip/{kind}_submission_{stem}.json"
            for kind in ("recall", "recall_subset")
            for stem in ("image-only", "searle-oti-no-phrases")
        ]
        + ["circo/shapes-clip/image-only.json", "circo/shapes-clip/text-only.json", "UPLOAD.md"]
    )

    test1 = load_cirr(cirr_standin, "test")
    direct = evaluate("image-only", test1, cli_backbone, MethodContext(progress=False))
    recall = read_json(folder / "recall_submission_image-only.json")
    assert (recall.pop("version"), recall.pop("metric")) == ("rc2", "recall")
    assert recall == {q.query_id: r[:50] for q, r in zip(test1.queries, direct.rankings)}
    subset = read_json(folder / "recall_subset_submission_image-only.json")
    assert subset["metric"] == "recall_subset"
    assert {k: v for k, v in subset.items() if k not in ("version", "metric")} == cirr_subset_rankings(
        test1.queries, direct.rankings
    )
    oti = read_json(folder / "recall_submission_searle-oti-no-phrases.json")
    assert len(oti) == len(test1.queries) + 2 and all(len(v) == 50 for k, v in oti.items() if k.isdigit())

    test = load_circo(circo_standin, "test")
    circo_file = json.loads((tmp_path / "circo/shapes-clip/text-only.json").read_text())
    direct = evaluate("text-only", test, cli_backbone, MethodContext(progress=False))
    assert len(circo_file) == len(test.queries) == 800
    assert circo_file == {q.query_id: [int(n) for n in r[:50]] for q, r in zip(test.queries, direct.rankings)}
    upload = (tmp_path / "UPLOAD.md").read_text()
    assert "https://cirr.cecs.anu.edu.au/" in upload and "https://circo.micc.unifi.it/" in upload


def test_settings_without_a_test_server_write_nothing(tmp_path):
    from types import SimpleNamespace

    shapes = SimpleNamespace(
        study=SimpleNamespace(dataset="shapes", bench=SimpleNamespace(extra={})), evaluations={"image-only": None}
    )
    assert write_test_submissions([shapes], tmp_path, log=None) == [] and not any(tmp_path.iterdir())


# ---- fault cases (@pytest.mark.audit_open; helpers in cli_helpers.py) ----
@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_submission_on_a_full_disk_writes_neither_file(tmp_path, monkeypatch):
    from searle_core.report.submission import write_cirr_submission

    old = {"recall_submission_searle.json": "old recall", "recall_subset_submission_searle.json": "old subset"}
    for name, text in old.items():
        (tmp_path / name).write_text(text)
    import builtins

    real = builtins.open

    def open_(file, mode="r", *args, **kwargs):
        if "w" in mode and "recall_subset_submission" in str(file):  # the second file meets a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    with pytest.raises(OSError) as caught:
        write_cirr_submission(tmp_path, {"1": [f"g{i}" for i in range(50)]}, {"1": ["g0", "g1", "g2"]})
    monkeypatch.setattr(builtins, "open", real)
    assert "disk is full" in str(caught.value) and "recall_subset_submission_searle.json" in str(caught.value)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == old  # both old files, no temporaries


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_submission_to_an_unwritable_folder_fails_before_any_work(circo, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    import searle_core.methods.pipeline

    def never(*a, **k):
        raise AssertionError("features computed before the output folder was checked")

    monkeypatch.setattr(searle_core.methods.pipeline, "gallery_features", never)
    fails(
        capsys,
        [
            "submission",
            "--dataset",
            "circo",
            "--dataset-path",
            circo,
            "--split",
            "test",
            "--method",
            "searle-oti",
            "--out",
            blocker / "sub/circo.json",
            *CLI,
        ],
        blocker / "sub",
        "not writable",
    )
    assert blocker.read_text() == "a file, not a folder"


def _submission(circo, out, *extra) -> list:
    return ["submission", "--dataset", "circo", "--dataset-path", circo, "--split", "test", "--method", "image-only",
            "--out", out, *extra, *CLI]  # fmt: skip


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
@pytest.mark.parametrize("case", ["device", "folder", "own annotations", "existing file", "link"])
def test_submission_never_replaces_what_is_not_its_own(case, circo, tmp_path, capsys, monkeypatch):
    """--out a device node, a folder, the run's own annotation file, a link or an existing file without --force:
    refused before any feature is computed, the path untouched (a 315 kB file once replaced /dev/null)."""
    from cli_helpers import snapshot

    import searle_core.cli.evaluate as cli

    monkeypatch.setattr(cli, "gallery_features", lambda *a, **k: pytest.fail("features computed before the check"))
    existing = tmp_path / "earlier.json"
    existing.write_text("{}")
    if case == "link":
        os.symlink(existing, tmp_path / "link.json")
    out = {"device": "/dev/null", "folder": tmp_path, "own annotations": circo / "annotations/test.json",
           "existing file": existing, "link": tmp_path / "link.json"}[case]  # fmt: skip
    said = {"device": "not a regular file", "folder": "not a regular file", "own annotations": "input of this run",
            "existing file": "--force", "link": "not a regular file"}[case]  # fmt: skip
    before = snapshot(circo, existing)
    fails(capsys, _submission(circo, out, *(["--force"] if case == "own annotations" else [])), out, said)
    assert snapshot(circo, existing) == before
    assert case != "device" or not Path("/dev/null").is_file()
    if case == "existing file":  # the control: with --force the run goes past the output's check
        fails(capsys, _submission(circo, out, "--force"), "8 gallery images")  # (the tiny gallery's own error)


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
@pytest.mark.parametrize("name", ["a/b", "../x", ".hidden"])
def test_submission_name_stays_a_file_name(name, tmp_path, capsys):
    """--name a/b would make sub-folders and '..' leave --out: refused before the dataset is read."""
    argv = ["submission", "--dataset", "cirr", "--dataset-path", tmp_path / "none", "--out", tmp_path, "--name", name]
    fails(capsys, [*argv, *CLI], "--name", name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
@pytest.mark.parametrize("dataset", ["cirr", "circo"])
def test_a_test_gallery_smaller_than_the_servers_top_k_is_refused_before_oti(dataset, tmp_path, capsys, monkeypatch):
    """A gallery under 50 images (51 for CIRR, whose reference leaves its ranking) was found after OTI."""
    from cli_helpers import tiny_circo, tiny_cirr

    import searle_core.cli.evaluate as cli

    monkeypatch.setattr(cli, "gallery_features", lambda *a, **k: pytest.fail("features computed before the check"))
    root = (tiny_cirr if dataset == "cirr" else tiny_circo)(tmp_path / dataset)
    argv = ["submission", "--dataset", dataset, "--dataset-path", root, "--split", "val", "--out", tmp_path / "out"]
    fails(capsys, [*argv, "--method", "searle-oti", *CLI], "8 gallery images", "50 per query")
