"""Opening a backbone for a dataset: its weights and its image preprocessing, decided in one place.

The CLI (``searle evaluate``, ``searle table``, ``searle submission``, ``searle oti``) and the
notebooks' engine (:func:`searle_core.notebook.study.open_study`) both call :func:`open_backbone`, so the same
settings give the same features and the same numbers whichever way a table is made.

- Weights: an open_clip tag or file, the world CLIP, or ``none`` (random weights drawn under the
  run's seed in a forked RNG: two runs build the same model and leave the global RNG untouched).
- Preprocessing: ``targetpad`` 1.25, then the model's own bicubic resize, centre crop and
  normalisation, for every dataset: the authors' default in every script (concept association, OTI,
  φ training, validation, test submissions). On ``shapes`` it is exact and free: the renders are
  square at the model's input size, so padding, resize and crop are identities.
"""

from __future__ import annotations

import os

import torch

from searle_core.clip.backbone import Backbone, load_backbone
from searle_core.clip.preprocess import PreprocessKind
from searle_core.datasets.features import configure_images

#: ``--pretrained`` values that mean seeded random weights.
RANDOM_WEIGHTS = ("none", "random")
#: The preprocessing of every dataset unless asked otherwise.
DEFAULT_PREPROCESS: PreprocessKind = "targetpad"


def configure_for_dataset(
    backbone: Backbone, dataset: str, preprocess: PreprocessKind | None = None, num_workers: int | None = None
) -> Backbone:
    """The backbone with the image pipeline of ``dataset``.

    Args:
        backbone: the frozen CLIP.
        dataset: ``shapes``, ``cirr``, ``fashioniq``, ``circo``, ``imagenet`` or a folder of images.
        preprocess: ``None`` for :data:`DEFAULT_PREPROCESS`, or ``clip``/``targetpad``.
        num_workers: data-loader workers (default: 0 for ``shapes``, whose images are rendered in
            memory; up to 8 for image files).
    """
    if num_workers is None:
        num_workers = 0 if dataset == "shapes" else min(8, os.cpu_count() or 1)
    return configure_images(backbone, preprocess or DEFAULT_PREPROCESS, num_workers)


def open_backbone(
    name: str, pretrained: str | None = "default", device: str = "auto", seed: int = 0, quick: bool = False
) -> Backbone:
    """Load a frozen CLIP by name and weights (without choosing its preprocessing).

    Args:
        name: open_clip model name (``ViT-B-32``, ``ViT-L-14``) or ``shapes-clip``.
        pretrained: weights tag or file; ``default`` (``openai``, or the world CLIP); ``none`` for
            random weights drawn under ``seed``.
        device: ``auto``, ``cpu``, ``cuda``.
        seed: seeds random weights.
        quick: ``shapes-clip`` with default weights: the CI-sized world CLIP.
    """
    if pretrained is None or str(pretrained).lower() in RANDOM_WEIGHTS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return load_backbone(name, None, device=device)
    kwargs = {"quick": quick} if name == "shapes-clip" and pretrained == "default" else {}
    return load_backbone(name, pretrained, device=device, **kwargs)
