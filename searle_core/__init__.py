"""SEARLE: zero-shot composed image retrieval by textual inversion, as a readable pipeline.

The package stands in layers, each importing only those below it (``tests/test_layout.py`` holds the
list): ``infra`` → ``clip`` (loading, preprocessing, pseudo-token encoding) → ``datasets`` (and their
image features) → ``metrics`` → ``inversion`` (OTI, φ, concepts, phrases) → ``retrieval`` (prompts,
ranking) → ``baselines`` → ``methods`` (every method, one run end to end) → ``world`` (the offline
``shapes`` world and its CLIP) → ``jobs`` → ``report`` → ``plotting`` → ``notebook`` → ``cli``.
This module, the public API, stands on top: importing it registers the offline world.
"""

from searle_core import world  # noqa: F401  (registers shapes-clip and the shapes benchmark)
from searle_core.clip.backbone import Backbone, load_backbone
from searle_core.clip.templates import TEMPLATES
from searle_core.clip.text_encoding import encode_text, encode_with_pseudo_tokens
from searle_core.infra.version import __version__
from searle_core.inversion import OTIConfig, OTIResult, Phi, PhiLossConfig, load_phi, oti, phi_loss, save_phi
from searle_core.inversion.concepts import Vocabulary, associate_concepts, embed_concepts
from searle_core.jobs.prepare import evaluate
from searle_core.methods import MethodContext, MethodResult
from searle_core.metrics import (
    circo_metrics,
    cirr_metrics,
    fashioniq_metrics,
    map_at_k,
    rank_by_scores,
    recall_at_k,
    recall_subset_at_k,
)

__all__ = [
    "Backbone",
    "load_backbone",
    "encode_text",
    "encode_with_pseudo_tokens",
    "TEMPLATES",
    "OTIConfig",
    "OTIResult",
    "oti",
    "Phi",
    "PhiLossConfig",
    "phi_loss",
    "load_phi",
    "save_phi",
    "embed_concepts",
    "associate_concepts",
    "MethodContext",
    "Vocabulary",
    "MethodResult",
    "evaluate",
    "recall_at_k",
    "recall_subset_at_k",
    "map_at_k",
    "circo_metrics",
    "cirr_metrics",
    "fashioniq_metrics",
    "rank_by_scores",
    "__version__",
]
