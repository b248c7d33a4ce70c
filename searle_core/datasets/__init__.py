"""Composed-retrieval datasets: the shared structures, the real loaders and a dispatcher by name; a plain
folder of images (ImageNet1K test) is an :class:`ImageFolderSource`, not a benchmark."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from searle_core.clip.preprocess import to_rgb
from searle_core.datasets.base import CIRBenchmark, CIRQuery, ImageSource
from searle_core.datasets.folder import FileImageSource, ImageFolderSource, ImageLoadError
from searle_core.datasets.loaders import (
    CIRCO_ASPECTS,
    FASHIONIQ_CATEGORIES,
    load_circo,
    load_cirr,
    load_fashioniq,
    query_aspects,
    split_fashioniq_by_category,
)
from searle_core.infra.errors import InputError
from searle_core.infra.providers import PROVIDERS, open_provider

#: Loaders by benchmark name: ``(root, split, **kw) -> CIRBenchmark``; others register themselves.
_LOADERS: dict[str, Callable[..., CIRBenchmark]] = {"cirr": load_cirr, "fashioniq": load_fashioniq, "circo": load_circo}
_GENERATED: set[str] = set()


def register_benchmark(name: str, loader: Callable[..., CIRBenchmark], generated: bool = False) -> None:
    """Make ``load_benchmark(name, ...)`` call ``loader(root, split, **kw)``. ``generated``: it reads no
    dataset folder (``root`` may be ``None``) and makes its images in memory (no loader workers)."""
    _LOADERS[name] = loader
    if generated:
        _GENERATED.add(name)


def generated_benchmark(name: str) -> bool:
    """Whether the benchmark ``name`` is generated rather than read from a folder."""
    open_provider(name)
    return name in _GENERATED


def load_benchmark(name: str, root: str | Path | None = None, split: str = "val", **kw: Any) -> CIRBenchmark:
    """Load a composed-retrieval benchmark by name from ``root`` (its folder in the authors' layout);
    ``kw`` go to the loader (``on_missing``, ``check_images``, FashionIQ ``category``, ...)."""
    key = name.lower()
    open_provider(key)
    if key not in _LOADERS:
        for provided in PROVIDERS:
            open_provider(provided)
        raise InputError(f"unknown benchmark {name!r}; known: {', '.join(_LOADERS)}")
    if root is None and key not in _GENERATED:
        raise InputError(f"dataset {name!r} needs --dataset-path: the folder holding its annotations and images")
    return _LOADERS[key](root, split, **kw)


__all__ = ["CIRBenchmark", "CIRQuery", "ImageSource", "FileImageSource", "ImageFolderSource", "ImageLoadError"]
__all__ += ["load_benchmark", "register_benchmark", "generated_benchmark", "load_circo", "load_cirr", "load_fashioniq"]
__all__ += ["CIRCO_ASPECTS", "FASHIONIQ_CATEGORIES", "query_aspects", "split_fashioniq_by_category", "to_rgb"]
