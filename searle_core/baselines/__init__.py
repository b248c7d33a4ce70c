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

import time

from searle_core.retrieval.methods import EXTRA_METHODS
from searle_core.baselines.captioning import CAPTION_PROMPT, DEFAULT_CAPTIONER, HFCaptioner, WorldCaptioner, captioning_query_features
from searle_core.baselines.palavra import PalavraConfig, palavra_contrastive_loss, palavra_query_features
from searle_core.baselines.pic2word import Pic2WordConfig, Pic2WordMapper, load_mapper, pic2word_loss, pic2word_query_features
from searle_core.baselines.training import record_training, world_of

EXTRA_METHODS.update({
    "captioning": captioning_query_features,
    "palavra": palavra_query_features,
    "pic2word": pic2word_query_features,
})


def prepare(method: str, backbone, bench, ctx) -> None:
    """Fill ``ctx`` with what ``method`` needs and the caller did not give.

    ``searle`` on ``shapes`` without φ: the world's φ (:func:`searle_core.jobs.trained.world_phi`),
    trained on first use from OTI tokens of the world's unlabeled images with ``ctx``'s OTI
    settings, vocabulary and seed (``ctx.extras["phi_config"]`` overrides φ's training config).
    """
    if method != "searle" or ctx.phi is not None:
        return
    world = world_of(bench)
    if world is None:
        return  # real datasets: methods.py says how to get φ
    from searle_core.jobs.trained import world_phi_artifact
    from searle_core.inversion import load_phi

    start = time.perf_counter()
    artifact = world_phi_artifact(backbone, world, config=ctx.extras.get("phi_config"), oti_config=ctx.oti_config,
                                  vocabulary=ctx.vocabulary, seed=ctx.seed, oti_batch_size=ctx.oti_batch_size,
                                  progress=ctx.progress)
    # φ's cost includes the OTI of its unlabeled images (its distillation targets).
    meta = artifact.meta
    record_training(ctx.extras, "searle", artifact, time.perf_counter() - start,
                    (meta.get("train_seconds") or 0.0) + (meta.get("oti_train_seconds") or 0.0))
    ctx.phi = load_phi(artifact.path, backbone)


__all__ = [
    "CAPTION_PROMPT", "DEFAULT_CAPTIONER", "HFCaptioner", "PalavraConfig", "Pic2WordConfig", "Pic2WordMapper",
    "WorldCaptioner", "captioning_query_features", "load_mapper", "palavra_contrastive_loss", "palavra_query_features",
    "pic2word_loss", "pic2word_query_features", "prepare",
]
