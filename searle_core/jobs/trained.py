"""Trained networks and token sets saved once and reused by name.

φ, Pic2Word's mapper and PALAVRA's inverter (and the OTI tokens φ distils) are expensive to make
and cheap to load, so each is stored under ``paths.cache_dir("models")`` in a file whose name
hashes everything that determines it: the kind of artifact, the backbone and its exact weights,
the unlabeled images it was trained on and its training config. A missing file is trained on first
use (with a progress bar) and written atomically, so an interrupted run never leaves half a file
and a changed config never silently reuses a stale network.

Files are ``torch.save`` dicts: the network's state dict under its class name (``"Phi"`` gives
the authors' φ layout, so :func:`~searle_core.inversion.load_phi` reads ours too) and ``"meta"``
(config, training time, loss history). A JSON sidecar repeats ``meta`` for humans.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from searle_core.clip.backbone import Backbone, weights_key
from searle_core.datasets.base import UnlabeledImages
from searle_core.datasets.features import image_features, preprocess_name
from searle_core.infra.cache import save_or_warn
from searle_core.infra.errors import load_torch_file
from searle_core.infra.files import atomic_save, atomic_write_text, digest, jsonable
from searle_core.infra.paths import cache_dir
from searle_core.inversion.phi_files import load_phi
from searle_core.method.oti import InvertedBatch, OTIConfig, invert_images
from searle_core.method.phi_training import train_phi
from searle_core.methods.context import PhiRecipe

#: Bumped when a saved format or a training procedure changes, so old files are not reused
#: (2: φ takes raw image features; keys name the preprocessing; OTI/φ precision settings;
#: 3: one OTI loop and one φ recipe for the CLI and the notebooks).
ARTIFACT_VERSION = 3


def models_dir() -> Path:
    """Where artifacts live (tests point this at a temporary folder)."""
    return cache_dir("models")


def artifact_path(kind: str, backbone: Backbone, data_id: str, config: Any) -> Path:
    """The file of an artifact: ``{kind}-{backbone}-{hash}.pt``.

    Args:
        kind: what it is (``phi``, ``pic2word``, ``palavra``, ``oti-tokens``).
        backbone: the frozen CLIP it belongs to (name, exact weights and image preprocessing enter
            the hash: a network trained on targetpad features is not one trained on clip features).
        data_id: names the training images (e.g. a world's cache key and the image list's hash).
        config: everything else that determines the result (a dataclass or JSON-able value).
    """

    key = digest(
        ARTIFACT_VERSION, kind, backbone.name, weights_key(backbone), preprocess_key(backbone), data_id, config
    )
    return models_dir() / f"{kind}-{backbone.name}-{key}.pt"


def preprocess_key(backbone: Backbone) -> str:
    """The name of the backbone's image preprocessing (``targetpad``, ``clip``, ...)."""

    return preprocess_name(backbone)


@dataclass
class Artifact:
    """A loaded (or just trained) artifact.

    Args:
        path: its file.
        content: the saved dict (state dict or tensors, plus ``meta``).
        trained_now: whether this call trained it (else it was loaded from ``path``).
    """

    path: Path
    content: dict
    trained_now: bool

    @property
    def meta(self) -> dict:
        return self.content.get("meta", {})


def load_or_train(path: Path, train: Callable[[], dict], meta: dict | None = None) -> Artifact:
    """Load the artifact at ``path``, or train it, save it atomically and return it.

    Args:
        path: from :func:`artifact_path`.
        train: makes the dict to save (tensors, state dicts and plain values only, so the file
            loads with ``weights_only=True``); may put its own entries under ``"meta"``.
        meta: description merged into ``"meta"`` (config, backbone, data).
    """
    if path.is_file():
        return Artifact(path, load_torch_file(path, "cached model (delete it to train it again)"), trained_now=False)
    start = time.perf_counter()
    content = train()
    content["meta"] = jsonable(
        {
            **(meta or {}),
            **content.get("meta", {}),
            "train_seconds": round(time.perf_counter() - start, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "version": ARTIFACT_VERSION,
        }
    )
    # A model cache that cannot be written (full disk) costs a retraining next time, not this run.
    if save_or_warn(lambda: atomic_save(content, path), path, "model cache"):
        save_or_warn(
            lambda: atomic_write_text(json.dumps(content["meta"], indent=1), path.with_suffix(".json")),
            path.with_suffix(".json"),
            "model cache description",
        )
    return Artifact(path, content, trained_now=True)


def describe(backbone: Backbone, data_id: str, config: Any) -> dict:
    """The ``meta`` every artifact records about where it comes from."""

    return {
        "backbone": backbone.name,
        "weights": weights_key(backbone),
        "preprocess": preprocess_key(backbone),
        "data": data_id,
        "config": jsonable(config),
    }


# ---- φ from unlabeled images: the one recipe ------------------------------------------------------
def vocabulary_id(vocabulary) -> str:
    """Hash of a vocabulary's concepts and phrases (the regulariser's inputs)."""
    return digest(vocabulary.concepts, sorted(vocabulary.phrase_bank.items()))


def unlabeled_oti_tokens(
    backbone: Backbone,
    unlabeled: UnlabeledImages,
    oti_config: OTIConfig,
    vocabulary,
    seed: int = 42,
    batch_size: int = 32,
    progress: bool = True,
) -> Artifact:
    """OTI tokens of unlabeled images (φ's distillation targets), cached; an interrupted run resumes.

    Args:
        backbone: the frozen CLIP.
        unlabeled: the images.
        oti_config: OTI settings (the same OTI as ``searle-oti``, through ``invert_images``).
        vocabulary: concepts and phrases for OTI's regulariser (``None``: none).
        seed: OTI seed.
        batch_size: images per OTI batch.
        progress: progress bar over images.

    Returns:
        An :class:`Artifact` whose content has ``names`` and ``tokens`` (N, token_dim).
    """
    regularise = oti_config.lambda_gpt > 0 and vocabulary is not None
    config = {
        "oti": oti_config,
        "seed": seed,
        "batch_size": batch_size,
        "vocabulary": vocabulary_id(vocabulary) if regularise else None,
    }
    path = artifact_path("oti-unlabeled", backbone, unlabeled.data_id, config)
    # Batches done so far are saved as they finish: an interrupted run resumes where it stopped
    # (batches are seeded by their image names, so the result is the same as an uninterrupted run).
    partial = path.with_name(f"{path.stem}.partial.pt")

    def train() -> dict:
        names = unlabeled.names
        feats = image_features(backbone, unlabeled.source, names, progress=progress)
        concepts = vocabulary.associate(backbone, feats, oti_config.top_concepts) if regularise else None
        done = load_torch_file(partial, "partial OTI run (delete it to start over)") if partial.is_file() else {}

        def checkpoint(batch: InvertedBatch) -> None:
            done.update(zip(batch.names, batch.tokens))
            save_or_warn(lambda: atomic_save(dict(done), partial), partial, "partial OTI checkpoint")

        tokens = invert_images(
            backbone,
            feats,
            names,
            concepts,
            vocabulary.phrase_bank if regularise else None,
            oti_config,
            batch_size,
            seed,
            progress,
            done=dict(done),
            on_batch=checkpoint,
        )
        return {"names": names, "tokens": torch.stack([tokens[n] for n in names])}

    artifact = load_or_train(path, train, describe(backbone, unlabeled.data_id, config))
    partial.unlink(missing_ok=True)
    return artifact


@dataclass
class TrainedPhi:
    """φ and how it came to be.

    Args:
        phi: the network (eval mode, on the backbone's device).
        history: one row per epoch (losses, seconds, validation metrics when validated).
        train_seconds: φ's training time when it ran.
        oti_seconds: the OTI of its unlabeled images (its targets) when it ran.
        trained_now: whether this call trained φ.
        n_images: unlabeled images it was trained on.
        artifact: its cached file.
    """

    phi: torch.nn.Module
    history: list[dict]
    train_seconds: float
    oti_seconds: float
    trained_now: bool
    n_images: int
    artifact: Artifact | None = None


def unlabeled_phi(
    backbone: Backbone,
    unlabeled: UnlabeledImages,
    recipe: PhiRecipe,
    oti_config: OTIConfig,
    vocabulary,
    seed: int = 42,
    oti_batch_size: int = 32,
    progress: bool = True,
    loss_overrides: dict | None = None,
    rows: list[int] | None = None,
    validate: Callable | None = None,
    validated_on: str | None = None,
) -> TrainedPhi:
    """φ distilled from the OTI tokens of unlabeled images (SEARLE, Sec. 4.2), cached: the one φ recipe.

    Args:
        backbone: the frozen CLIP.
        unlabeled: the images (``recipe.images`` > 0 keeps the first that many).
        recipe: epochs and sizes.
        oti_config: OTI of the targets (the same as ``searle-oti``'s, so the caches are shared).
        vocabulary: concepts and phrases (OTI's and φ's regularisers).
        seed: OTI seed (φ's own seed is its training config's).
        oti_batch_size: images per OTI batch.
        progress: progress bars (OTI over images, then φ's epochs).
        loss_overrides: ``PhiLossConfig`` changes (ablations).
        rows: train on these rows of the images only (the data ablation's nested subsets).
        validate: called with φ after every epoch; its metrics join the history (not part of the cache
            key: it does not change training).
        validated_on: names what ``validate`` scores; a cached φ validated on something else (or not at
            all) is trained again (the same φ) so that its curve is this one's.
    """
    if recipe.images:
        unlabeled = UnlabeledImages(unlabeled.source, list(unlabeled.names)[: recipe.images], unlabeled.source_id)
    targets = unlabeled_oti_tokens(backbone, unlabeled, oti_config, vocabulary, seed, oti_batch_size, progress)
    names = list(targets.content["names"])
    rows = list(range(len(names))) if rows is None else rows
    config = recipe.train_config(loss_overrides)
    data_id = "phi-" + digest([names[i] for i in rows], targets.path.stem)
    key = {
        "phi": config,
        "vocabulary": vocabulary_id(vocabulary) if vocabulary is not None else None,
        "oti": oti_config,
    }

    def train() -> dict:
        feats = image_features(
            backbone, unlabeled.source, [names[i] for i in rows], progress=progress, normalize=False
        )  # φ's input: raw encode_image features
        concepts = vocabulary.associate(backbone, feats, config.loss.top_concepts) if vocabulary is not None else None
        result = train_phi(
            backbone,
            feats,
            targets.content["tokens"][rows],
            concepts,
            vocabulary.phrase_bank if vocabulary is not None else None,
            config,
            validate=validate,
            progress=progress,
        )
        return {
            "Phi": result.phi.cpu().state_dict(),
            "epoch": config.epochs,
            "meta": {"history": result.history, "validated_on": validated_on if validate else None},
        }

    path = artifact_path("phi", backbone, data_id, key)
    artifact = load_or_train(path, train, describe(backbone, data_id, key))
    if validate is not None and artifact.meta.get("validated_on") != validated_on:
        path.unlink()
        artifact = load_or_train(path, train, describe(backbone, data_id, key))
    phi = load_phi(artifact.path, backbone).to(backbone.device).eval()
    return TrainedPhi(
        phi,
        artifact.meta.get("history", []),
        float(artifact.meta.get("train_seconds") or 0.0),
        float(targets.meta.get("train_seconds") or 0.0),
        artifact.trained_now,
        len(rows),
        artifact,
    )
