"""Where the project keeps what it computes (world CLIP weights, feature caches, runs)."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
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
    """A sub-folder of ``data_dir()/cache`` (created on demand), e.g. ``cache_dir("features")``; where it cannot be
    made (``SEARLE_DATA`` a file or read-only) one in this process's temporary folder, said: the run goes on."""
    path = data_dir() / "cache" / kind
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if not _FALLBACK:
            _FALLBACK.append(Path(tempfile.mkdtemp(prefix="searle-cache-")))
            atexit.register(shutil.rmtree, _FALLBACK[0], True)
            print(
                f"warning: cannot make the cache folder {path} ({err.strerror}); caching in {_FALLBACK[0]} for this "
                "run only (set SEARLE_DATA to a writable folder to keep what is computed)",
                file=sys.stderr,
            )
        path = _FALLBACK[0] / kind
        path.mkdir(exist_ok=True)
    return path


_FALLBACK: list[Path] = []  # the temporary cache folder, made once a process
