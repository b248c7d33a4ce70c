"""``shapes``: an offline synthetic composed-retrieval world (CPU-only default for SEARLE).

Coloured shapes on plain backgrounds, with captions, a CIR benchmark, concepts and a phrase bank in
the same structures as the real datasets, so the whole SEARLE pipeline runs on it in minutes.

The world stands above the core: importing it registers its CLIP (``shapes-clip``: the model
config with open_clip, its default weights with :func:`~searle_core.clip.backbone.register_default_weights`,
trained on first use by :mod:`.world_clip`) and its benchmark (``load_benchmark("shapes", ...)``).
"""

from pathlib import Path

import open_clip

from searle_core.clip.backbone import register_default_weights
from searle_core.datasets import register_benchmark
from searle_core.world import world_clip
from searle_core.world.attributes import (
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
from searle_core.world.benchmark import (
    ASPECTS,
    ONE_CHANGE_ASPECTS,
    TWO_CHANGE_ASPECTS,
    build_benchmark,
    filter_aspect,
    queries_by_aspect,
    target_attributes,
)
from searle_core.world.grammar import (
    CONCEPT_ATTRIBUTES,
    caption_for,
    concept_phrase,
    concepts,
    concepts_of,
    describe,
    phrase_bank,
    relative_caption,
    training_vocabulary,
    unknown_words,
)
from searle_core.world.shapes_world import (
    ShapesImages,
    ShapesWorld,
    WorldConfig,
)
from searle_core.world.world_clip import WORLD_BACKBONE


def _default_weights(cache_dir=None, **kwargs) -> Path:
    # Looked up at call time, so a test that replaces world_clip.world_clip_weights is obeyed.
    return world_clip.world_clip_weights(cache_dir=cache_dir, **kwargs)


def _load_shapes(root, split: str = "val", world: ShapesWorld | None = None, quick: bool = False, **_):
    """``load_benchmark("shapes", None, split, world=..., quick=...)``: a split of the given world, or
    of the default (``quick``: the CI-sized) world."""
    return (world or ShapesWorld(WorldConfig.quick() if quick else WorldConfig())).benchmark(split)


open_clip.add_model_config(Path(__file__).parent / "model_configs")
register_default_weights(WORLD_BACKBONE, _default_weights)
register_benchmark("shapes", _load_shapes, generated=True)

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
    "unknown_words",
]
