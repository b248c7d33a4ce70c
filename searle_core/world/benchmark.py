"""Composed-retrieval queries and ground truths of the ``shapes`` world.

A query takes a reference image (random attributes, drawn outside the gallery), changes one or two
*different* attributes to a different value and keeps the rest. One-change queries have one
relative caption (CIRR/CIRCO-like); two-change queries have two (FashionIQ-like). Because the
gallery holds every attribute combination ``gallery_per_combo`` times, every query has exactly
that many ground truths, found by attribute equality (position and size jitter ignored).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import replace
from typing import Protocol

import numpy as np

from searle_core.datasets.base import CaptionCorpus, CIRBenchmark, CIRQuery, ImageSource, UnlabeledImages
from searle_core.infra.errors import InputError
from searle_core.world.attributes import ATTRIBUTES, QUERY_STREAM, VALUES, decode
from searle_core.world.captioner import world_captions
from searle_core.world.grammar import caption_for, relative_caption


class WorldView(Protocol):
    """What a benchmark is built from (a :class:`~searle_core.world.shapes_world.ShapesWorld`)."""

    config: object
    images: ImageSource

    def gallery_names(self, split: str) -> list[str]: ...

    def reference_pool(self, split: str) -> list[str]: ...

    def pretrain_names(self) -> list[str]: ...

    def codes(self, names: list[str] | tuple[str, ...]) -> np.ndarray: ...

    def caption_corpus(self, n: int, seed: int = 0) -> list[str]: ...


#: Captions of the world's text corpus (LinCIR trains on them): one per two unlabeled images of the
#: default world; their features are computed once, which on two CPU cores costs seconds.
CORPUS_CAPTIONS = 1_000


#: One-change aspects, in :data:`ATTRIBUTES` order.
ONE_CHANGE_ASPECTS: tuple[str, ...] = ATTRIBUTES
#: Two-change aspects ("colour+shape", ...): every unordered pair, in :data:`ATTRIBUTES` order.
TWO_CHANGE_ASPECTS: tuple[str, ...] = tuple("+".join(p) for p in itertools.combinations(ATTRIBUTES, 2))
ASPECTS: tuple[str, ...] = ONE_CHANGE_ASPECTS + TWO_CHANGE_ASPECTS


def _assign_aspects(n: int, two_change_fraction: float, rng: np.random.Generator) -> list[str]:
    """Balanced aspects: each change type (and each pair) gets an equal share, then shuffled.

    Balancing rather than sampling keeps per-aspect breakdowns meaningful on small splits.
    """
    n_two = int(round(n * two_change_fraction))
    one = [ONE_CHANGE_ASPECTS[i % len(ONE_CHANGE_ASPECTS)] for i in range(n - n_two)]
    two = [TWO_CHANGE_ASPECTS[i % len(TWO_CHANGE_ASPECTS)] for i in range(n_two)]
    aspects = one + two
    return [aspects[i] for i in rng.permutation(len(aspects))]


def build_benchmark(world: WorldView, split: str) -> CIRBenchmark:
    """Build the ``split`` benchmark of ``world`` (deterministic from the world seed).

    Args:
        world: the world; its gallery and reference pools are used as they are.
        split: ``val`` or ``test``.
    """
    gallery = world.gallery_names(split)
    references = world.reference_pool(split)
    by_combo: dict[tuple[int, ...], list[str]] = {}
    for name, row in zip(gallery, world.codes(gallery)):
        by_combo.setdefault(tuple(int(c) for c in row), []).append(name)

    rng = np.random.default_rng([world.config.seed, QUERY_STREAM[split]])
    aspects = _assign_aspects(len(references), world.config.two_change_fraction, rng)
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
        queries.append(
            CIRQuery(
                query_id=str(i),
                reference=reference,
                captions=tuple(captions),
                target=truths[0],
                ground_truths=tuple(truths),
                aspect=aspect,
            )
        )
    return CIRBenchmark(
        name="shapes",
        split=split,
        queries=queries,
        gallery=gallery,
        images=world.images,
        exclude_reference=False,
        extra={"cache_key": world.config.cache_key(), "aspects": list(ASPECTS)},
        unlabeled=UnlabeledImages(world.images, world.pretrain_names(), world.config.cache_key()),
        captioner=world_captions,
        text_corpus=CaptionCorpus(
            f"{world.config.cache_key()}-grammar-{CORPUS_CAPTIONS}",
            functools.partial(world.caption_corpus, CORPUS_CAPTIONS),  # made only when LinCIR trains
            # each reference image's full caption: what the modality gap compares φ's image token with
            {r: caption_for(decode(row)) for r, row in zip(references, world.codes(references))},
        ),
    )


def target_attributes(world: WorldView, query: CIRQuery) -> dict[str, str]:
    """The attributes a query asks for (those of its ground truths).

    Args:
        world: the world the query belongs to.
        query: a ``shapes`` query.
    """
    return decode(world.codes([query.target])[0]) if query.target else {}


def _matches(aspect: str, wanted: str) -> bool:
    if wanted == "one":
        return "+" not in aspect
    if wanted == "two":
        return "+" in aspect
    return aspect == wanted


def filter_aspect(bench: CIRBenchmark, aspect: str) -> CIRBenchmark:
    """A copy of ``bench`` with only the queries of one change type (same gallery).

    Args:
        bench: a ``shapes`` benchmark.
        aspect: one of :data:`ASPECTS`, or ``"one"`` / ``"two"`` for all one- / two-change queries.
    """
    if aspect not in ASPECTS and aspect not in ("one", "two"):
        raise InputError(f"unknown aspect {aspect!r}; expected one of {ASPECTS + ('one', 'two')}")
    queries = [q for q in bench.queries if q.aspect is not None and _matches(q.aspect, aspect)]
    return replace(bench, queries=queries, extra={**bench.extra, "aspect": aspect})


def queries_by_aspect(bench: CIRBenchmark) -> dict[str, list[CIRQuery]]:
    """``{aspect: queries}`` for every aspect present, in :data:`ASPECTS` order."""
    groups: dict[str, list[CIRQuery]] = {a: [] for a in ASPECTS}
    for q in bench.queries:
        groups.setdefault(q.aspect or "", []).append(q)
    return {a: qs for a, qs in groups.items() if qs}
