"""The offline world's sizes of the method's and the baselines' recipes, named once: its images are
hundreds where the paper's are a hundred thousand, and its vocabulary 135 concepts where the paper's
has 20,931."""

from __future__ import annotations

from searle_core.baselines.lincir import LincirConfig
from searle_core.baselines.palavra import PalavraConfig
from searle_core.baselines.pic2word import Pic2WordConfig
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
#: Image presentations of the trained baselines (Pic2Word's mapper, PALAVRA's inverter), about φ's
#: (70 epochs over 256 images): 10 epochs over the default world's 2,000 unlabeled images, 40 over the
#: quick world's 500. On the default world 10, 20 and 40 epochs gave Pic2Word 74.7, 75.1 and 75.6 and
#: PALAVRA 58.3, 58.7 and 59.5 mAP@10 on the val split, within its noise, at 1x, 2x and 4x the time.
WORLD_BASELINE_PRESENTATIONS = 20_000


def default_oti_batch_size(dataset: str) -> int:
    """OTI's batch when ``oti_batch_size`` is left empty: the world's, else the paper's 32."""
    return WORLD_OTI_BATCH_SIZE if dataset == "shapes" else 32


def resolved_oti_batch_size(settings) -> int:
    """The OTI batch a run uses: its ``oti_batch_size``, else the dataset's default."""
    return settings.oti_batch_size or default_oti_batch_size(settings.dataset)


def world_phi_recipe(epochs: int | None = None, images: int | None = None) -> PhiRecipe:
    """φ's recipe on the world, with its epochs and images unless given."""
    epochs, images = WORLD_PHI_EPOCHS if epochs is None else epochs, WORLD_PHI_IMAGES if images is None else images
    return PhiRecipe(epochs, images, batch_size=WORLD_PHI_BATCH, top_concepts=WORLD_PHI_TOP_CONCEPTS)


def world_epochs(images: int) -> int:
    """Epochs of a trained baseline over ``images`` unlabeled images (:data:`WORLD_BASELINE_PRESENTATIONS`)."""
    return max(1, round(WORLD_BASELINE_PRESENTATIONS / max(1, images)))


def world_pic2word_config(images: int, **overrides) -> Pic2WordConfig:
    """Pic2Word's recipe for the world's ``images`` unlabeled images (the authors' 100 epochs elsewhere)."""
    return Pic2WordConfig(**{"epochs": world_epochs(images), **overrides})


def world_palavra_config(images: int, **overrides) -> PalavraConfig:
    """PALAVRA's recipe for the world's ``images`` unlabeled images, with the paper's 32 images a
    contrastive batch: the world's OTI batch of 128 is a speed setting, PALAVRA's batch its negatives."""
    return PalavraConfig(**{"epochs": world_epochs(images), "token_batch_size": 32, **overrides})


def world_lincir_config(**overrides) -> LincirConfig:
    """LinCIR's recipe on the world's grammar captions: short enough for ``make run`` on two CPU cores."""
    return LincirConfig(**{"steps": 100, "batch_size": 32, "lr": 1e-3, **overrides})
