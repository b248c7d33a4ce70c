"""SEARLE: zero-shot composed image retrieval by textual inversion, as a readable pipeline.

backbone (open_clip loading, ``$``) → text_encoding (pseudo-token text features) → inversion (OTI, φ)
→ retrieval (features, queries, rankings) → metrics; datasets (CIRR, FashionIQ, CIRCO and the
synthetic ``shapes`` world) beside it; ``cli`` and the notebooks on top.
"""

from .backbone import Backbone, load_backbone
from .concepts import associate_concepts, embed_concepts
from .inversion import OTIConfig, OTIResult, Phi, PhiLossConfig, load_phi, oti, phi_loss, save_phi
from .metrics import (circo_metrics, cirr_metrics, fashioniq_metrics, map_at_k, rank_by_scores, recall_at_k,
                      recall_subset_at_k)
from .methods import MethodContext, Vocabulary
from .pipeline import Evaluation, evaluate
from .templates import TEMPLATES
from .text_encoding import encode_text, encode_with_pseudo_tokens

__version__ = "0.1.0"

__all__ = [
    "Backbone", "load_backbone", "encode_text", "encode_with_pseudo_tokens", "TEMPLATES",
    "OTIConfig", "OTIResult", "oti", "Phi", "PhiLossConfig", "phi_loss", "load_phi", "save_phi",
    "embed_concepts", "associate_concepts", "MethodContext", "Vocabulary", "Evaluation", "evaluate",
    "recall_at_k", "recall_subset_at_k", "map_at_k", "circo_metrics", "cirr_metrics", "fashioniq_metrics",
    "rank_by_scores",
]
