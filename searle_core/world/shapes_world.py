"""The ``shapes`` world: its configuration, the deterministic world object and its benchmarks. Every image's
attributes and jitter are drawn up front per *pool* (pretraining set, each split's gallery and references) from a
generator seeded by ``(seed, pool)``, so a config gives byte-identical images and queries in any process. A query
changes one or two attributes of a reference; the gallery holds every combination ``gallery_per_combo`` times, so
every query has that many ground truths."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CaptionCorpus, CIRBenchmark, CIRQuery, ImageSource, UnlabeledImages
from searle_core.datasets.features import text_features
from searle_core.infra.errors import InputError
from searle_core.world.attributes import (
    ATTRIBUTES,
    CORPUS_STREAM,
    POOL_STREAM,
    QUERY_STREAM,
    SPLITS,
    VALUES,
    WORLD_VERSION,
    all_combos,
    decode,
)
from searle_core.world.grammar import caption_for, describe, relative_caption
from searle_core.world.render import render_codes

_SCALE_JITTER = 0.10  # relative size jitter
_SHIFT_JITTER = 0.09  # position jitter, fraction of the image side (~3 px at 32x32)
#: Captions of the world's text corpus (LinCIR's): one per two unlabeled images of the default world.
CORPUS_CAPTIONS = 1_000
#: One-change aspects, then every unordered pair ("colour+shape"), in :data:`ATTRIBUTES` order.
TWO_CHANGE_ASPECTS: tuple[str, ...] = tuple("+".join(p) for p in itertools.combinations(ATTRIBUTES, 2))
ASPECTS: tuple[str, ...] = ATTRIBUTES + TWO_CHANGE_ASPECTS


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines a ``shapes`` world: seed, image side, unlabeled images, gallery copies of
    each combination, queries per split, the share of two-change queries and anti-aliased edges."""

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
        """A small world for CI and smoke tests (seconds, not minutes)."""
        fields = {"n_pretrain": 500, "gallery_per_combo": 2, "n_val_queries": 120, "n_test_queries": 120}
        return cls(seed=seed, **{**fields, **overrides})  # type: ignore[arg-type]

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


def images_to_tensor(images: np.ndarray, mean, std, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, H, W, 3) uint8 -> normalised (N, 3, H, W) float, like CLIP's ToTensor + Normalize."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (mean, std))
    return (x - mean) / std


class ShapesWorld(ImageSource):
    """A deterministic synthetic composed-retrieval world (``WorldConfig()``: the default world), and the
    source of its images by name: PIL for the generic pipeline, arrays for the fast path."""

    name = "shapes"

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = c = config or WorldConfig()
        combos = np.array(all_combos(), dtype=np.int64)
        self._pools: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for pool, stream in POOL_STREAM.items():
            rng = np.random.default_rng([c.seed, stream])
            if pool == "pretrain":
                codes = random_codes(rng, c.n_pretrain)
            elif pool in SPLITS:  # gallery: every combination, balanced, in shuffled order
                codes = combos[rng.permutation(np.repeat(np.arange(len(combos)), c.gallery_per_combo))]
            else:
                codes = random_codes(rng, c.n_val_queries if pool == "val_ref" else c.n_test_queries)
            self._pools[pool] = (codes, random_jitter(rng, len(codes)))
        self.images = self  # the ImageSource the benchmarks hold
        self._benchmarks: dict[str, CIRBenchmark] = {}

    def _names(self, pool: str) -> list[str]:
        width = 5 if pool.endswith("_ref") else 6
        return [f"{pool}_{i:0{width}d}" for i in range(len(self._pools[pool][0]))]

    def pretrain_names(self) -> list[str]:
        """The unlabeled images φ trains on (analogue of the ImageNet test images)."""
        return self._names("pretrain")

    def gallery_names(self, split: str) -> list[str]:
        """Gallery of ``split``: every combination ``gallery_per_combo`` times, shuffled."""
        return self._names(_split(split))

    def reference_pool(self, split: str) -> list[str]:
        """Reference images of ``split`` (query ``i`` uses reference ``i``); not in the gallery."""
        return self._names(_split(split) + "_ref")

    def _locate(self, name: str) -> tuple[str, int]:
        pool, _, index = name.rpartition("_")
        if pool not in self._pools or not index.isdigit() or int(index) >= len(self._pools[pool][0]):
            raise KeyError(f"no image named {name!r} in this shapes world")
        return pool, int(index)

    def _rows(self, names: list[str] | tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Codes and jitter of ``names``."""
        located = [self._locate(n) for n in names]
        codes = np.array([self._pools[p][0][j] for p, j in located], dtype=np.int64).reshape(-1, len(ATTRIBUTES))
        return codes, np.array([self._pools[p][1][j] for p, j in located], dtype=float).reshape(-1, 3)

    def attributes(self, name: str) -> dict[str, str]:
        """``{"colour", "shape", "size", "background"}`` of an image (jitter not included)."""
        pool, index = self._locate(name)
        return decode(self._pools[pool][0][index])

    def codes(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """``(N, 4)`` attribute value indices of ``names`` in :data:`ATTRIBUTES` order."""
        return self._rows(names)[0]

    def array(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """``(N, S, S, 3)`` uint8 renders of ``names`` (any mix of pools)."""
        return render_codes(*self._rows(names), self.config)

    def load_image(self, name: str) -> Image.Image:
        return Image.fromarray(self.array([name])[0], mode="RGB")

    def content_id(self) -> str:
        return f"shapes-{self.config.cache_key()}"

    def model_input(self, names: list[str], size: tuple[int, int], mean, std, device) -> torch.Tensor | None:
        images = self.array(names)
        if tuple(images.shape[1:3]) != tuple(size):
            return None  # renders of another size go through the PIL preprocessing
        return images_to_tensor(images, mean, std, device)

    def benchmark(self, split: str, aspect: str | None = None) -> CIRBenchmark:
        """The benchmark of ``split``, with only the queries of one change type if ``aspect`` is given
        (``"colour"``, ``"colour+shape"``, or ``"one"`` / ``"two"`` for all one- or two-change queries)."""
        if _split(split) not in self._benchmarks:
            self._benchmarks[split] = build_benchmark(self, split)
        bench = self._benchmarks[split]
        if aspect is None:
            return bench
        if aspect not in ASPECTS and aspect not in ("one", "two"):
            raise InputError(f"unknown aspect {aspect!r}; expected one of {ASPECTS + ('one', 'two')}")
        wanted = {"one": lambda a: "+" not in a, "two": lambda a: "+" in a}.get(aspect, lambda a: a == aspect)
        queries = [q for q in bench.queries if q.aspect is not None and wanted(q.aspect)]
        return replace(bench, queries=queries, extra={**bench.extra, "aspect": aspect})

    def caption_corpus(self, n: int, seed: int = 0) -> list[str]:
        """``n`` grammar captions of random attribute combinations (no images): LinCIR's text corpus."""
        rng = np.random.default_rng([self.config.seed, CORPUS_STREAM, int(seed)])
        return [describe(decode(row), rng) for row in random_codes(rng, n)]


def _split(split: str) -> str:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {SPLITS}")
    return split


def world_captions(backbone: Backbone, image_features: torch.Tensor) -> list[str]:
    """The world benchmarks' captioner: the grammar caption of the attribute combination (of all 216)
    that scores highest against each image, the perfect captioner as far as the CLIP can tell."""
    captions = [caption_for(decode(c)) for c in all_combos()]
    scores = F.normalize(image_features.float(), dim=-1) @ text_features(backbone, captions).T
    return [captions[i] for i in scores.argmax(dim=1).tolist()]


def build_benchmark(world: ShapesWorld, split: str) -> CIRBenchmark:
    """The ``split`` benchmark of ``world`` (deterministic from the world seed)."""
    gallery, references = world.gallery_names(split), world.reference_pool(split)
    by_combo: dict[tuple[int, ...], list[str]] = {}
    for name, row in zip(gallery, world.codes(gallery)):
        by_combo.setdefault(tuple(int(c) for c in row), []).append(name)
    rng = np.random.default_rng([world.config.seed, QUERY_STREAM[split]])
    # Balanced aspects (each change type and pair an equal share), shuffled: per-aspect breakdowns stay
    # meaningful on small splits.
    n_two = int(round(len(references) * world.config.two_change_fraction))
    balanced = [ATTRIBUTES[i % len(ATTRIBUTES)] for i in range(len(references) - n_two)]
    balanced += [TWO_CHANGE_ASPECTS[i % len(TWO_CHANGE_ASPECTS)] for i in range(n_two)]
    aspects = [balanced[i] for i in rng.permutation(len(balanced))]
    queries: list[CIRQuery] = []
    for i, (reference, row, aspect) in enumerate(zip(references, world.codes(references), aspects)):
        target = [int(c) for c in row]
        captions = []
        for attribute in aspect.split("+"):  # ATTRIBUTES order, so captions follow the aspect name
            col = ATTRIBUTES.index(attribute)
            others = [v for v in range(len(VALUES[attribute])) if v != target[col]]
            target[col] = others[int(rng.integers(len(others)))]
            captions.append(relative_caption(attribute, VALUES[attribute][target[col]]))
        truths = by_combo[tuple(target)]
        queries.append(CIRQuery(str(i), reference, tuple(captions), truths[0], tuple(truths), aspect=aspect))
    key = world.config.cache_key()
    return CIRBenchmark(
        "shapes",
        split,
        queries,
        gallery,
        world.images,
        exclude_reference=False,
        extra={"cache_key": key, "aspects": list(ASPECTS)},
        unlabeled=UnlabeledImages(world.images, world.pretrain_names(), key),
        captioner=world_captions,
        text_corpus=CaptionCorpus(
            f"{key}-grammar-{CORPUS_CAPTIONS}",
            functools.partial(world.caption_corpus, CORPUS_CAPTIONS),  # made only when LinCIR trains
            # each reference's full caption: what the modality gap compares φ's image token with
            {r: caption_for(decode(row)) for r, row in zip(references, world.codes(references))},
        ),
    )
