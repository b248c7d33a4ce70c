"""The project's on-disk caches of tensors: one file per key, read back only when whole and of the
expected size, written through a temporary file and a rename (see :mod:`searle_core.infra.files`)."""

from __future__ import annotations

from pathlib import Path

import torch

from searle_core.infra.files import atomic_save
from searle_core.infra.paths import cache_dir


def cache_file(kind: str, cache: bool | str | Path, key: str) -> Path | None:
    """The file for ``key`` in ``cache`` (``True``: the project cache's ``features/``; ``False``: none)."""
    if not cache:
        return None
    folder = cache_dir("features") if cache is True else Path(cache)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{kind}-{key}.pt"


def load_cached_tensor(path: Path | None, rows: int) -> torch.Tensor | None:
    """A cached tensor with ``rows`` rows, or ``None`` when absent, damaged or of another size.

    Args:
        path: the cache file (``None``: no cache).
        rows: the number of rows expected.
    """
    if path is None or not path.is_file():
        return None
    try:
        feats = torch.load(path, weights_only=True)
    except Exception:  # torch.load fails in many ways on a damaged file: recompute, never trust it
        return None
    return feats if isinstance(feats, torch.Tensor) and feats.shape[0] == rows else None


def save_tensor_atomic(path: Path | None, tensor: torch.Tensor) -> None:
    """Save ``tensor`` to ``path`` via a unique temporary file and a rename.

    Two processes filling the same cache entry never mix their files, and an interrupted run
    never leaves a truncated one under the final name.

    Args:
        path: destination (``None``: do nothing).
        tensor: what to save.
    """
    if path is None:
        return
    atomic_save(tensor, path)
