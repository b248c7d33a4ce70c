"""SEARLE: zero-shot composed image retrieval by textual inversion, as a readable pipeline.

backbone (open_clip loading, ``$``) → text_encoding (pseudo-token text features) → inversion (OTI, φ)
→ retrieval (features, queries, rankings) → metrics; datasets (CIRR, FashionIQ, CIRCO and the
synthetic ``shapes`` world) beside it; ``cli`` and the notebooks on top.
"""

from searle_core.backbone import Backbone, load_backbone
from searle_core.concepts import associate_concepts, embed_concepts
from searle_core.inversion import OTIConfig, OTIResult, Phi, PhiLossConfig, load_phi, oti, phi_loss, save_phi
from searle_core.metrics import (circo_metrics, cirr_metrics, fashioniq_metrics, map_at_k, rank_by_scores, recall_at_k,
                      recall_subset_at_k)
from searle_core.retrieval.methods import MethodContext
from searle_core.concepts import Vocabulary
from searle_core.retrieval.evaluate import Evaluation
from searle_core.jobs.evaluation import evaluate
from searle_core.templates import TEMPLATES
from searle_core.text_encoding import encode_text, encode_with_pseudo_tokens

from searle_core.version import __version__  # noqa: E402  (recorded in manifests)

__all__ = [
    "Backbone", "load_backbone", "encode_text", "encode_with_pseudo_tokens", "TEMPLATES",
    "OTIConfig", "OTIResult", "oti", "Phi", "PhiLossConfig", "phi_loss", "load_phi", "save_phi",
    "embed_concepts", "associate_concepts", "MethodContext", "Vocabulary", "Evaluation", "evaluate",
    "recall_at_k", "recall_subset_at_k", "map_at_k", "circo_metrics", "cirr_metrics", "fashioniq_metrics",
    "rank_by_scores",
]
