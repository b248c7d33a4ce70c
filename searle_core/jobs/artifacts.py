"""The artifact cache: trained networks and OTI targets, trained on first use and reused by name. Each is a
``torch.save`` dict under ``cache_dir("models")`` named by a hash of all that determines it (kind, backbone, weights,
preprocessing, data, config), so a changed config never reuses a stale network: the state dict under its class
name (``"Phi"``: the authors' layout) and ``"meta"`` (also in a JSON sidecar)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from searle_core.clip.backbone import Backbone, weights_key
from searle_core.datasets.base import UnlabeledImages
from searle_core.datasets.features import image_features, preprocess_name
from searle_core.infra.device import training_precision
from searle_core.infra.files import atomic_save, atomic_write_text, digest, jsonable, load_torch_file, save_or_warn
from searle_core.infra.paths import cache_dir
from searle_core.inversion.phi_files import load_phi
from searle_core.method.oti import InvertedBatch, OTIConfig, invert_images
from searle_core.method.phi_training import train_phi
from searle_core.methods.context import PhiRecipe

#: Bumped when a saved format or a training procedure changes, so old files are not reused.
ARTIFACT_VERSION = 3


def models_dir() -> Path:
    return cache_dir("models")


def artifact_path(kind: str, backbone: Backbone, data_id: str, config: Any) -> Path:
    """``{kind}-{backbone}-{hash}.pt``: ``data_id`` names the training data, ``config`` all else, and what the
    precision ``auto`` means here (bf16 on some CPUs), so a network trained under another meaning is not reused."""
    auto = training_precision(backbone.device, "auto", backbone.token_dim)
    key = digest(
        ARTIFACT_VERSION, kind, backbone.name, weights_key(backbone), preprocess_name(backbone), data_id, config, auto
    )
    return models_dir() / f"{kind}-{backbone.name}-{key}.pt"


@dataclass
class Artifact:
    path: Path
    content: dict
    trained_now: bool

    @property
    def meta(self) -> dict:
        return self.content.get("meta", {})


def load_or_train(kind: str, backbone: Backbone, data_id: str, config: Any, train: Callable[[], dict]) -> Artifact:
    """The artifact of ``kind`` trained on ``data_id`` with ``config``, or ``train()``'s dict (tensors and
    plain values: it loads with ``weights_only=True``) saved atomically with where it comes from."""
    path = artifact_path(kind, backbone, data_id, config)
    if path.is_file():
        return Artifact(path, load_torch_file(path, "cached model (delete it to train it again)"), trained_now=False)
    start = time.perf_counter()
    content = train()
    seconds, created = round(time.perf_counter() - start, 2), time.strftime("%Y-%m-%dT%H:%M:%S")
    where = {"backbone": backbone.name, "weights": weights_key(backbone), "preprocess": preprocess_name(backbone)}
    meta = {**where, "data": data_id, "config": jsonable(config), **content.get("meta", {})}
    content["meta"] = jsonable({**meta, "train_seconds": seconds, "created": created, "version": ARTIFACT_VERSION})
    # A model cache that cannot be written (full disk) costs a retraining next time, not this run.
    if save_or_warn(lambda: atomic_save(content, path), path, "model cache"):
        sidecar, text = path.with_suffix(".json"), json.dumps(content["meta"], indent=1)
        save_or_warn(lambda: atomic_write_text(text, sidecar), sidecar, "model cache description")
    return Artifact(path, content, trained_now=True)


def vocabulary_id(vocabulary) -> str:
    """Hash of a vocabulary's concepts and phrases (the regulariser's inputs)."""
    return digest(vocabulary.concepts, sorted(vocabulary.phrase_bank.items()))


def unlabeled_oti_tokens(
    backbone, unlabeled: UnlabeledImages, oti_config: OTIConfig, vocabulary, seed=42, batch_size=32, progress=True
) -> Artifact:
    """OTI tokens (``names``, ``tokens``) of unlabeled images, φ's distillation targets. Finished batches
    are kept as they come, so an interrupted run resumes (batches are seeded by their names)."""
    regularise = oti_config.lambda_gpt > 0 and vocabulary is not None
    vocabulary_key = vocabulary_id(vocabulary) if regularise else None
    config = {"oti": oti_config, "seed": seed, "batch_size": batch_size, "vocabulary": vocabulary_key}
    path = artifact_path("oti-unlabeled", backbone, unlabeled.data_id, config)
    partial = path.with_name(f"{path.stem}.partial.pt")

    def train() -> dict:
        names = unlabeled.names
        feats = image_features(backbone, unlabeled.source, names, progress=progress)
        concepts = vocabulary.associate(backbone, feats, oti_config.top_concepts) if regularise else None
        done = load_torch_file(partial, "partial OTI run (delete it to start over)") if partial.is_file() else {}

        def checkpoint(batch: InvertedBatch) -> None:
            done.update(zip(batch.names, batch.tokens))
            save_or_warn(lambda: atomic_save(dict(done), partial), partial, "partial OTI checkpoint")

        bank = vocabulary.phrase_bank if regularise else None
        tokens = invert_images(
            backbone, feats, names, concepts, bank, oti_config, batch_size, seed, progress, dict(done), checkpoint
        )
        return {"names": names, "tokens": torch.stack([tokens[n] for n in names])}

    artifact = load_or_train("oti-unlabeled", backbone, unlabeled.data_id, config, train)
    partial.unlink(missing_ok=True)
    return artifact


@dataclass
class TrainedPhi:
    """φ (eval mode, on the backbone's device), its per-epoch history, its training and its targets' OTI time."""

    phi: torch.nn.Module
    history: list[dict]
    train_seconds: float
    oti_seconds: float
    trained_now: bool
    n_images: int


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
    """φ distilled from the OTI tokens of unlabeled images (SEARLE, Sec. 4.2). ``seed`` is OTI's; ``rows`` trains
    on those rows only; ``validate(φ)`` runs after every epoch, outside the key: a cached φ validated on another
    ``validated_on`` is trained again (the same φ) for its curve."""
    if recipe.images:
        unlabeled = UnlabeledImages(unlabeled.source, list(unlabeled.names)[: recipe.images], unlabeled.source_id)
    targets = unlabeled_oti_tokens(backbone, unlabeled, oti_config, vocabulary, seed, oti_batch_size, progress)
    names = list(targets.content["names"])
    rows = list(range(len(names))) if rows is None else rows
    config = replace(recipe.train_config(loss_overrides), precision=oti_config.precision)  # the run's
    data_id = "phi-" + digest([names[i] for i in rows], targets.path.stem)
    vocabulary_key, bank = (vocabulary_id(vocabulary), vocabulary.phrase_bank) if vocabulary else (None, None)
    key = {"phi": config, "vocabulary": vocabulary_key, "oti": oti_config}

    def train() -> dict:
        feats = image_features(backbone, unlabeled.source, [names[i] for i in rows], progress=progress, normalize=False)
        concepts = vocabulary.associate(backbone, feats, config.loss.top_concepts) if vocabulary is not None else None
        tokens = targets.content["tokens"][rows]
        result = train_phi(backbone, feats, tokens, concepts, bank, config, validate=validate, progress=progress)
        meta = {"history": result.history, "validated_on": validated_on if validate else None}
        return {"Phi": result.phi.cpu().state_dict(), "epoch": config.epochs, "meta": meta}

    artifact = load_or_train("phi", backbone, data_id, key, train)
    if validate is not None and artifact.meta.get("validated_on") != validated_on:
        artifact.path.unlink()
        artifact = load_or_train("phi", backbone, data_id, key, train)
    phi = load_phi(artifact.path, backbone).to(backbone.device).eval()
    train_seconds, oti_seconds = (float(a.meta.get("train_seconds") or 0.0) for a in (artifact, targets))
    history = artifact.meta.get("history", [])
    return TrainedPhi(phi, history, train_seconds, oti_seconds, artifact.trained_now, len(rows))
