"""An ``open`` audit hook for the fault cases: which files a test opened.

``sys.addaudithook`` is process-wide and cannot be removed, so the hook is installed once, on
import, and does nothing unless something is recording. Two recordings can run at once:

- the marker's (``conftest.py``, for every test marked ``@pytest.mark.audit_open``, from the start of
  its setup to the end of its teardown): :func:`battery_stray` lists what was opened outside the test
  session's temporary folders (every dataset root, run folder and ``SEARLE_DATA`` cache of those
  tests lies there), the repository's own cache (``data/cache``), the code (Python, its
  libraries, this repository's package, tests and notebook profiles) and the kernel's views;
- a test's own, stricter one (:func:`start`, :func:`stop`, :func:`outside`; the ``opened`` fixture of
  ``conftest.py``): only the test's own folder, and optionally folders no test may read (the
  containment tests' ``outside/``).

Files opened by child processes (the kill-and-resume tests' ``python -m searle_core``) are not seen.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

RECORDING = False
OPENED: list[str] = []
BATTERY_RECORDING = False
BATTERY: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if (RECORDING or BATTERY_RECORDING) and event == "open" and args:
        if not isinstance(args[0], (str, bytes, os.PathLike)):
            return  # a file descriptor: os.fdopen of something already open
        path = os.path.abspath(os.fsdecode(args[0]))
        if RECORDING:
            OPENED.append(path)
        if BATTERY_RECORDING:
            BATTERY.append(path)


sys.addaudithook(_audit)
REPO = Path(__file__).resolve().parents[1]
#: Python, its libraries and the kernel's views: anyone may open these.
PYTHON = sorted(
    {sys.prefix, sys.base_prefix, sys.exec_prefix, *(p for p in sysconfig.get_paths().values() if p)}
    | {"/proc", "/sys", "/dev"}
)
#: This repository's code, its tests' data, the notebooks and their profiles (read by name).
CODE = [*PYTHON, str(REPO / "searle_core"), str(REPO / "tests"), str(REPO / "notebooks")]
# An editable install keeps the package's metadata (entry points, version) beside the code, in the checkout.
CODE += [str(p) for p in REPO.glob("*.egg-info")] + [str(p) for p in REPO.glob("*.dist-info")]
#: The project's cache when ``SEARLE_DATA`` is not set (the world CLIP's weights live there).
REPO_CACHE = str(REPO / "data" / "cache")


def under(path: str, root: str | Path) -> bool:
    root = os.path.abspath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def start() -> list[str]:
    global RECORDING
    OPENED.clear()
    RECORDING = True
    return OPENED


def stop() -> None:
    global RECORDING
    RECORDING = False


def outside(allowed: Iterable[str | Path], forbidden: Iterable[str | Path] = ()) -> list[str]:
    """Files opened under ``forbidden`` or outside both ``allowed`` and the code's folders."""
    allowed, forbidden = [*allowed, *CODE], list(forbidden)
    return [p for p in OPENED if any(under(p, f) for f in forbidden) or not any(under(p, a) for a in allowed)]


def battery_start() -> list[str]:
    global BATTERY_RECORDING
    BATTERY.clear()
    BATTERY_RECORDING = True
    return BATTERY


def battery_stop() -> None:
    global BATTERY_RECORDING
    BATTERY_RECORDING = False


def battery_stray(temporary: Iterable[str | Path]) -> list[str]:
    """Files the marker's recording saw outside ``temporary`` (the session's pytest folders), the
    repository's cache and the code's folders, each once, in the order first opened."""
    allowed = [*temporary, REPO_CACHE, *CODE]
    # The import system probes each sys.path entry itself as a zip archive (the checkout, an editable
    # install's path hook): those exact paths are not files of anyone's.
    probed = {os.path.abspath(entry) for entry in sys.path}
    return list(dict.fromkeys(p for p in BATTERY if p not in probed and not any(under(p, a) for a in allowed)))


def forget(path: str | Path) -> None:
    """Drop every record of ``path`` and what lies under it (opened on purpose, to show the audit sees it)."""
    OPENED[:] = [p for p in OPENED if not under(p, path)]
    BATTERY[:] = [p for p in BATTERY if not under(p, path)]
