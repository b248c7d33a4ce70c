"""The on-disk caches of tensors: one file per key, read back only when whole and of the expected
size, written atomically (:mod:`searle_core.infra.files`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
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
    """The cached tensor at ``path`` if it has ``rows`` rows; ``None`` when absent, damaged or of another size."""
    if path is None or not path.is_file():
        return None
    try:
        feats = torch.load(path, weights_only=True)
    except Exception:  # torch.load fails in many ways on a damaged file: recompute, never trust it
        return None
    return feats if isinstance(feats, torch.Tensor) and feats.shape[0] == rows else None


def save_tensor_atomic(path: Path | None, tensor: torch.Tensor) -> None:
    """Save ``tensor`` to ``path`` (``None``: nothing) atomically: two processes filling one entry never
    mix their files, an interrupted run never leaves a truncated one."""
    if path is not None:
        save_or_warn(lambda: atomic_save(tensor, path), path, "feature cache")


def save_or_warn(save: Callable[[], object], path: Path, what: str) -> bool:
    """Run ``save()``; a failure to write (full disk, no permission) is said on stderr and the run
    goes on: a cache only saves time, losing an entry costs a recomputation later, not the run."""
    try:
        save()
        return True
    except OSError as err:
        print(f"warning: could not write the {what} {path} ({err}); going on without it", file=sys.stderr)
        return False
