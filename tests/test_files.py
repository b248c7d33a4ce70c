"""Reading and writing files: YAML that would hang or hide a repeated key, JSON nested too deeply, and
writes that meet a full disk (named as such, nothing half-written left; a failed cache write only warns)."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import CLI, fails, searle, tiny_cirr
from cli_helpers import EVALUATE_CIRCO as EVAL
from cli_helpers import TINY_OTI as OTI

from searle_core.infra.errors import InputError
from searle_core.notebook.papermill_runner import load_profile

pytestmark = pytest.mark.audit_open


def _alias_bomb(levels: int, width: int = 9) -> str:
    lines = ["x-bomb:", "  l0: &l0 [" + ", ".join(["1"] * width) + "]"]
    for level in range(1, levels + 1):
        lines.append(f"  l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    lines += ["notebooks:", "  01_textual_inversion:", f"    oti_steps: *l{levels}"]
    return "\n".join(lines) + "\n"


@pytest.mark.usefixtures("tmp_searle_data")
def test_yaml_alias_bomb_is_refused_quickly_naming_file_and_line(tmp_path, capsys, no_notebooks):
    profile = tmp_path / "bomb.yaml"
    profile.write_text(_alias_bomb(6))  # 9**6 values once expanded; nine levels never finish
    start = time.perf_counter()
    line = fails(capsys, ["paper", "--profile", profile, "--out", tmp_path / "runs"], profile, "line ", "aliases")
    assert time.perf_counter() - start < 10, line
    assert not (tmp_path / "runs").exists()


@pytest.mark.usefixtures("tmp_searle_data")
def test_yaml_anchors_and_merge_keys_still_work(tmp_path):
    profile = tmp_path / "merge.yaml"
    profile.write_text(
        "common: &common\n  quick: true\n  seed: 3\nnotebooks:\n  01_textual_inversion:\n    <<: *common\n    seed: 4\n"
    )
    assert load_profile(profile).notebooks["01_textual_inversion"] == {"quick": True, "seed": 4}


@pytest.mark.usefixtures("tmp_searle_data")
def test_yaml_duplicate_key_is_refused_naming_key_and_lines(tmp_path, capsys, no_notebooks):
    profile = tmp_path / "twice.yaml"
    profile.write_text("notebooks:\n  01_textual_inversion:\n    seed: 1\n    quick: true\n    seed: 2\n")
    fails(capsys, ["paper", "--profile", profile, "--out", tmp_path / "runs"], profile, "line 5", "'seed'", "line 3")
    profile.write_text("description: a\nnotebooks: {}\ndescription: b\n")
    with pytest.raises(InputError, match="line 3.*'description'"):
        load_profile(profile)


@pytest.mark.usefixtures("one_thread", "opened")
def test_deeply_nested_json_names_the_file(tmp_path, capsys):
    root = tiny_cirr(tmp_path / "cirr")
    caps = root / "cirr/captions/cap.rc2.val.json"
    caps.write_text("[" * 200_000 + "]" * 200_000)
    fails(capsys, [*EVAL, "--dataset", "cirr", "--dataset-path", root], caps, "nested too deeply")


TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 128 vs 0"


def _full_disk_for(monkeypatch, where, error: BaseException) -> None:
    """torch.save fails (after writing a little) for the temporary files whose path contains ``where``."""
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if where in str(f):
            Path(f).write_bytes(b"\0" * 128)
            raise error
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
@pytest.mark.parametrize(
    "error", [RuntimeError(TORCH_FULL), OSError(errno.ENOSPC, "No space left on device")], ids=["torch", "os"]
)
def test_full_disk_names_the_path_and_says_so(tmp_path, capsys, monkeypatch, error):
    out = tmp_path / "run"
    _full_disk_for(monkeypatch, ".inputs.pt.", error)
    line = fails(capsys, [*OTI, "--out", out], out / "inputs.pt", "disk is full", "free")
    assert "needed" in line and "enforce fail" not in line
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written file left


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_failed_feature_cache_write_warns_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "searle_data/cache/features"
    _full_disk_for(monkeypatch, str(cache), OSError(errno.ENOSPC, "No space left on device"))
    status, out, err = searle(capsys, "evaluate", "--quick", *CLI, "--method", "image-only", "--json")
    assert status == 0, err
    assert "warning: could not write the feature cache" in err and "disk is full" in err and str(cache) in err
    assert "Recall" in out or "mAP" in out
    assert not list(cache.glob("*"))  # nothing half-written left in the cache


@pytest.mark.audit_open
def test_searle_data_a_file_warns_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    from searle_core.infra import paths

    monkeypatch.setattr(paths, "_FALLBACK", [])
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # the temporary folder, inside the audited one
    (not_a_folder := tmp_path / "searle_data").write_text("a file, not a folder")
    monkeypatch.setenv("SEARLE_DATA", str(not_a_folder))
    status, out, err = searle(capsys, "evaluate", "--quick", *CLI, "--method", "image-only", "--json")
    assert status == 0, err
    assert f"cannot make the cache folder {not_a_folder}" in err and "for this run only" in err
    assert "mAP" in out and not_a_folder.read_text() == "a file, not a folder"
    assert list((paths._FALLBACK[0] / "features").glob("*.pt"))  # the features were cached there


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
@pytest.mark.parametrize("how", ["full disk", "folder is a file"])
def test_failed_world_clip_cache_write_warns_and_the_run_goes_on(how, tmp_path, capsys, monkeypatch, random_backbone):
    from searle_core.clip.backbone import load_backbone
    from searle_core.world import world_clip

    state = {k: v.clone() for k, v in random_backbone.model.state_dict().items()}
    # The weights come from the package (shipped) and are expanded into the cache, which cannot be written.
    monkeypatch.setattr(world_clip, "read_shipped", lambda key: (state, {"seconds": 0.0}))
    if how == "full disk":
        cache = tmp_path / "cache/world_clip"
        _full_disk_for(monkeypatch, str(cache), OSError(errno.ENOSPC, "No space left on device"))
    else:  # no folder can be made where a file is (as an unwritable folder, but also for root)
        (tmp_path / "cache").write_text("a file where the cache folder should be")
        cache = tmp_path / "cache/world_clip"
    backbone = load_backbone("shapes-clip", cache_dir=cache, quick=True, device="cpu")
    err = capsys.readouterr().err
    assert "warning: could not write the world CLIP weights" in err and str(cache) in err and "going on" in err
    assert ("disk is full" in err) == (how == "full disk")
    assert "not cached" in backbone.pretrained and "not cached" in backbone.weights_id
    assert all(torch.equal(v, state[k]) for k, v in backbone.model.state_dict().items())
    assert not (cache.is_dir() and list(cache.iterdir()))  # nothing half-written left
