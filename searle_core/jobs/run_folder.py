"""Run folders: the manifest that says what a run was computed with (hyper-parameters, code version,
sessions), one process per folder, and a resume that refuses other hyper-parameters unless forced."""

from __future__ import annotations

import csv
import datetime
import errno
import fcntl
import functools
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from searle_core.infra import distributed as dist
from searle_core.infra.errors import InputError, first_line
from searle_core.infra.files import UMASK, atomic_write_json, atomic_write_text, jsonable, read_json
from searle_core.infra.paths import REPO_ROOT
from searle_core.infra.version import __version__

MANIFEST, LOCK = "manifest.json", ".lock"
_LOCKS: dict[Path, int] = {}
#: How errors name a run of each kind, what a restart deletes, and the run in resume messages.
_NAMES = {
    "oti": ("an OTI run", "its tokens are deleted", "OTI run"),
    "phi": ("a φ run", "its checkpoint is deleted", "φ training"),
}


def fingerprint(*parts: Any) -> str:
    """Short sha256 of JSON-able values and tensors (the run folders' key; ``files.digest`` takes no tensors
    and hashes otherwise, so the two stay apart to keep stored keys)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().cpu().contiguous()
            digest.update(str((tuple(t.shape), t.dtype)).encode())
            digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(json.dumps(jsonable(part), sort_keys=True).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def code_version() -> dict:
    """The package version, the checkout's git commit (if any) and whether it had local changes."""
    version = {"package": __version__, "git_commit": None, "git_dirty": None}
    if (REPO_ROOT / ".git").exists():
        git = ["git", "-C", str(REPO_ROOT)]
        run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=10, check=True)
        try:
            version["git_commit"] = run([*git, "rev-parse", "HEAD"]).stdout.strip()
            version["git_dirty"] = bool(run([*git, "status", "--porcelain", "--untracked-files=no"]).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    return version


def write_csv(rows: list[dict], path: Path) -> None:
    """One row per dict, one column per key any row has (validation may start late)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for row in rows for k in row)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(text.getvalue(), path)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class DamagedManifest(InputError):
    """A run folder's manifest cannot be read; ``--force`` (without ``--resume``) starts the run over."""


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The run's manifest, or ``None`` if the folder holds no run yet."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = read_json(path, "run manifest")
    except InputError as err:
        raise DamagedManifest(
            f"{err}; the run in {folder} cannot be resumed: pass --force without --resume to start "
            "it over (its files are deleted)"
        ) from None
    if not isinstance(manifest, dict):
        raise DamagedManifest(
            f"{path}: expected a JSON object, got a JSON {type(manifest).__name__}; pass --force "
            "without --resume to start the run over"
        )
    return manifest


def lock_run(folder: Path) -> None:
    """Hold ``folder/.lock`` (an ``flock``) until :func:`unlock_run`: a second process on the same run
    would compute every remaining batch again. The kernel drops the lock when its process dies."""
    key = folder.resolve()
    if key in _LOCKS:
        return
    folder.mkdir(parents=True, exist_ok=True)
    # O_NOFOLLOW and the link count: a `.lock` that is a user's file under another name is refused, never truncated.
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666 & ~UMASK)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise InputError(
            f"{folder / LOCK} is a symbolic link, not the run's lock file; remove it (the file it points "
            "to was left untouched) or choose another --out"
        ) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise InputError(
            f"{folder / LOCK} is not the run's lock file (another file's hard link or not a regular file); "
            "remove it (it was left untouched) or choose another --out"
        )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise InputError(
            f"{folder / LOCK}: another process (pid {holder}) is working on the run in {folder}; "
            "wait for it to finish or stop it, then --resume"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _LOCKS[key] = fd


def unlock_run(folder: Path) -> None:
    fd = _LOCKS.pop(Path(folder).resolve(), None)
    if fd is not None:
        os.close(fd)


def _ours(entry: Path) -> bool:
    """Our lock, our temporary files (``.NAME.XXXX.tmp``), or a run folder of ours (``<out>/oti-import``)."""
    if entry.name == LOCK and not entry.is_symlink():
        return True
    if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file():
        return True
    return entry.is_dir() and not entry.is_symlink() and (entry / MANIFEST).is_file()


def check_ours(folder: Path, a_run: str) -> None:
    """Refuse a folder that is neither new, empty nor one of our run folders: ``--out`` over a user's
    folder would otherwise overwrite, delete or load what is there."""
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir():
        raise InputError(f"--out {folder} is not a folder; choose a new or empty folder for {a_run}")
    if (folder / MANIFEST).is_file():
        return
    if foreign := sorted(e.name for e in folder.iterdir() if not _ours(e)):
        listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise InputError(
            f"--out {folder} is not empty and holds no run of ours (no {MANIFEST}): it holds {listed}; "
            f"choose a new or empty folder for {a_run} (nothing there was changed)"
        )


def hyperparameter_changes(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between two hyper-parameter dicts (nested keys joined by '.')."""
    changes: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{key}.{k}" if key else k)
        elif a != b:
            changes.append(f"{key}: {first_line(json.dumps(a), 80)} in the run, {first_line(json.dumps(b), 80)} now")

    walk(jsonable(saved), jsonable(current), "")
    return changes


def _resume(folder: Path, manifest: dict, hyperparameters: dict, info: dict, force: bool, what: str) -> list:
    """Take ``hyperparameters`` into ``manifest``, recording the changed ones (returned); another dataset folder
    or other hyper-parameters are refused unless ``force``."""
    before, current = (manifest.get("info") or {}).get("path"), info.get("path")
    if before and current and os.path.realpath(before) != os.path.realpath(current):
        if not force:
            raise InputError(
                f"cannot resume the run in {folder}: it ran on --dataset-path {before}, this command gives "
                f"{current}; resume with the run's own --dataset-path, or choose another --out"
            )
        print(f"note: the run in {folder} continues on {current} (it started on {before})", file=sys.stderr)
    changes = hyperparameter_changes(manifest.get("hyperparameters", {}), hyperparameters)
    if changes and not force:
        raise InputError(
            f"cannot resume the {what} in {folder}: its hyper-parameters differ from this command's ("
            + "; ".join(changes)
            + "); use the same settings, another --out folder, or --resume --force "
            "to continue with the new ones (the manifest records both)"
        )
    if changes:  # said, not silent: what is already computed keeps its old settings
        print(
            f"note: continuing the {what} in {folder} with changed hyper-parameters ({'; '.join(changes)}); "
            "results computed so far keep the old ones (manifest.json: 'mixed_hyperparameters')",
            file=sys.stderr,
        )
        until = len(manifest.get("sessions", []))
        mixed = {"until_session": until, "hyperparameters": manifest["hyperparameters"], "changes": changes}
        manifest.setdefault("mixed_hyperparameters", []).append(mixed)
    manifest["hyperparameters"] = jsonable(hyperparameters)
    return changes


def new_manifest(kind: str, hyperparameters: dict, info: dict | None = None) -> dict:
    meta = {"code_version": code_version(), "created": now(), "sessions": [], "complete": False}
    return {"kind": kind, "hyperparameters": jsonable(hyperparameters), "info": jsonable(info or {}), **meta}


def open_run(
    folder: Path, kind: str, hyper: dict, info: dict | None, resume: bool, force: bool, outputs: list
) -> tuple[dict, bool]:
    """Lock and start or resume the run of ``kind`` in ``folder`` (the caller unlocks): its manifest and whether it
    resumes. ``force`` with ``resume`` accepts changed hyper-parameters; without, deletes ``outputs``, starts over."""
    a_run, deleted, label = _NAMES[kind]
    refused = None
    if dist.is_main():
        try:
            check_ours(folder, a_run)
            lock_run(folder)
        except InputError as err:
            refused = str(err)
    refused = dist.broadcast_object(refused)  # every rank stops, not only the one that holds no lock
    if refused:
        raise InputError(refused)
    try:
        manifest = read_manifest(folder)
    except DamagedManifest:
        if resume or not force:
            raise
        manifest = {"kind": kind}  # a damaged run of any kind: --force deletes it and starts over
    if manifest is not None and manifest.get("kind") != kind:
        raise InputError(f"{folder} holds a {manifest.get('kind')!r} run, not {a_run}; choose another --out")
    if manifest is not None and not resume:
        if not force:
            raise InputError(
                f"{folder} already holds {a_run}; pass --resume to continue it or --force to start over ({deleted})"
            )
        dist.barrier()
        if dist.is_main():
            for path in outputs:
                path.unlink(missing_ok=True)
        dist.barrier()
        manifest = None
    resumed = manifest is not None
    changes = _resume(folder, manifest, hyper, info or {}, force, label) if resumed else []
    manifest = manifest if resumed else new_manifest(kind, hyper, info)
    session = {"started": now(), "world_size": dist.world_size(), "resumed": resumed, "forced_changes": changes}
    manifest.setdefault("sessions", []).append({**session, "code_version": code_version()})
    dist.barrier()
    if dist.is_main():
        atomic_write_json(manifest, folder / MANIFEST)
    dist.barrier()
    return manifest, resumed
