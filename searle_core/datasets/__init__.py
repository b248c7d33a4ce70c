"""Composed-retrieval datasets: the shared structures, the real loaders and a dispatcher.

``load_benchmark("cirr" | "fashioniq" | "circo", root, split, **kw)`` returns a
:class:`CIRBenchmark`; keyword arguments go to the loader (``on_missing``, ``check_images``,
FashionIQ ``category``). A plain folder of images (ImageNet1K test) is an
:class:`ImageFolderSource`, not a benchmark.
"""

from __future__ import annotations

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
from searle_core.datasets.shapes import ShapesWorld, WorldConfig

_LOADERS = {"cirr": load_cirr, "fashioniq": load_fashioniq, "circo": load_circo}
KNOWN_BENCHMARKS: tuple[str, ...] = ("cirr", "fashioniq", "circo", "shapes")


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
    if key == "shapes":

        world = kw.get("world") or ShapesWorld(WorldConfig.quick() if kw.get("quick") else WorldConfig())
        return world.benchmark(split)
    if root is None:
        raise ValueError(f"dataset {name!r} needs --dataset-path: the folder holding its annotations and images")
    if key not in _LOADERS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(KNOWN_BENCHMARKS)}")
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
    "KNOWN_BENCHMARKS",
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
