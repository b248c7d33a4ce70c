"""The ``shapes`` world as the pipeline sees it: the benchmark, its vocabulary and its CLIP together."""

from __future__ import annotations

from searle_core.clip.backbone import Backbone, load_backbone
from searle_core.inversion.concepts import Vocabulary
from searle_core.world.grammar import concepts, phrase_bank
from searle_core.world.shapes_world import ShapesWorld, WorldConfig
from searle_core.world.world_clip import WorldCLIPConfig


def world_vocabulary(n_per_concept: int = 16, seed: int = 0) -> Vocabulary:
    """The world's concepts and its grammar-generated phrase bank (the GPT-Neo phrases' analogue)."""
    return Vocabulary(concepts(), phrase_bank(n_per_concept=n_per_concept, seed=seed))


def world_setup(quick: bool = False, device: str = "auto", progress: bool = True) -> tuple[ShapesWorld, Backbone]:
    """The world (default or CI-sized) and its trained CLIP, trained and cached on first use."""
    clip_config = WorldCLIPConfig.quick() if quick else WorldCLIPConfig()
    world = ShapesWorld(WorldConfig.quick() if quick else WorldConfig())
    return world, load_backbone("shapes-clip", device=device, config=clip_config, progress=progress)
