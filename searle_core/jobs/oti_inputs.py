"""What an OTI run inverts, computed once and kept in its folder as ``inputs.pt``: the image names,
their CLIP features and their top concepts (φ's training reads the same file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import ImageSource
from searle_core.datasets.features import image_features
from searle_core.infra import distributed as dist
from searle_core.infra.errors import load_torch_file
from searle_core.infra.files import atomic_save
from searle_core.jobs.run_folder import fingerprint

INPUTS = "inputs.pt"


@dataclass
class RunInputs:
    """Names, features and concepts of a run's images (``inputs.pt``).

    ``features`` are raw ``encode_image`` outputs (φ's input, as in the authors' code); ``raw`` is
    False for runs written before φ took raw features, whose stored features are normalised.
    """

    names: list[str]
    features: torch.Tensor
    concepts: list[list[str]] | None
    raw: bool = True


def vocabulary_fingerprint(vocabulary) -> str | None:
    if vocabulary is None:
        return None
    associations = getattr(vocabulary, "associations", None)
    if associations is not None:  # concepts read from a file: which images got which is part of it
        return fingerprint(
            list(vocabulary.concepts), sorted(vocabulary.phrase_bank.items()), sorted(associations.items())
        )
    return fingerprint(list(vocabulary.concepts), sorted(vocabulary.phrase_bank.items()))


# ---- inputs: features and concepts, computed once per run --------------------------------------
@torch.no_grad()
def compute_inputs(
    backbone: Backbone,
    source: ImageSource,
    names: list[str],
    vocabulary,
    top_k: int,
    batch_size: int = 256,
    progress: bool = True,
) -> RunInputs:
    """Features (sharded over ranks in whole feature batches, so identical to one process) and concepts.

    Args:
        backbone: the frozen CLIP (its image pipeline sets preprocessing and loader workers).
        source: where the images come from.
        names: the images, in run order.
        vocabulary: a :class:`~searle_core.inversion.concepts.Vocabulary`, or ``None`` (no regulariser);
            one read from a concepts file gives each image's concepts by name instead.
        top_k: concepts kept per image.
        batch_size: images per feature pass.
        progress: progress bar (rank 0).
    """
    chunks = [names[i : i + batch_size] for i in range(0, len(names), batch_size)]
    mine = dist.shard_indices(len(chunks))
    # Each rank encodes whole batches of the single-process grid: same shapes, same numbers.
    local = (
        image_features(
            backbone,
            source,
            [n for c in mine for n in chunks[c]],
            batch_size=batch_size,
            progress=progress and dist.is_main(),
            cache=False,
            normalize=False,
        )
        if mine
        else None
    )
    parts = dist.all_gather_objects((mine, local))
    rows: dict[int, torch.Tensor] = {}
    for chunk_ids, feats in parts:
        start = 0
        for c in chunk_ids:
            rows[c] = feats[start : start + len(chunks[c])]
            start += len(chunks[c])
    features = torch.cat([rows[c] for c in range(len(chunks))]) if chunks else torch.empty(0, backbone.embed_dim)
    concepts = None
    if vocabulary is not None and getattr(vocabulary, "associations", None) is not None:
        concepts = vocabulary.concepts_of(names, top_k)  # the authors' concepts file, by image name
    elif vocabulary is not None:
        if dist.is_main():
            # In slices: a 100k x 20k similarity matrix would not fit in memory.
            concepts = [
                c
                for i in range(0, len(names), 4096)
                for c in vocabulary.associate(backbone, features[i : i + 4096], top_k)
            ]
        concepts = dist.broadcast_object(concepts)
    return RunInputs(names, features, concepts)


def save_inputs(inputs: RunInputs, path: Path) -> None:
    vocab = sorted({c for cs in inputs.concepts or [] for c in cs})
    index = {c: i for i, c in enumerate(vocab)}
    width = max((len(cs) for cs in inputs.concepts or []), default=0)
    table = torch.full((len(inputs.names), width), -1, dtype=torch.int32)
    for row, cs in enumerate(inputs.concepts or []):
        table[row, : len(cs)] = torch.tensor([index[c] for c in cs], dtype=torch.int32)
    atomic_save(
        {
            "names": inputs.names,
            "features": inputs.features,
            "features_kind": "raw" if inputs.raw else "normalised",
            "concept_names": vocab,
            "concepts": table if inputs.concepts is not None else None,
        },
        path,
    )


def load_inputs(path: Path) -> RunInputs:
    data = load_torch_file(path, "OTI run inputs file (remove it: it is recomputed on --resume)")
    concepts = None
    if data.get("concepts") is not None:
        vocab = data["concept_names"]
        concepts = [[vocab[i] for i in row if i >= 0] for row in data["concepts"].tolist()]
    return RunInputs(list(data["names"]), data["features"], concepts, data.get("features_kind") == "raw")


# ---- the run ------------------------------------------------------------------------------------
