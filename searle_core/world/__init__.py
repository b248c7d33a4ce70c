"""``shapes``: an offline synthetic composed-retrieval world (coloured shapes, captions, a CIR benchmark,
concepts and phrases in the real datasets' structures), on which the whole pipeline runs in minutes.
Importing it (on demand: :mod:`searle_core.infra.providers`) registers its CLIP ``shapes-clip`` and its
benchmark ``load_benchmark("shapes", ...)``."""

from pathlib import Path

import open_clip

from searle_core.clip.backbone import register_default_weights
from searle_core.datasets import register_benchmark
from searle_core.world import world_clip
from searle_core.world.grammar import caption_for, concepts_of, training_vocabulary, unknown_words
from searle_core.world.shapes_world import ShapesWorld, WorldConfig

__all__ = ["ShapesWorld", "WorldConfig", "caption_for", "concepts_of", "training_vocabulary", "unknown_words"]


def _default_weights(cache_dir=None, **kwargs) -> Path:
    # Looked up at call time, so a test that replaces world_clip.world_clip_weights is obeyed.
    return world_clip.world_clip_weights(cache_dir=cache_dir, **kwargs)


def _load_shapes(root, split: str = "val", world: ShapesWorld | None = None, quick: bool = False, **_):
    """A split of the given world, or of the default (``quick``: the CI-sized) world."""
    return (world or ShapesWorld(WorldConfig.quick() if quick else WorldConfig())).benchmark(split)


open_clip.add_model_config(Path(__file__).parent / "model_configs")
register_default_weights(world_clip.WORLD_BACKBONE, _default_weights)
register_benchmark("shapes", _load_shapes, generated=True)
