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
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from searle_core.backbone import Backbone
from searle_core.baselines.training import world_data_id
from searle_core.paths import cache_dir
from searle_core.files import digest, jsonable
from searle_core.retrieval.features import weights_key, preprocess_name, image_features
from searle_core.inversion import OTIConfig, load_phi
from searle_core.inversion.batch import invert_images
from searle_core.datasets.shapes.opening import world_vocabulary
from searle_core.inversion.phi import PhiLossConfig
from searle_core.inversion.phi_training import PhiTrainConfig, train_phi
from searle_core.errors import load_torch_file

#: Bumped when a saved format or a training procedure changes, so old files are not reused
#: (2: φ takes raw image features; keys name the preprocessing; OTI/φ precision settings).
ARTIFACT_VERSION = 2


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

    key = digest(ARTIFACT_VERSION, kind, backbone.name, weights_key(backbone), preprocess_key(backbone), data_id,
                 config)
    return models_dir() / f"{kind}-{backbone.name}-{key}.pt"


def preprocess_key(backbone: Backbone) -> str:
    """The name of the backbone's image preprocessing (``targetpad``, ``clip``, ...)."""

    return preprocess_name(backbone)


def save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A per-process temporary name, so two processes training the same artifact never share one.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
    content["meta"] = jsonable({**(meta or {}), **content.get("meta", {}),
                             "train_seconds": round(time.perf_counter() - start, 2),
                             "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "version": ARTIFACT_VERSION})
    save_atomic(content, path)
    sidecar = path.with_suffix(".json")
    tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content["meta"], indent=1))
    os.replace(tmp, sidecar)
    return Artifact(path, content, trained_now=True)


def describe(backbone: Backbone, data_id: str, config: Any) -> dict:
    """The ``meta`` every artifact records about where it comes from."""

    return {"backbone": backbone.name, "weights": weights_key(backbone), "preprocess": preprocess_key(backbone),
            "data": data_id, "config": jsonable(config)}


# ---- φ for the shapes world ------------------------------------------------------------------------
#: φ's epochs on the shapes world: the paper's 100. The default world's 2,000 unlabeled images are
#: 8 batches of 256 per epoch, 800 steps in all: a few minutes on one CPU core (the OTI of those
#: images, φ's targets, costs more than φ itself); the quick world's 500 images take about a
#: minute. Measured on the quick world: 40 epochs left φ (and Pic2Word) visibly under-trained,
#: 100 reached the level of the OTI tokens it distils, 300 did not improve φ further.
WORLD_PHI_EPOCHS = 100
#: Concepts φ's regulariser draws from on the world. The paper's top-150 of 20,931 concepts is
#: 0.7% of its vocabulary; top-150 of the world's 135 would be every concept, true or not, so the
#: world uses OTI's top-15 (which holds an image's 6 true concepts and their nearest neighbours).
WORLD_PHI_TOP_CONCEPTS = 15


def vocabulary_id(vocabulary) -> str:
    """Hash of a vocabulary's concepts and phrases (the regulariser's inputs)."""
    return digest(vocabulary.concepts, sorted(vocabulary.phrase_bank.items()))


def world_oti_tokens(backbone: Backbone, world, oti_config=None, vocabulary=None, seed: int = 42,
                     batch_size: int = 32, progress: bool = True) -> Artifact:
    """OTI tokens of the world's unlabeled images (φ's distillation targets), cached.

    Args:
        backbone: the world CLIP.
        world: a ``ShapesWorld``; its ``pretrain_names()`` are the unlabeled images.
        oti_config: OTI settings (default: the paper's); the same OTI as ``searle-oti``.
        vocabulary: concepts and phrases for OTI's regulariser (default: the world's).
        seed: OTI seed.
        batch_size: images per OTI batch.
        progress: progress bar over images.

    Returns:
        An :class:`Artifact` whose content has ``names`` and ``tokens`` (N, token_dim).
    """

    oti_config = oti_config or OTIConfig()
    vocabulary = vocabulary or world_vocabulary()
    config = {"oti": oti_config, "seed": seed, "batch_size": batch_size, "vocabulary": vocabulary_id(vocabulary)}
    data_id = world_data_id(world)

    path = artifact_path("oti-tokens", backbone, data_id, config)
    # Batches done so far are saved as they finish: an interrupted run resumes where it stopped
    # (batches are seeded by their image names, so the result is the same as an uninterrupted run).
    partial = path.with_name(f"{path.stem}.partial.pt")

    def train() -> dict:
        names = world.pretrain_names()
        feats = image_features(backbone, world.images, names, progress=progress)
        concepts = vocabulary.associate(backbone, feats, oti_config.top_concepts) if oti_config.lambda_gpt > 0 else None
        done = torch.load(partial, weights_only=True) if partial.is_file() else {}

        def checkpoint(_: int, batch: list[str], batch_tokens: torch.Tensor) -> None:
            done.update(zip(batch, batch_tokens))
            save_atomic(dict(done), partial)

        tokens = invert_images(backbone, feats, names, concepts, vocabulary.phrase_bank, oti_config, batch_size,
                               seed, progress, done=dict(done), on_batch=checkpoint)
        return {"names": names, "tokens": torch.stack([tokens[n] for n in names])}

    artifact = load_or_train(path, train, describe(backbone, data_id, config))
    partial.unlink(missing_ok=True)
    return artifact


def world_phi_artifact(backbone: Backbone, world, config=None, oti_config=None, vocabulary=None, seed: int = 42,
                       oti_batch_size: int = 32, progress: bool = True) -> Artifact:
    """φ trained on the world's unlabeled images from their OTI tokens, cached (the paper's recipe).

    Args:
        backbone: the world CLIP.
        world: a ``ShapesWorld``.
        config: a ``PhiTrainConfig`` (default: the paper's, with :data:`WORLD_PHI_EPOCHS` epochs and
            :data:`WORLD_PHI_TOP_CONCEPTS` regulariser concepts).
        oti_config: OTI settings of the distillation targets (as ``searle-oti`` uses).
        vocabulary: concepts and phrases (default: the world's).
        seed: OTI seed (φ's own seed is ``config.seed``).
        oti_batch_size: images per OTI batch.
        progress: progress bars (OTI over images, then φ's epochs).
    """

    config = config or PhiTrainConfig(epochs=WORLD_PHI_EPOCHS, loss=PhiLossConfig(top_concepts=WORLD_PHI_TOP_CONCEPTS))
    vocabulary = vocabulary or world_vocabulary()
    targets = world_oti_tokens(backbone, world, oti_config, vocabulary, seed, oti_batch_size, progress)
    data_id = f"{world_data_id(world)}-oti-{targets.path.stem}"
    key = {"phi": config, "vocabulary": vocabulary_id(vocabulary)}

    def train() -> dict:
        names = targets.content["names"]
        feats = image_features(backbone, world.images, names, progress=progress, normalize=False)  # φ's input: raw
        concepts = vocabulary.associate(backbone, feats, config.loss.top_concepts)
        result = train_phi(backbone, feats, targets.content["tokens"], concepts, vocabulary.phrase_bank, config,
                           progress=progress)
        meta = {"history": result.history[-1:] if result.history else [],
                "oti_train_seconds": targets.meta.get("train_seconds")}
        return {"Phi": result.phi.cpu().state_dict(), "epoch": config.epochs, "meta": meta}

    path = artifact_path("phi", backbone, data_id, key)
    return load_or_train(path, train, describe(backbone, data_id, key))


def world_phi(backbone: Backbone, world, **kwargs) -> "torch.nn.Module":
    """φ for the world (see :func:`world_phi_artifact` for the arguments), in eval mode."""

    return load_phi(world_phi_artifact(backbone, world, **kwargs).path, backbone)


def record_training(extras: dict, method: str, artifact: Artifact, spent: float,
                    train_seconds: float | None = None) -> None:
    """Note, for the table, what ``method``'s network cost.

    Args:
        extras: ``MethodContext.extras``.
        method: the method's name.
        artifact: its network (trained in this call or loaded).
        spent: wall time this call spent getting it (training or loading), kept out of query time.
        train_seconds: the network's training time (default: the artifact's recorded time).
    """
    total = train_seconds if train_seconds is not None else (artifact.meta.get("train_seconds") or 0.0)
    extras.setdefault("train_seconds", {})[method] = float(total)
    extras.setdefault("trained_now", {})[method] = artifact.trained_now
    extras.setdefault("setup_seconds", {})[method] = float(spent)
