"""SEARLE: zero-shot composed image retrieval by textual inversion, as a readable pipeline.

:mod:`searle_core.method` holds the method; the harness around it stands in layers that import only
downward (``tests/test_layout.py`` states the order). Importing this package runs nothing: the names
below are looked up on first use, and the offline ``shapes`` world is opened when a backbone or
benchmark of it is first asked for (:mod:`searle_core.infra.providers`).
"""

import importlib

from searle_core.infra.version import __version__

_EXPORTS = {
    "Backbone": "searle_core.clip.backbone",
    "load_backbone": "searle_core.clip.backbone",
    "TEMPLATES": "searle_core.method.templates",
    "encode_text": "searle_core.method.encoding",
    "encode_with_pseudo_tokens": "searle_core.method.encoding",
    "OTIConfig": "searle_core.method.oti",
    "OTIResult": "searle_core.method.oti",
    "oti": "searle_core.method.oti",
    "invert_images": "searle_core.method.oti",
    "Phi": "searle_core.method.phi",
    "PhiLossConfig": "searle_core.method.phi",
    "phi_loss": "searle_core.method.phi",
    "PhiTrainConfig": "searle_core.method.phi_training",
    "train_phi": "searle_core.method.phi_training",
    "load_phi": "searle_core.inversion.phi_files",
    "save_phi": "searle_core.inversion.phi_files",
    "Vocabulary": "searle_core.inversion.concepts",
    "embed_concepts": "searle_core.inversion.concepts",
    "associate_concepts": "searle_core.inversion.concepts",
    "MethodContext": "searle_core.methods.context",
    "MethodResult": "searle_core.methods.pipeline",
    "evaluate": "searle_core.jobs.evaluation",
    **dict.fromkeys(
        (
            "recall_at_k",
            "recall_subset_at_k",
            "map_at_k",
            "circo_metrics",
            "cirr_metrics",
            "fashioniq_metrics",
            "rank_by_scores",
        ),
        "searle_core.metrics.benchmarks",
    ),
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'searle_core' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
