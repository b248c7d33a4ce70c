"""Textual inversion: image -> pseudo-word token ``$``.

- :mod:`.oti`: OTI, per-image optimisation (SEARLE-OTI).
- :mod:`.phi`: φ, the network distilled from OTI tokens (SEARLE).
- :mod:`.regularizer`: the phrase regulariser both share.
- :mod:`.losses`: the loss formulas.
The backbone is frozen: inversion only ever optimises tokens (OTI) or φ's weights.
"""

from searle_core.inversion.losses import cosine_loss, nt_xent_loss, symmetric_infonce_loss
from searle_core.inversion.oti import OTIConfig, OTIResult, oti
from searle_core.inversion.phi import Phi, PhiLossConfig, load_phi, make_sampler, phi_loss, save_phi
from searle_core.inversion.regulariser import PhraseFeatureCache, PhraseSampler, TokenCache, replace_concept

__all__ = [
    "OTIConfig",
    "OTIResult",
    "oti",
    "Phi",
    "PhiLossConfig",
    "phi_loss",
    "load_phi",
    "save_phi",
    "make_sampler",
    "PhraseFeatureCache",
    "PhraseSampler",
    "TokenCache",
    "replace_concept",
    "cosine_loss",
    "nt_xent_loss",
    "symmetric_infonce_loss",
]
