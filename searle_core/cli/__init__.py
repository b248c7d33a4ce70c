"""``searle``: the command line, a thin layer over the package.

Each sub-module registers its sub-commands; ``searle --help`` lists them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
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
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        print(f"searle {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
