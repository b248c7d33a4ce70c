"""The ``shapes`` world's attributes (shape, colour, size, background), their values and codes: the
tables the renderer, grammar, benchmark and world CLIP all read, apart from the world object."""

from __future__ import annotations

import itertools

import numpy as np

#: Bumped whenever rendering or sampling changes, so caches keyed on ``cache_key()`` go stale.
WORLD_VERSION = 2

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "arrow")
# Saturated colours, far from each other and from every background (no grey, white or black).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "green": (30, 170, 50),
    "blue": (35, 75, 235),
    "yellow": (245, 215, 10),
    "purple": (150, 45, 190),
    "orange": (250, 135, 0),
}
SIZES: tuple[str, ...] = ("small", "large")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
#: Attribute order used everywhere: combos, codes, aspect names ("colour+shape"), captions.
ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "size", "background")
VALUES = {"colour": tuple(COLOURS), "shape": SHAPES, "size": SIZES, "background": tuple(BACKGROUNDS)}
SPLITS: tuple[str, ...] = ("val", "test")

# Independent random streams per pool and use; the numbers only need to be distinct and never change.
POOL_STREAM = {"pretrain": 1, "val": 2, "val_ref": 3, "test": 4, "test_ref": 5}
QUERY_STREAM = {"val": 6, "test": 7}
CORPUS_STREAM = 9  # the world's text corpus (LinCIR's captions)


def all_combos() -> list[tuple[int, ...]]:
    """Every attribute combination as value indices, in :data:`ATTRIBUTES` order."""
    return list(itertools.product(*(range(len(VALUES[a])) for a in ATTRIBUTES)))


def decode(codes: np.ndarray | tuple[int, ...]) -> dict[str, str]:
    """Attribute dict of one row of value indices (``ATTRIBUTES`` order)."""
    return {a: VALUES[a][int(c)] for a, c in zip(ATTRIBUTES, codes)}
