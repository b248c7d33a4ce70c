"""``searle``: the command line, a thin layer over the package.

Each sub-module registers its sub-commands; ``searle --help`` lists them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pickle
import pkgutil
import sys


def command_modules() -> list:
    """Every module of this package with a ``register(subparsers)`` function, in name order."""
    modules = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)]
    return [m for m in modules if hasattr(m, "register")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="searle", description="SEARLE: zero-shot composed image retrieval "
                                     "by textual inversion (runs offline on the synthetic 'shapes' world by default).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in command_modules():
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # open_clip logs a warning for every randomly initialised model; the CLI says what it loads itself.
    logging.basicConfig(level=logging.ERROR)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        # Run folders keep every finished batch/epoch: say how to continue, not where Python was.
        resumable = getattr(args, "out", None) is not None and hasattr(args, "resume")
        hint = f"; resume with --resume (--out {args.out})" if resumable else ""
        print(f"searle {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as err:
        message = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 else err
        print(f"searle {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
