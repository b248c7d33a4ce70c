"""SEARLE's method and only the method: a frozen CLIP, a pseudo-word token ``$`` per image.

- :mod:`.templates`: the prompt templates of OTI's cosine loss.
- :mod:`.encoding`: text features of prompts whose ``$`` row holds a token; :mod:`.prefix_cache`, a
  speed-up of the same that the configs' ``prefix_cache`` switches off.
- :mod:`.losses` and :mod:`.regulariser`: the cosine and NT-Xent losses, the phrase regulariser.
- :mod:`.oti`: OTI, per-image optimisation (SEARLE-OTI), and its loop over many images.
- :mod:`.phi` and :mod:`.phi_training`: φ, its loss and its training (SEARLE).

``searle_core.method.oti`` is the module; its function is ``searle_core.method.oti.oti``.
"""

from searle_core.method.encoding import encode_text, encode_with_pseudo_tokens
from searle_core.method.losses import cosine_loss, nt_xent_loss
from searle_core.method.oti import OTIConfig, OTIResult, invert_images
from searle_core.method.phi import Phi, PhiLossConfig, phi_loss, phi_sampler
from searle_core.method.phi_training import PhiTrainConfig, PhiTrainingResult, train_phi
from searle_core.method.regulariser import PhraseFeatureCache, PhraseSampler, TokenCache, replace_concept
from searle_core.method.templates import TEMPLATES

__all__ = [
    "TEMPLATES",
    "OTIConfig",
    "OTIResult",
    "Phi",
    "PhiLossConfig",
    "PhiTrainConfig",
    "PhiTrainingResult",
    "PhraseFeatureCache",
    "PhraseSampler",
    "TokenCache",
    "cosine_loss",
    "encode_text",
    "encode_with_pseudo_tokens",
    "invert_images",
    "nt_xent_loss",
    "phi_loss",
    "phi_sampler",
    "replace_concept",
    "train_phi",
]
