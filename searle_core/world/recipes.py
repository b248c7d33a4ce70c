"""The offline world's sizes of the method's recipes, named once: its images are hundreds where the
paper's are a hundred thousand, and its vocabulary 135 concepts where the paper's has 20,931."""

from __future__ import annotations

from searle_core.methods.context import PhiRecipe

#: OTI's batch on the world. Each image's update depends only on its own loss (Adam undoes the batch
#: mean's 1/B), so the batch changes which seeded draws an image gets, not what OTI computes; on a CPU
#: 128 images a batch invert about 1.7 times faster than 32 (`searle bench oti-batch`).
WORLD_OTI_BATCH_SIZE = 128
#: φ's regulariser draws from OTI's top 15 concepts: the paper's top 150 would be every world concept.
WORLD_PHI_TOP_CONCEPTS = 15
#: φ's batch: a few hundred images would be one or two batches of 256 an epoch.
WORLD_PHI_BATCH = 64
#: φ's epochs and unlabeled images (280 optimiser steps); the `shapes` profile uses the same.
WORLD_PHI_EPOCHS = 70
WORLD_PHI_IMAGES = 256


def default_oti_batch_size(dataset: str) -> int:
    """OTI's batch when ``oti_batch_size`` is left empty: the world's, else the paper's 32."""
    return WORLD_OTI_BATCH_SIZE if dataset == "shapes" else 32


def resolved_oti_batch_size(settings) -> int:
    """The OTI batch a run uses: its ``oti_batch_size``, else the dataset's default."""
    return settings.oti_batch_size or default_oti_batch_size(settings.dataset)


def world_phi_recipe(epochs: int | None = None, images: int | None = None) -> PhiRecipe:
    """φ's recipe on the world, with its epochs and images unless given."""
    return PhiRecipe(
        WORLD_PHI_EPOCHS if epochs is None else epochs,
        WORLD_PHI_IMAGES if images is None else images,
        batch_size=WORLD_PHI_BATCH,
        top_concepts=WORLD_PHI_TOP_CONCEPTS,
    )
