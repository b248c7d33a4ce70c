"""Backbones and benchmarks that a module of the package provides, opened by name when first asked for: importing
``searle_core`` registers nothing; :func:`open_provider` imports the module providing a name (which registers it)."""

import importlib

#: Name -> the module that registers it.
PROVIDERS: dict[str, str] = {"shapes-clip": "searle_core.world", "shapes": "searle_core.world"}


def open_provider(name: str) -> None:
    """Import the module providing ``name``, if a module of the package provides it."""
    if name in PROVIDERS:
        importlib.import_module(PROVIDERS[name])
