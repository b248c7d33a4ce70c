"""Concept association: which vocabulary concepts an image shows (OTI's and φ's regulariser input).

A concept is embedded as the mean of its L2-normalised text features over the 24 templates,
re-normalised; each image keeps its most similar concepts. Real runs use the Open Images V7 class
names; the ``shapes`` world has its own small vocabulary in the same structure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .backbone import Backbone
from .templates import TEMPLATES, fill
from .text_encoding import encode_text


@torch.no_grad()
def embed_concepts(backbone: Backbone, concepts: list[str], templates: tuple[str, ...] = TEMPLATES,
                   batch_size: int = 1024, progress: bool = False) -> torch.Tensor:
    """(len(concepts), embed_dim) normalised concept embeddings (mean over templates).

    Args:
        backbone: the frozen CLIP.
        concepts: concept names.
        templates: prompt templates with ``{}`` for the concept.
        batch_size: prompts per text pass.
        progress: progress bar over concepts.
    """
    if not concepts:
        raise ValueError("the concept vocabulary is empty")
    out = []
    per_batch = max(1, batch_size // len(templates))
    for start in tqdm(range(0, len(concepts), per_batch), desc="embedding concepts", disable=not progress):
        chunk = concepts[start:start + per_batch]
        prompts = [fill(t, c) for c in chunk for t in templates]
        feats = F.normalize(encode_text(backbone.model, backbone.tokenize(prompts)).float(), dim=-1)
        feats = feats.view(len(chunk), len(templates), -1).mean(dim=1)
        out.append(F.normalize(feats, dim=-1).cpu())
    return torch.cat(out)


def associate_concepts(image_features: torch.Tensor, concept_features: torch.Tensor, concepts: list[str],
                       top_k: int = 250) -> list[list[str]]:
    """Each image's ``top_k`` most similar concepts, best first, without repeated names.

    Args:
        image_features: (N, D) image features (normalised here).
        concept_features: (C, D) from :func:`embed_concepts`.
        concepts: the C concept names.
        top_k: how many to keep (250 stored in the paper; OTI uses 15, φ 150).
    """
    sims = F.normalize(image_features.float().cpu(), dim=-1) @ concept_features.float().T
    # Ask for a few more than top_k so that dropping duplicate names still leaves top_k.
    k = min(len(concepts), top_k + 16)
    idx = sims.topk(k, dim=1).indices.tolist()
    result = []
    for row in idx:
        seen, names = set(), []
        for i in row:
            if concepts[i] not in seen:
                seen.add(concepts[i])
                names.append(concepts[i])
            if len(names) == top_k:
                break
        result.append(names)
    return result
