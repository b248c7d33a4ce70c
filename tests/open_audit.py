"""An ``open`` audit hook for the fault battery: which files a test opened.

``sys.addaudithook`` is process-wide and cannot be removed, so the hook is installed once, on
import, and does nothing unless a test is recording. :func:`outside` lists what was opened outside
the test's own folder (its dataset roots, run folders and cache) and the code's own files.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

RECORDING = False
OPENED: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if RECORDING and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.path.abspath(os.fsdecode(args[0])))


sys.addaudithook(_audit)
# Files anyone may open: Python, its libraries, this repository's code and tests, the kernel's views.
CODE = [sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(__file__).resolve().parents[1]), "/proc", "/sys", "/dev"]


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
