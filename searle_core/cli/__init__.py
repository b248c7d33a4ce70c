"""``searle``: the command line, a thin layer over the package.

Each sub-module registers its sub-commands; ``searle --help`` lists them.

Errors: bad input (the project's :class:`~searle_core.infra.errors.InputError` and its kin, and the
operating system's file errors: a missing file, no permission, a full disk) is one line naming what
to fix; anything else is a bug and prints its traceback. ``--debug`` or ``SEARLE_DEBUG=1`` prints the
traceback of every error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pickle
import pkgutil
import sys

from searle_core.infra.errors import InputError
from searle_core.metrics.circo_server import CIRCOScoringError
from searle_core.notebook.papermill_runner import NotebookFailed

#: Errors that mean "the input is unusable" and whose message says which input and why: one line.
USER_ERRORS: tuple[type[BaseException], ...] = (
    InputError,
    CIRCOScoringError,
    NotebookFailed,
    OSError,
    pickle.UnpicklingError,
)


def command_modules() -> list:
    """Every module of this package with a ``register(subparsers)`` function, in name order."""
    modules = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)]
    return [m for m in modules if hasattr(m, "register")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="searle",
        description="SEARLE: zero-shot composed image retrieval "
        "by textual inversion (runs offline on the synthetic 'shapes' world by default).",
    )
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of every error (also: SEARLE_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in command_modules():
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # open_clip logs a warning for every randomly initialised model; the CLI says what it loads itself.
    logging.basicConfig(level=logging.ERROR)
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("SEARLE_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        # Run folders keep every finished batch/epoch: say how to continue, not where Python was.
        resumable = getattr(args, "out", None) is not None and hasattr(args, "resume")
        hint = f"; resume with --resume (--out {args.out})" if resumable else ""
        print(f"searle {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"searle {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
