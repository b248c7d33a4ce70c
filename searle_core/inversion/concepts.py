"""Which vocabulary concepts an image shows (OTI's and φ's regulariser input).

A concept's embedding is the mean of its normalised text features over the 24 templates, re-normalised;
each image keeps its most similar concepts. Open Images' 20,931 concepts make half a million prompts,
so their embeddings are computed in batches and cached, keyed by backbone, weights, templates and list.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from searle_core.clip.backbone import Backbone, weights_key
from searle_core.infra.device import eval_precision
from searle_core.infra.errors import InputError
from searle_core.infra.files import load_cached_tensor, save_tensor_atomic
from searle_core.infra.paths import cache_dir
from searle_core.method.encoding import encode_text
from searle_core.method.regulariser import PhraseBank
from searle_core.method.templates import TEMPLATES, fill

#: Concepts kept per image (the authors store this many); OTI draws from the first 15, φ from 150.
STORED_TOP_K, OTI_TOP_K, PHI_TOP_K = 250, 15, 150
_AUTO_CACHE_MIN = 1000  # below this many concepts, embedding is cheaper than a cache file is worth


def concept_cache_key(backbone: Backbone, concepts: list[str], templates: tuple[str, ...] = TEMPLATES) -> str:
    """Key naming what concept embeddings depend on: backbone, weights, templates, the list."""
    digest = hashlib.sha256("\0".join(concepts).encode()).hexdigest()
    payload = json.dumps([backbone.name, weights_key(backbone), list(templates), digest])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@torch.no_grad()
def embed_concepts(
    backbone: Backbone,
    concepts: list[str],
    templates: tuple[str, ...] = TEMPLATES,
    batch_size: int = 1024,
    progress: bool | None = None,
    cache: bool | str | Path | None = None,
) -> torch.Tensor:
    """(len(concepts), embed_dim) normalised concept embeddings, ``batch_size`` prompts per pass.
    ``cache``: ``True`` (the project cache), a folder, ``False``, or ``None`` (only vocabularies of 1,000
    concepts or more); ``progress`` ``None``: a bar for those only."""
    if not concepts:
        raise InputError("the concept vocabulary is empty")
    large = len(concepts) >= _AUTO_CACHE_MIN
    cache = large if cache is None else cache
    progress = large if progress is None else progress
    path = None
    if cache:
        folder = cache_dir("concepts") if cache is True else Path(cache)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"concepts-{concept_cache_key(backbone, list(concepts), tuple(templates))}.pt"
        feats = load_cached_tensor(path, len(concepts))
        if feats is not None:
            return feats
    out = []
    per_batch = max(1, batch_size // len(templates))
    with tqdm(total=len(concepts), desc="embedding concepts", unit="concept", disable=not progress) as bar:
        for start in range(0, len(concepts), per_batch):
            chunk = concepts[start : start + per_batch]
            prompts = [fill(t, c) for c in chunk for t in templates]
            with eval_precision(backbone.device):
                feats = encode_text(backbone.model, backbone.tokenize(prompts))
            feats = F.normalize(feats.float(), dim=-1).view(len(chunk), len(templates), -1).mean(dim=1)
            out.append(F.normalize(feats, dim=-1).cpu())
            bar.update(len(chunk))
    feats = torch.cat(out)
    save_tensor_atomic(path, feats)
    return feats


def associate_concepts(
    image_features: torch.Tensor, concept_features: torch.Tensor, concepts: list[str], top_k: int = STORED_TOP_K
) -> list[list[str]]:
    """Each image's ``top_k`` most similar concepts, best first, a repeated name counted once at its best
    similarity; OTI's 15 and φ's 150 are prefixes of the stored 250."""
    if len(concepts) != concept_features.shape[0]:
        raise InputError(f"{len(concepts)} concept names for {concept_features.shape[0]} concept embeddings")
    sims = F.normalize(image_features.float().cpu(), dim=-1) @ concept_features.float().T
    # Ask for as many extra as there are repeated names, so dropping repeats still leaves top_k.
    repeats = len(concepts) - len(set(concepts))
    k = min(len(concepts), top_k + repeats)
    return [list(dict.fromkeys(concepts[i] for i in row))[:top_k] for row in sims.topk(k, dim=1).indices.tolist()]


@dataclass
class Vocabulary:
    """OTI's and φ's regulariser inputs: the whole vocabulary and a phrase bank of the concepts with
    usable phrases. Images are associated over the whole vocabulary and concepts without phrases are
    skipped when phrases are drawn, as in the authors' code. ``phrases``: ``"given"`` (the authors' or
    the shapes grammar's) or ``"templates"`` (not the paper's regulariser; tables label such rows).
    ``associations``: image name -> concepts from a concepts file (:attr:`source`), looked up by name
    (:meth:`concepts_of`) instead of associated."""

    concepts: list[str]
    phrase_bank: PhraseBank
    _features: dict = field(default_factory=dict, repr=False)
    phrases: str = "given"
    associations: dict[str, list[str]] | None = None
    source: str = ""

    def concept_features(self, backbone: Backbone) -> torch.Tensor:
        key = (backbone.name, backbone.weights_id)
        if key not in self._features:
            self._features[key] = embed_concepts(backbone, self.concepts)
        return self._features[key]

    def associate(self, backbone: Backbone, features: torch.Tensor, top_k: int) -> list[list[str]]:
        if self.associations is not None:
            raise InputError(
                f"{self.source}: a concepts file gives each image's concepts by name, which only `searle oti` "
                "(and `searle train-phi` with the authors' OTI output) read; here give the vocabulary the "
                "concepts are associated over (--concepts oidv7-class-descriptions.csv)"
            )
        return associate_concepts(features, self.concept_features(backbone), self.concepts, top_k)

    def concepts_of(self, names: list[str], top_k: int) -> list[list[str]]:
        """The first ``top_k`` concepts of each named image, from :attr:`associations`."""
        missing = [n for n in names if n not in self.associations]
        if missing:
            raise InputError(
                f"{self.source}: no concepts for {len(missing)} of the {len(names)} images (first: {missing[0]!r}); "
                f"its 'Image Name' column must name each image as the dataset does (e.g. {names[0]!r})"
            )
        return [self.associations[n][:top_k] for n in names]
