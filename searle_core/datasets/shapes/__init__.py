"""``shapes``: an offline synthetic composed-retrieval world (CPU-only default for SEARLE).

Coloured shapes on plain backgrounds, with captions, a CIR benchmark, concepts and a phrase bank in
the same structures as the real datasets, so the whole SEARLE pipeline runs on it in minutes.
"""

from searle_core.datasets.shapes.benchmark import (
    ASPECTS,
    ONE_CHANGE_ASPECTS,
    TWO_CHANGE_ASPECTS,
    build_benchmark,
    filter_aspect,
    queries_by_aspect,
    target_attributes,
)
from searle_core.datasets.shapes.grammar import (
    CONCEPT_ATTRIBUTES,
    caption_for,
    concept_phrase,
    concepts,
    concepts_of,
    describe,
    phrase_bank,
    relative_caption,
    training_vocabulary,
)
from searle_core.datasets.shapes.attributes import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    SIZES,
    SPLITS,
    VALUES,
    WORLD_VERSION,
    all_combos,
)
from searle_core.datasets.shapes.world import (
    ShapesImages,
    ShapesWorld,
    WorldConfig,
)

__all__ = [
    "ASPECTS",
    "ATTRIBUTES",
    "BACKGROUNDS",
    "COLOURS",
    "CONCEPT_ATTRIBUTES",
    "ONE_CHANGE_ASPECTS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "TWO_CHANGE_ASPECTS",
    "VALUES",
    "WORLD_VERSION",
    "ShapesImages",
    "ShapesWorld",
    "WorldConfig",
    "all_combos",
    "build_benchmark",
    "caption_for",
    "concept_phrase",
    "concepts",
    "concepts_of",
    "describe",
    "filter_aspect",
    "phrase_bank",
    "queries_by_aspect",
    "relative_caption",
    "target_attributes",
    "training_vocabulary",
]
