"""``shapes``: an offline synthetic composed-retrieval world on which the whole pipeline runs in minutes.
Importing it (on demand: :mod:`searle_core.infra.providers`) registers its CLIP ``shapes-clip`` and its
benchmark ``load_benchmark("shapes", ...)``."""

from pathlib import Path

import open_clip

from searle_core.clip.backbone import register_default_weights
from searle_core.datasets import register_benchmark
from searle_core.world import world_clip
from searle_core.world.grammar import caption_for, concepts_of, training_vocabulary, unknown_words  # noqa: F401
from searle_core.world.shapes_world import ShapesWorld, WorldConfig


def _load_shapes(root, split: str = "val", world: ShapesWorld | None = None, quick: bool = False, **_):
    """A split of the given world, or of the default (``quick``: the CI-sized) world."""
    return (world or ShapesWorld(WorldConfig.quick() if quick else WorldConfig())).benchmark(split)


open_clip.add_model_config(Path(__file__).parent / "model_configs")
# Looked up at call time, so a test that replaces world_clip.world_clip_weights is obeyed.
register_default_weights(world_clip.WORLD_BACKBONE, lambda *args, **kw: world_clip.world_clip_weights(*args, **kw))
register_benchmark("shapes", _load_shapes, generated=True)
