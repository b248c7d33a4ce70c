"""Composed-retrieval datasets: the shared structures, the real loaders and a dispatcher.

``load_benchmark("cirr" | "fashioniq" | "circo", root, split, **kw)`` returns a
:class:`CIRBenchmark`; keyword arguments go to the loader (``on_missing``, ``check_images``,
FashionIQ ``category``). A plain folder of images (ImageNet1K test) is an
:class:`ImageFolderSource`, not a benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from searle_core.datasets.base import CIRBenchmark, CIRQuery, ImageSource, check_paths, to_rgb
from searle_core.datasets.circo import CIRCO_ASPECTS, CIRCO_LAYOUT, load_circo, query_aspects
from searle_core.datasets.cirr import CIRR_LAYOUT, load_cirr
from searle_core.datasets.fashioniq import (
    FASHIONIQ_CATEGORIES,
    FASHIONIQ_LAYOUT,
    load_fashioniq,
    split_fashioniq_by_category,
    strip_caption,
)
from searle_core.datasets.folder import (
    IMAGE_EXTENSIONS,
    FileImageSource,
    ImageFolderSource,
    ImageLoadError,
    find_bad_images,
    resolve_missing,
)
from searle_core.infra.errors import InputError
from searle_core.infra.providers import PROVIDERS, open_provider

#: Loaders by benchmark name: ``(root, split, **kw) -> CIRBenchmark``. The offline world registers
#: ``shapes`` (:mod:`searle_core.world`), whose ``root`` is unused.
_LOADERS: dict[str, Callable[..., CIRBenchmark]] = {"cirr": load_cirr, "fashioniq": load_fashioniq, "circo": load_circo}
#: Benchmarks that are generated, not read from a folder.
_GENERATED: set[str] = set()


def register_benchmark(name: str, loader: Callable[..., CIRBenchmark], generated: bool = False) -> None:
    """Make ``load_benchmark(name, ...)`` call ``loader(root, split, **kw)``.

    Args:
        name: the benchmark's name (lower case).
        loader: builds the benchmark.
        generated: it needs no dataset folder (``root`` may be ``None``).
    """
    _LOADERS[name] = loader
    if generated:
        _GENERATED.add(name)


def known_benchmarks() -> tuple[str, ...]:
    """The names :func:`load_benchmark` takes."""
    for name in PROVIDERS:
        open_provider(name)
    return tuple(_LOADERS)


def load_benchmark(name: str, root: str | Path | None = None, split: str = "val", **kw: Any) -> CIRBenchmark:
    """Load a composed-retrieval benchmark by name.

    Args:
        name: ``cirr``, ``fashioniq``, ``circo`` or ``shapes``.
        root: the dataset folder in the authors' layout (unused for ``shapes``, which is generated).
        split: split name (``val``, ``test``, ...; see each loader).
        **kw: passed to the loader (``on_missing``, ``check_images``, FashionIQ ``category``;
            for ``shapes``: ``world`` (a ``ShapesWorld``) or ``quick`` (bool)).
    """
    key = name.lower()
    open_provider(key)
    if key not in _LOADERS:
        raise InputError(f"unknown benchmark {name!r}; known: {', '.join(known_benchmarks())}")
    if root is None and key not in _GENERATED:
        raise InputError(f"dataset {name!r} needs --dataset-path: the folder holding its annotations and images")
    return _LOADERS[key](root, split, **kw)


__all__ = [
    "CIRBenchmark",
    "CIRQuery",
    "ImageSource",
    "check_paths",
    "to_rgb",
    "CIRCO_ASPECTS",
    "CIRCO_LAYOUT",
    "CIRR_LAYOUT",
    "FASHIONIQ_CATEGORIES",
    "FASHIONIQ_LAYOUT",
    "IMAGE_EXTENSIONS",
    "FileImageSource",
    "ImageFolderSource",
    "ImageLoadError",
    "known_benchmarks",
    "register_benchmark",
    "find_bad_images",
    "load_benchmark",
    "load_circo",
    "load_cirr",
    "load_fashioniq",
    "query_aspects",
    "resolve_missing",
    "split_fashioniq_by_category",
    "strip_caption",
]
