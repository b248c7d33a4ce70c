"""The ``shapes`` world: its configuration and the deterministic world object.

Every image is described by four attributes (shape, colour, size, background) plus a little
position and size jitter. All of them are drawn up front, per *pool* of images (pretraining set,
each split's gallery, each split's references), from a generator seeded by ``(seed, pool)``; an
image is then rendered on demand from its row. So the same config gives byte-identical images and
identical queries in any process, and asking for one image never depends on what was asked before.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from searle_core.datasets.base import CIRBenchmark, ImageSource
from searle_core.infra.errors import InputError
from searle_core.world import render
from searle_core.world.attributes import (
    _CORPUS_STREAM,
    _POOL_STREAM,
    _TRAINING_STREAM,
    ATTRIBUTES,
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    SIZES,
    SPLITS,
    VALUES,
    WORLD_VERSION,
    all_combos,
    decode,
)
from searle_core.world.benchmark import build_benchmark, filter_aspect
from searle_core.world.grammar import describe

# Half-extent of a shape as a fraction of the image side, before jitter. Small shapes span ~40%
# of the image and large ~68%, and the +-10% size jitter keeps the two classes well apart.
_SIZE_FRACTION = {"small": 0.20, "large": 0.34}
_SCALE_JITTER = 0.10  # relative size jitter
_SHIFT_JITTER = 0.09  # position jitter, fraction of the image side (~3 px at 32x32)


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines a ``shapes`` world.

    Args:
        seed: master seed; every image and query derives from it.
        image_size: height and width of the RGB images.
        n_pretrain: unlabeled images used to train phi (the ImageNet-test analogue).
        gallery_per_combo: gallery copies of each attribute combination, per split.
        n_val_queries: queries in the ``val`` split.
        n_test_queries: queries in the ``test`` split.
        two_change_fraction: share of queries that change two attributes (two captions).
        antialias: anti-aliased (box-filtered) shape edges; False gives hard 0/1 edges.
    """

    seed: int = 0
    image_size: int = 32
    n_pretrain: int = 2000
    gallery_per_combo: int = 5
    n_val_queries: int = 400
    n_test_queries: int = 400
    two_change_fraction: float = 0.25
    antialias: bool = True

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise InputError("image_size must be at least 16 for shapes to stay recognisable")
        if not 0.0 <= self.two_change_fraction <= 1.0:
            raise InputError("two_change_fraction must lie in [0, 1]")
        if min(self.n_pretrain, self.n_val_queries, self.n_test_queries) < 0:
            raise InputError("counts must be non-negative")
        if self.gallery_per_combo < 1:
            raise InputError("gallery_per_combo must be at least 1")

    @classmethod
    def quick(cls, seed: int = 0, **overrides: object) -> WorldConfig:
        """A small world for CI and smoke tests (seconds, not minutes).

        Args:
            seed: master seed.
            **overrides: any other field to change.
        """
        fields = {"n_pretrain": 500, "gallery_per_combo": 2, "n_val_queries": 120, "n_test_queries": 120}
        fields.update(overrides)
        return cls(seed=seed, **fields)  # type: ignore[arg-type]

    def n_queries(self, split: str) -> int:
        """Number of queries of ``split`` (``val`` or ``test``)."""
        return {"val": self.n_val_queries, "test": self.n_test_queries}[split]

    def cache_key(self) -> str:
        """Short stable hash of the config and :data:`WORLD_VERSION` (e.g. for feature caches)."""
        payload = json.dumps({"version": WORLD_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def random_codes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 4)`` uniformly random attribute codes."""
    return np.stack([rng.integers(len(VALUES[a]), size=n) for a in ATTRIBUTES], axis=1)


def random_jitter(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 3)`` jitter rows: x shift, y shift (fractions of the side) and relative scale."""
    shift = rng.uniform(-_SHIFT_JITTER, _SHIFT_JITTER, size=(n, 2))
    scale = rng.uniform(1 - _SCALE_JITTER, 1 + _SCALE_JITTER, size=(n, 1))
    return np.concatenate([shift, scale], axis=1)


def render_codes(codes: np.ndarray, jitter: np.ndarray, config: WorldConfig) -> np.ndarray:
    """Render images from attribute codes and jitter rows.

    Args:
        codes: ``(N, 4)`` value indices in :data:`ATTRIBUTES` order.
        jitter: ``(N, 3)`` rows from :func:`random_jitter`.
        config: gives the image size and anti-aliasing.

    Returns:
        ``(N, S, S, 3)`` uint8 RGB.
    """
    s = config.image_size
    col = {a: i for i, a in enumerate(ATTRIBUTES)}
    colour_rgb = np.array(list(COLOURS.values()), dtype=np.uint8)
    bg_rgb = np.array(list(BACKGROUNDS.values()), dtype=np.uint8)
    base = np.array([_SIZE_FRACTION[z] for z in SIZES])[codes[:, col["size"]]]
    return render.render(
        shape_idx=codes[:, col["shape"]],
        foreground=colour_rgb[codes[:, col["colour"]]],
        background=bg_rgb[codes[:, col["background"]]],
        cx=s * (0.5 + jitter[:, 0]),
        cy=s * (0.5 + jitter[:, 1]),
        radius=s * base * jitter[:, 2],
        image_size=s,
        shapes=SHAPES,
        antialias=config.antialias,
    )


def images_to_tensor(images: np.ndarray, mean, std, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, H, W, 3) uint8 -> normalised (N, 3, H, W) float, like CLIP's ToTensor + Normalize."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


class ShapesImages(ImageSource):
    """The world's images, by name: PIL for the generic pipeline, arrays for the fast path.

    Args:
        world: the world the names belong to.
    """

    def __init__(self, world: ShapesWorld) -> None:
        self.world = world

    def array(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """Render ``(N, S, S, 3)`` uint8 images for ``names`` (any mix of pools)."""
        codes, jitter = self.world._rows(names)
        return render_codes(codes, jitter, self.world.config)

    def load_image(self, name: str) -> Image.Image:
        return Image.fromarray(self.array([name])[0], mode="RGB")

    def content_id(self) -> str:
        return f"shapes-{self.world.config.cache_key()}"

    def model_input(
        self, names: list[str], size: tuple[int, int], mean, std, device: torch.device
    ) -> torch.Tensor | None:
        images = self.array(names)
        if tuple(images.shape[1:3]) != tuple(size):
            return None  # renders of another size go through the PIL preprocessing
        return images_to_tensor(images, mean, std, device)


class ShapesWorld:
    """A deterministic synthetic composed-retrieval world.

    Args:
        config: the world's parameters; ``WorldConfig()`` is the default world.
    """

    name = "shapes"

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        c = self.config
        combos = np.array(all_combos(), dtype=np.int64)
        self._pools: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for pool, stream in _POOL_STREAM.items():
            rng = np.random.default_rng([c.seed, stream])
            if pool == "pretrain":
                codes = random_codes(rng, c.n_pretrain)
            elif pool in SPLITS:  # gallery: every combination, balanced, in shuffled order
                codes = combos[rng.permutation(np.repeat(np.arange(len(combos)), c.gallery_per_combo))]
            else:
                codes = random_codes(rng, c.n_queries(pool.removesuffix("_ref")))
            self._pools[pool] = (codes, random_jitter(rng, len(codes)))
        self.images = ShapesImages(self)
        self._benchmarks: dict[str, CIRBenchmark] = {}

    # ---- names ---------------------------------------------------------------------------------
    @staticmethod
    def _name(pool: str, index: int) -> str:
        return f"{pool}_{index:05d}" if pool.endswith("_ref") else f"{pool}_{index:06d}"

    def _names(self, pool: str) -> list[str]:
        return [self._name(pool, i) for i in range(len(self._pools[pool][0]))]

    def pretrain_names(self) -> list[str]:
        """The unlabeled images used to train phi (analogue of the ImageNet test images)."""
        return self._names("pretrain")

    def gallery_names(self, split: str) -> list[str]:
        """Gallery of ``split``: every combination ``gallery_per_combo`` times, shuffled."""
        return self._names(self._split(split))

    def reference_pool(self, split: str) -> list[str]:
        """Reference images of ``split`` (query ``i`` uses reference ``i``); not in the gallery."""
        return self._names(self._split(split) + "_ref")

    @staticmethod
    def _split(split: str) -> str:
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected one of {SPLITS}")
        return split

    def _locate(self, name: str) -> tuple[str, int]:
        pool, _, index = name.rpartition("_")
        if pool not in self._pools or not index.isdigit() or int(index) >= len(self._pools[pool][0]):
            raise KeyError(f"no image named {name!r} in this shapes world")
        return pool, int(index)

    def _rows(self, names: list[str] | tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Codes and jitter of ``names``, gathered pool by pool (vectorised)."""
        located = [self._locate(n) for n in names]
        codes = np.zeros((len(names), len(ATTRIBUTES)), dtype=np.int64)
        jitter = np.zeros((len(names), 3))
        for pool in {p for p, _ in located}:
            where = np.array([i for i, (p, _) in enumerate(located) if p == pool])
            rows = np.array([j for p, j in located if p == pool])
            codes[where], jitter[where] = self._pools[pool][0][rows], self._pools[pool][1][rows]
        return codes, jitter

    # ---- attributes and images -----------------------------------------------------------------
    def attributes(self, name: str) -> dict[str, str]:
        """``{"colour", "shape", "size", "background"}`` of an image (jitter not included)."""
        pool, index = self._locate(name)
        return decode(self._pools[pool][0][index])

    def codes(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """``(N, 4)`` attribute value indices of ``names`` in :data:`ATTRIBUTES` order."""
        return self._rows(names)[0]

    def array(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """Shortcut for ``self.images.array(names)``."""
        return self.images.array(names)

    # ---- benchmark and training data -----------------------------------------------------------
    def benchmark(self, split: str, aspect: str | None = None) -> CIRBenchmark:
        """The composed-retrieval benchmark of ``split``.

        Args:
            split: ``val`` or ``test``.
            aspect: keep only queries of this change type (``"colour"``, ``"colour+shape"``, or
                ``"one"`` / ``"two"`` for all one- or two-change queries); ``None`` keeps all.
        """
        split = self._split(split)
        if split not in self._benchmarks:
            self._benchmarks[split] = build_benchmark(self, split)
        bench = self._benchmarks[split]
        return bench if aspect is None else filter_aspect(bench, aspect)

    def training_pairs(
        self, n: int, rng_or_seed: np.random.Generator | int, return_codes: bool = False
    ) -> tuple[np.ndarray, list[str]] | tuple[np.ndarray, list[str], np.ndarray]:
        """Fresh random images with grammar captions, for contrastive training of the world CLIP.

        Args:
            n: number of pairs.
            rng_or_seed: a generator (consumed) or an int, mixed with the world seed so that
                different worlds get different streams.

            return_codes: also return the ``(n, 4)`` attribute codes.

        Returns:
            ``(n, S, S, 3)`` uint8 images and their ``n`` captions (and codes).
        """
        rng = (
            rng_or_seed
            if isinstance(rng_or_seed, np.random.Generator)
            else np.random.default_rng([self.config.seed, _TRAINING_STREAM, int(rng_or_seed)])
        )
        codes, jitter = random_codes(rng, n), random_jitter(rng, n)
        captions = [describe(decode(row), rng) for row in codes]
        images = render_codes(codes, jitter, self.config)
        return (images, captions, codes) if return_codes else (images, captions)

    def caption_corpus(self, n: int, seed: int = 0) -> list[str]:
        """``n`` grammar captions of random attribute combinations (no images): LinCIR's text corpus.

        Args:
            n: number of captions.
            seed: mixed with the world seed (a stream apart from the images' and the CLIP's).
        """
        rng = np.random.default_rng([self.config.seed, _CORPUS_STREAM, int(seed)])
        return [describe(decode(row), rng) for row in random_codes(rng, n)]
