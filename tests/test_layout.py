"""The repository's top level is the design card's: notebooks/, searle_core/, data/ (only its README
committed), figures/, environment.yml, tests/."""

import shutil
import subprocess

import pytest

from searle_core.paths import REPO_ROOT, data_dir


def test_top_level_layout():
    for folder in ("notebooks", "searle_core", "data", "figures", "tests"):
        assert (REPO_ROOT / folder).is_dir(), folder
    assert (REPO_ROOT / "environment.yml").is_file() and (REPO_ROOT / "data" / "README.md").is_file()
    assert data_dir() == REPO_ROOT / "data" or data_dir().is_absolute()


def test_data_keeps_only_its_readme_in_git():
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip(f"{REPO_ROOT} is not a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO_ROOT).returncode == 0

    for path in ("data/cache/world_clip/x.pt", "data/world/samples/a.png", "data/CIRR/dev/d.png",
                 "data/checkpoints/SEARLE_ViT-B32.pt", "runs/browser/explorer-after.png"):
        assert ignored(path), path
    assert not ignored("data/README.md")
