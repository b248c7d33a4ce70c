"""Run folders: the manifest that says what a run was computed with.

A run that takes GPU-hours is killed sooner or later. Every file of a run folder is therefore
written to a temporary name in the same folder and renamed over the target (a rename is atomic on
POSIX file systems), so a kill leaves the previous version or the new one, never half a file. The
manifest records the hyper-parameters, the code version and the sessions that worked on the run; a
resumed run compares its hyper-parameters with the manifest's and refuses to mix different ones
unless told to.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from searle_core.infra import distributed as dist
from searle_core.infra.errors import InputError, read_json
from searle_core.infra.files import UMASK, atomic_write_json, jsonable
from searle_core.infra.paths import REPO_ROOT
from searle_core.infra.version import __version__

MANIFEST = "manifest.json"


def fingerprint(*parts: Any) -> str:
    """Short sha256 of JSON-able values and tensors (e.g. the image names, the features)."""
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
    """The package version, the git commit of the checkout (if any) and whether it had local changes."""

    version = {"package": __version__, "git_commit": None, "git_dirty": None}
    if (REPO_ROOT / ".git").exists():

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()

        try:
            version["git_commit"] = git("rev-parse", "HEAD")
            version["git_dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
        except (OSError, subprocess.SubprocessError):
            pass
    return version


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class DamagedManifest(InputError):
    """A run folder's manifest cannot be read; ``--force`` (without ``--resume``) starts the run over."""


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The run's manifest, or ``None`` if the folder holds no run yet.

    Raises:
        DamagedManifest: the manifest is not a JSON object (truncated, edited by hand, not UTF-8).
    """
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


# ---- one process per run folder ------------------------------------------------------------------
LOCK = ".lock"
_LOCKS: dict[Path, int] = {}


def lock_run(folder: Path) -> None:
    """Hold ``folder/.lock`` (an ``flock``) until :func:`unlock_run` or the process ends.

    Two ``--resume`` on one folder would both compute every remaining batch; the second one is
    refused instead. The kernel drops the lock when its process dies (even by SIGKILL), so a
    killed run never leaves a stale lock behind.

    Raises:
        InputError: another process holds the folder's lock.
    """
    import fcntl

    key = folder.resolve()
    if key in _LOCKS:
        return
    folder.mkdir(parents=True, exist_ok=True)
    # O_NOFOLLOW: a `.lock` that links to a user's file is refused, never truncated; a hard link
    # (a second name of someone's file) is refused the same way before anything is written to it.
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


#: What a folder may hold besides a run of ours and still be taken as a new run folder: our lock,
#: our temporary files (``.NAME.XXXX.tmp`` of :func:`~searle_core.infra.files.atomic_write`).
def _ours_without_manifest(entry: Path) -> bool:
    if entry.name == LOCK and not entry.is_symlink():
        return True
    if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file():
        return True
    # A run folder of ours inside (`train-phi --images` imports the authors' OTI into <out>/oti-import).
    return entry.is_dir() and not entry.is_symlink() and (entry / MANIFEST).is_file()


def check_ours(folder: Path, a_run: str) -> None:
    """Refuse a folder that is neither new, empty nor one of our run folders (it has a manifest).

    Without this, ``--out`` over a folder of the user's (a ``log.csv``, a ``phi.pt``, an
    ``inputs.pt`` of something else) would overwrite, delete or load what is there.

    Raises:
        InputError: naming the folder and the files that are not ours.
    """
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir():
        raise InputError(f"--out {folder} is not a folder; choose a new or empty folder for {a_run}")
    if (folder / MANIFEST).is_file():
        return
    foreign = sorted(e.name for e in folder.iterdir() if not _ours_without_manifest(e))
    if foreign:
        listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise InputError(
            f"--out {folder} is not empty and holds no run of ours (no {MANIFEST}): it holds {listed}; "
            f"choose a new or empty folder for {a_run} (nothing there was changed)"
        )


def unlock_run(folder: Path) -> None:
    """Release the lock taken by :func:`lock_run` (nothing if this process holds none)."""
    fd = _LOCKS.pop(Path(folder).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


def hyperparameter_changes(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between two hyper-parameter dicts (nested keys joined by '.')."""
    changes: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{key}.{k}" if key else k)
        elif a != b:
            changes.append(f"{key}: {short(a)} in the run, {short(b)} now")

    walk(jsonable(saved), jsonable(current), "")
    return changes


def short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_resume(folder: Path, manifest: dict, hyperparameters: dict, force: bool, what: str) -> list[str]:
    """Refuse to resume with different hyper-parameters unless ``force``; returns the changes.

    Raises:
        ValueError: naming the folder and every changed hyper-parameter.
    """
    changes = hyperparameter_changes(manifest.get("hyperparameters", {}), hyperparameters)
    if changes and not force:
        raise InputError(
            f"cannot resume the {what} in {folder}: its hyper-parameters differ from this command's ("
            + "; ".join(changes)
            + "); use the same settings, another --out folder, or --resume --force "
            "to continue with the new ones (the manifest records both)"
        )
    if changes:
        # Said, not silent: what is already computed keeps its old settings; the manifest keeps both.
        print(
            f"note: continuing the {what} in {folder} with changed hyper-parameters ({'; '.join(changes)}); "
            "results computed so far keep the old ones (manifest.json: 'mixed_hyperparameters')",
            file=sys.stderr,
        )
    return changes


def _check_same_data(folder: Path, saved: dict, current: dict, force: bool) -> None:
    """Refuse to resume a run over another dataset folder than its own (same image names or not)."""
    before, now = saved.get("path"), current.get("path")
    if not before or not now or os.path.realpath(before) == os.path.realpath(now):
        return
    if not force:
        raise InputError(
            f"cannot resume the run in {folder}: it ran on --dataset-path {before}, this command gives "
            f"{now}; resume with the run's own --dataset-path, or choose another --out"
        )
    print(f"note: the run in {folder} continues on {now} (it started on {before})", file=sys.stderr)


def new_manifest(kind: str, hyperparameters: dict, info: dict | None = None) -> dict:
    return {
        "kind": kind,
        "hyperparameters": jsonable(hyperparameters),
        "info": jsonable(info or {}),
        "code_version": code_version(),
        "created": now(),
        "sessions": [],
        "complete": False,
    }


def add_session(manifest: dict, world_size: int, resumed: bool, changes: list[str]) -> dict:
    """Record that a (possibly resumed) session started, with what it changed and its code version."""
    manifest.setdefault("sessions", []).append(
        {
            "started": now(),
            "world_size": world_size,
            "resumed": resumed,
            "forced_changes": changes,
            "code_version": code_version(),
        }
    )
    return manifest


def open_run(
    folder: Path,
    kind: str,
    hyperparameters: dict,
    info: dict | None,
    resume: bool,
    force: bool,
    outputs: list[Path],
    names: tuple[str, str, str],
) -> tuple[dict, bool]:
    """Start or resume the run of ``kind`` in ``folder``; returns its manifest (written by rank 0)
    and whether it resumes.

    Args:
        folder: the run folder.
        kind: the manifest's kind (``oti``, ``phi``).
        hyperparameters: compared with the folder's on resume.
        info: free-form description for a new manifest.
        resume: continue the folder's run.
        force: with ``resume``, accept changed hyper-parameters; without, delete ``outputs`` and start over.
        outputs: the files a forced restart deletes (the manifest included).
        names: how errors name the run ("an OTI run"), what a restart deletes ("its tokens are
            deleted") and the run in resume errors ("OTI run").

    Raises:
        ValueError: the folder holds another kind of run, or a run that is neither resumed nor forced.
    """

    a_run, deleted, label = names
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
        return _open_locked(folder, kind, hyperparameters, info, resume, force, outputs, names)
    except BaseException:
        unlock_run(folder)
        raise


def _open_locked(
    folder: Path,
    kind: str,
    hyperparameters: dict,
    info: dict | None,
    resume: bool,
    force: bool,
    outputs: list[Path],
    names: tuple[str, str, str],
) -> tuple[dict, bool]:

    a_run, deleted, label = names
    try:
        manifest = read_manifest(folder)
    except DamagedManifest:
        if resume or not force:
            raise
        manifest = {"kind": kind}  # a damaged run of any kind: --force deletes it and starts over
    changes: list[str] = []
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
    if resumed:
        _check_same_data(folder, manifest.get("info") or {}, info or {}, force)
        changes = check_resume(folder, manifest, hyperparameters, force, label)
        if changes:
            # Keep every earlier setting: results computed before the change were made with them.
            manifest.setdefault("mixed_hyperparameters", []).append(
                {
                    "until_session": len(manifest.get("sessions", [])),
                    "hyperparameters": manifest["hyperparameters"],
                    "changes": changes,
                }
            )
        manifest["hyperparameters"] = new_manifest(kind, hyperparameters)["hyperparameters"]
    else:
        manifest = new_manifest(kind, hyperparameters, info)
    add_session(manifest, dist.world_size(), resumed=resumed, changes=changes)
    dist.barrier()
    if dist.is_main():
        atomic_write_json(manifest, folder / MANIFEST)
    dist.barrier()
    return manifest, resumed
