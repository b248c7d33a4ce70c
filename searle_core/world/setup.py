"""The ``shapes`` world as the pipeline sees it: the world and its CLIP, its vocabulary, and its sizes of the
method's and the baselines' recipes (hundreds of images where the paper has a hundred thousand)."""

from __future__ import annotations

from searle_core.baselines.lincir import LincirConfig
from searle_core.baselines.palavra import PalavraConfig
from searle_core.baselines.pic2word import Pic2WordConfig
from searle_core.clip.backbone import Backbone, load_backbone
from searle_core.inversion.concepts import Vocabulary
from searle_core.methods.context import PhiRecipe
from searle_core.world.grammar import concepts, phrase_bank
from searle_core.world.shapes_world import ShapesWorld, WorldConfig
from searle_core.world.world_clip import WorldCLIPConfig

#: OTI's batch on the world: Adam undoes the batch mean's 1/B, so the batch changes which seeded draws an
#: image gets, not what OTI computes, and on a CPU 128 images invert about 1.7 times faster than 32.
WORLD_OTI_BATCH_SIZE = 128
#: φ's epochs and unlabeled images (280 optimiser steps of 64 images); the `shapes` profile uses the same.
WORLD_PHI_EPOCHS = 70
WORLD_PHI_IMAGES = 256
#: Image presentations of the trained baselines, about φ's (more epochs change their mAP@10 within its noise).
WORLD_BASELINE_PRESENTATIONS = 20_000


def resolved_oti_batch_size(settings) -> int:
    """The OTI batch a run uses: its ``oti_batch_size``, else the world's on ``shapes`` and the paper's 32 elsewhere."""
    return settings.oti_batch_size or (WORLD_OTI_BATCH_SIZE if settings.dataset == "shapes" else 32)


def world_phi_recipe(epochs: int | None = None, images: int | None = None) -> PhiRecipe:
    """φ's recipe on the world: batches of 64 (a few hundred images would be one or two of 256) and a
    regulariser drawing from OTI's top 15 concepts (the paper's top 150 would be every world concept)."""
    epochs, images = WORLD_PHI_EPOCHS if epochs is None else epochs, WORLD_PHI_IMAGES if images is None else images
    return PhiRecipe(epochs, images, batch_size=64, top_concepts=15)


def world_epochs(images: int) -> int:
    """Epochs of a trained baseline over ``images`` unlabeled images (:data:`WORLD_BASELINE_PRESENTATIONS`)."""
    return max(1, round(WORLD_BASELINE_PRESENTATIONS / max(1, images)))


def world_pic2word_config(images: int, **overrides) -> Pic2WordConfig:
    """Pic2Word's recipe for the world's ``images`` unlabeled images."""
    return Pic2WordConfig(**{"epochs": world_epochs(images), **overrides})


def world_palavra_config(images: int, **overrides) -> PalavraConfig:
    """PALAVRA's recipe for the world, with the paper's 32 images a contrastive batch: the world's OTI
    batch of 128 is a speed setting, PALAVRA's batch its negatives."""
    return PalavraConfig(**{"epochs": world_epochs(images), "token_batch_size": 32, **overrides})


def world_lincir_config(**overrides) -> LincirConfig:
    """LinCIR's recipe on the world's grammar captions."""
    return LincirConfig(**{"steps": 100, "batch_size": 32, "lr": 1e-3, "keywords": "closed-class", **overrides})


def world_vocabulary(n_per_concept: int = 16, seed: int = 0) -> Vocabulary:
    """The world's concepts and its grammar-generated phrase bank (the GPT-Neo phrases' analogue)."""
    return Vocabulary(concepts(), phrase_bank(n_per_concept=n_per_concept, seed=seed))


def world_setup(quick: bool = False, device: str = "auto", progress: bool = True) -> tuple[ShapesWorld, Backbone]:
    """The world (default or CI-sized) and its trained CLIP, trained and cached on first use."""
    clip_config = WorldCLIPConfig.quick() if quick else WorldCLIPConfig()
    world = ShapesWorld(WorldConfig.quick() if quick else WorldConfig())
    return world, load_backbone("shapes-clip", device=device, config=clip_config, progress=progress)
