"""The paper's baselines beside SEARLE, in the same harness: same features, prompts, rankings, metrics.

Each module holds a baseline's network, loss and query features; :mod:`searle_core.methods.registry`
calls them with what they take from the method context, and :func:`searle_core.jobs.prepare.prepare`
trains or loads their networks.

- :mod:`.captioning`: ``$`` replaced by a caption of the reference image.
- :mod:`.pic2word`: a mapping network trained contrastively against ``a photo of $``.
- :mod:`.palavra`: pre-trained inverter, then per-image contrastive optimisation.
- :mod:`.training`: the unlabeled images they train on and the training loop.
"""

from __future__ import annotations

from searle_core.baselines.captioning import (
    CAPTION_PROMPT,
    DEFAULT_CAPTIONER,
    HFCaptioner,
    captioning_query_features,
    reference_captions,
)
from searle_core.baselines.palavra import (
    PalavraConfig,
    palavra_contrastive_loss,
    palavra_query_features,
    palavra_reference_tokens,
)
from searle_core.baselines.pic2word import (
    Pic2WordConfig,
    Pic2WordMapper,
    load_mapper,
    pic2word_loss,
    pic2word_query_features,
    pic2word_reference_tokens,
)

__all__ = [
    "CAPTION_PROMPT",
    "DEFAULT_CAPTIONER",
    "HFCaptioner",
    "PalavraConfig",
    "Pic2WordConfig",
    "Pic2WordMapper",
    "captioning_query_features",
    "load_mapper",
    "palavra_contrastive_loss",
    "palavra_query_features",
    "palavra_reference_tokens",
    "pic2word_loss",
    "pic2word_query_features",
    "pic2word_reference_tokens",
    "reference_captions",
]
