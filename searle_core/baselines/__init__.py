"""The paper's baselines beside SEARLE, in the same harness: same features, prompts, rankings, metrics.

Importing this package registers ``captioning``, ``pic2word`` and ``palavra`` in
:data:`searle_core.retrieval.methods.EXTRA_METHODS`. :func:`prepare` fills what a method needs before it
runs; today: φ for ``searle`` on the ``shapes`` world (trained on first use, then cached).

- :mod:`.captioning`: ``$`` replaced by a caption of the reference image.
- :mod:`.pic2word`: a mapping network trained contrastively against ``a photo of $``.
- :mod:`.palavra`: pre-trained inverter, then per-image contrastive optimisation.
- :mod:`.training`: the unlabeled images they train on, the loop, time bookkeeping.
"""

from __future__ import annotations

from searle_core.baselines.captioning import CAPTION_PROMPT, DEFAULT_CAPTIONER, HFCaptioner, WorldCaptioner, captioning_query_features
from searle_core.baselines.palavra import PalavraConfig, palavra_contrastive_loss, palavra_query_features
from searle_core.baselines.pic2word import Pic2WordConfig, Pic2WordMapper, load_mapper, pic2word_loss, pic2word_query_features

__all__ = [
    "CAPTION_PROMPT", "DEFAULT_CAPTIONER", "HFCaptioner", "PalavraConfig", "Pic2WordConfig", "Pic2WordMapper",
    "WorldCaptioner", "captioning_query_features", "load_mapper", "palavra_contrastive_loss", "palavra_query_features",
    "pic2word_loss", "pic2word_query_features",
]
