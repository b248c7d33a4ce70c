"""Where the project keeps what it computes (world CLIP weights, feature caches, runs)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """``$SEARLE_DATA`` if set; the checkout's ``data/`` folder for an editable install; else ``~/.cache/searle``."""
    if os.environ.get("SEARLE_DATA"):
        return Path(os.environ["SEARLE_DATA"])
    if (REPO_ROOT / "pyproject.toml").is_file():
        return REPO_ROOT / "data"
    return Path.home() / ".cache" / "searle"


def cache_dir(kind: str) -> Path:
    """A sub-folder of ``data_dir()/cache`` (created on demand), e.g. ``cache_dir("features")``."""
    path = data_dir() / "cache" / kind
    path.mkdir(parents=True, exist_ok=True)
    return path
