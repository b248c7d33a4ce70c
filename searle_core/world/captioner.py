"""The offline world's captioner: the best grammar caption of each image under a CLIP.

The captioning baseline uses it on ``shapes`` (the world's benchmarks carry it as
``CIRBenchmark.captioner``): the canonical grammar caption (e.g. "a small red circle on a black
background") of the attribute combination whose caption scores highest against the reference image,
over all 216 combinations. It is the perfect captioner *as far as the CLIP can tell*, so the baseline
measures what a caption can carry, not a captioner's errors beyond CLIP's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from searle_core.clip.backbone import Backbone
from searle_core.datasets.features import text_features
from searle_core.world.attributes import all_combos, decode
from searle_core.world.grammar import caption_for


class WorldCaptioner:
    """Best grammar caption of each image under a CLIP, over every attribute combination.

    Args:
        backbone: the CLIP that scores captions against images.
    """

    def __init__(self, backbone: Backbone):

        self.captions = [caption_for(decode(c)) for c in all_combos()]
        self.features = text_features(backbone, self.captions)

    def __call__(self, image_features: torch.Tensor) -> list[str]:
        scores = F.normalize(image_features.float(), dim=-1) @ self.features.T
        return [self.captions[i] for i in scores.argmax(dim=1).tolist()]


def world_captions(backbone: Backbone, image_features: torch.Tensor) -> list[str]:
    """The best grammar caption of each image (``CIRBenchmark.captioner`` of the world's benchmarks)."""
    return WorldCaptioner(backbone)(image_features)
