"""Which vocabulary concepts an image shows (OTI's and φ's regulariser input), and the authors' concept files,
``{model}_top_250_ensembling_image_texts.csv`` (columns ``Image Name, 1, ..., 250``). A concept's embedding is
the mean of its normalised text features over the 24 templates, re-normalised; large vocabularies are cached."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from searle_core.clip.backbone import Backbone, weights_key
from searle_core.infra.device import eval_precision
from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_write_text, cache_file, load_cached_tensor, read_text, save_tensor_atomic
from searle_core.method.encoding import encode_text
from searle_core.method.regulariser import PhraseBank
from searle_core.method.templates import TEMPLATES, fill

NAME_COLUMN = "Image Name"
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
    """(len(concepts), embed_dim) normalised concept embeddings; ``cache`` and ``progress``: ``None`` for
    vocabularies of 1,000 concepts or more only, ``cache=True`` the project cache, or a folder."""
    if not concepts:
        raise InputError("the concept vocabulary is empty")
    large = len(concepts) >= _AUTO_CACHE_MIN
    cache = large if cache is None else cache
    progress = large if progress is None else progress
    path = cache_file("concepts", cache, concept_cache_key(backbone, list(concepts), tuple(templates)), "concepts")
    if (feats := load_cached_tensor(path, (len(concepts), backbone.embed_dim))) is not None:
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
    k = min(len(concepts), top_k + len(concepts) - len(set(concepts)))
    return [list(dict.fromkeys(concepts[i] for i in row))[:top_k] for row in sims.topk(k, dim=1).indices.tolist()]


@dataclass
class Vocabulary:
    """OTI's and φ's regulariser inputs: the whole vocabulary (images are associated over all of it, as the authors
    do), a phrase bank, ``phrases`` ``"given"`` or ``"templates"``, and a concepts file's ``associations``."""

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
        if missing := [n for n in names if n not in self.associations]:
            raise InputError(
                f"{self.source}: no concepts for {len(missing)} of the {len(names)} images (first: {missing[0]!r}); "
                f"its 'Image Name' column must name each image as the dataset does (e.g. {names[0]!r})"
            )
        return [self.associations[n][:top_k] for n in names]


def authors_concepts_file_name(backbone_name: str, top_k: int = 250) -> str:
    """``ViT-B-32`` -> ``ViT-B32_top_250_ensembling_image_texts.csv`` (their ``ViT-B/32`` without the slash)."""
    model = re.sub(r"^(ViT-[A-Za-z]+)-(\d+)", r"\1\2", backbone_name.removesuffix("-quickgelu"))
    return f"{model}_top_{top_k}_ensembling_image_texts.csv"


def write_concepts_csv(path: str | Path, names: Sequence[str], concepts: Sequence[Sequence[str]]) -> Path:
    """Write each image's concepts, best first, in the authors' layout (atomically), one column per rank."""
    if len(names) != len(concepts):
        raise InputError(f"{path}: {len(names)} image names for {len(concepts)} concept lists")
    width = len(concepts[0]) if concepts else 0
    if any(len(c) != width for c in concepts):
        raise InputError(f"{path}: every image needs the same number of concepts (the first has {width})")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([NAME_COLUMN, *map(str, range(1, width + 1))])
    writer.writerows([str(n), *c] for n, c in zip(names, concepts))
    return atomic_write_text(out.getvalue(), path)


def is_image_concepts_file(path: str | Path) -> bool:
    """Whether ``path`` is a concepts file in the authors' layout (its header starts ``Image Name``),
    rather than a vocabulary such as Open Images' ``LabelName,DisplayName``."""
    try:
        with Path(path).open(encoding="utf-8", newline="") as f:
            header = next(csv.reader([f.readline()]), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False  # the vocabulary reader names the problem
    return bool(header) and header[0].lstrip("\ufeff") == NAME_COLUMN


def read_csv(path: Path, text: str, header_ok: Callable[[list[str]], bool], expected: str) -> tuple[list, list]:
    """The header and rows of CSV ``text``; a bad header or CSV names the file (and line)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # a quote left open no longer eats the rest
    try:
        header = next(reader, None)
        if not header or not header_ok(header):
            raise InputError(f"{path}: expected a header {expected}, got {header}")
        return header, list(reader)
    except csv.Error as err:
        raise InputError(f"{path}, line {reader.line_num}: not valid CSV ({err}; is a quote left open?)") from None


def read_concepts_csv(path: str | Path, top_k: int | None = None) -> dict[str, list[str]]:
    """Image name -> its concepts as their scripts read them: stripped, repeats dropped, the first
    ``top_k`` (all if ``None``)."""
    text = read_text(path, "concepts file")
    _, rows = read_csv(Path(path), text, lambda h: h[0] == NAME_COLUMN, f"starting '{NAME_COLUMN},1,2,...'")
    return {row[0]: list(dict.fromkeys(c.strip() for c in row[1:] if c.strip()))[:top_k] for row in filter(None, rows)}
