"""``searle``: the command line, a thin layer over the package; each sub-module registers its commands. Bad input
(``InputError`` and its kin, the OS's file errors) is one line naming what to fix; anything else is a bug and prints
its traceback, as every error does under ``--debug`` or ``SEARLE_DEBUG=1``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pickle
import pkgutil
import signal
import sys
import threading

from searle_core.infra.device import set_threads
from searle_core.infra.errors import InputError
from searle_core.metrics.circo_server import CIRCOScoringError
from searle_core.notebook.papermill_runner import NotebookFailed

#: Errors that mean "the input is unusable" and whose message says which input and why: one line.
USER_ERRORS = (InputError, CIRCOScoringError, NotebookFailed, OSError, pickle.UnpicklingError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="searle",
        description="SEARLE: zero-shot composed image retrieval "
        "by textual inversion (runs offline on the synthetic 'shapes' world by default).",
    )
    parser.add_argument("--debug", action="store_true", help="print the traceback of every error (SEARLE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for m in pkgutil.iter_modules(__path__):  # every module with a register(subparsers), in name order
        module = importlib.import_module(f"{__name__}.{m.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # open_clip logs a warning for every randomly initialised model; the CLI says what it loads itself.
    logging.basicConfig(level=logging.ERROR)
    args = build_parser().parse_args(argv)
    set_threads(getattr(args, "threads", None) or 0)  # deliberately, never torch's all-cores default
    debug = args.debug or os.environ.get("SEARLE_DEBUG", "") not in ("", "0")
    received: list[int] = []
    previous = _stop_on_sigterm(received)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"searle {args.command}: {_interrupted(args)}", file=sys.stderr)
        return 128 + (received[0] if received else signal.SIGINT)
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"searle {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop_on_sigterm(received: list[int]):
    """SIGTERM (``kill``, a scheduler, torchrun) stops a command as Ctrl-C does, so run folders keep their
    finished work; returns the handler it replaced (``None`` when not installed)."""

    def stop(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        return None
    signal.signal(signal.SIGTERM, stop)
    return previous


def _interrupted(args: argparse.Namespace) -> str:
    """The exit line of an interrupted command: what a run folder kept and how to continue."""
    if getattr(args, "out", None) is None or not hasattr(args, "resume"):
        return "interrupted"
    said = f"; {args.kept(args.out)}" if hasattr(args, "kept") else ""
    return f"interrupted{said}; resume with --resume (--out {args.out})"


if __name__ == "__main__":
    sys.exit(main())
