"""Speed benchmarks (not tests): the library's OTI against the plain reference OTI (:mod:`reference.oti`), OTI per
batch size, gallery feature extraction and the retrieval step at CIRCO's gallery size."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from reference.oti import reference_oti
from searle_core.clip.backbone import Backbone
from searle_core.datasets import ImageFolderSource
from searle_core.datasets.features import configure_images, image_features
from searle_core.inversion.phrases import template_phrases
from searle_core.method.oti import InvertedBatch, OTIConfig, invert_images, oti
from searle_core.method.regulariser import PhraseBank, PhraseFeatureCache
from searle_core.retrieval.ranking import rank_gallery

#: Everyday concepts for the benchmark's offline phrase bank (no network, no GPT needed).
BENCH_CONCEPTS: tuple[str, ...] = tuple(
    "dog,cat,red car,bicycle,ice cream cone,wooden chair,coffee mug,sailboat,umbrella,laptop,horse,teddy bear,"
    "pizza,street lamp,guitar,tennis racket,park bench,fire hydrant,bird,potted plant,running shoe,wrist watch,"
    "backpack,kite,train,bridge,lighthouse,mountain,book,clock,giraffe,elephant".split(",")
)


@dataclass
class OTIBenchResult:
    """Throughput of both implementations on the same batch, and how far their tokens are apart."""

    reference_images_per_s: float
    project_images_per_s: float
    ratio: float
    max_abs_diff: float
    reference_seconds: float
    project_seconds: float
    images: int
    steps: int
    backbone: str
    device: str
    peak_memory_mb: float | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def bench_inputs(
    backbone: Backbone, n_images: int, seed: int = 0, phrases_per_concept: int = 256, concepts_per_image: int = 15
) -> tuple[torch.Tensor, list[list[str]], PhraseBank]:
    """Random unit image features, each image with its own concepts, and an offline phrase bank."""
    gen = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(n_images, backbone.embed_dim, generator=gen), dim=-1)
    rng = random.Random(seed)
    per_image = [rng.sample(BENCH_CONCEPTS, min(concepts_per_image, len(BENCH_CONCEPTS))) for _ in range(n_images)]
    return feats, per_image, template_phrases(BENCH_CONCEPTS, phrases_per_concept, seed)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_oti(
    backbone: Backbone, steps=10, batch_size=32, seed=42, config: OTIConfig | None = None, warmup=True, full_steps=350
) -> OTIBenchResult:
    """Time the library's OTI and the reference one on the same batch and seed for ``steps`` steps (``warmup``:
    one untimed step of each first), as images/s of a ``full_steps``-step run (weights do not change speed)."""
    config = OTIConfig(**{**(config or OTIConfig()).__dict__, "steps": steps})
    feats, concepts, bank = bench_inputs(backbone, batch_size, seed)
    device = backbone.device
    if warmup:
        one = OTIConfig(**{**config.__dict__, "steps": 1})
        reference_oti(backbone, feats, concepts, bank, one, seed)
        oti(backbone, feats, concepts, bank, one, seed=seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    ref = reference_oti(backbone, feats, concepts, bank, config, seed)
    _sync(device)
    ref_s = time.perf_counter() - start
    start = time.perf_counter()
    # A fresh phrase cache: encoding the batch's plain phrases is part of the library's cost.
    ours = oti(backbone, feats, concepts, bank, config, seed=seed, phrase_cache=PhraseFeatureCache(backbone)).tokens
    _sync(device)
    ours_s = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    per_image = full_steps / steps / batch_size
    return OTIBenchResult(
        reference_images_per_s=1 / (ref_s * per_image),
        project_images_per_s=1 / (ours_s * per_image),
        ratio=ref_s / ours_s,
        max_abs_diff=float((ref.float() - ours.float()).abs().max()),
        reference_seconds=ref_s,
        project_seconds=ours_s,
        images=batch_size,
        steps=steps,
        backbone=backbone.name,
        device=str(device),
        peak_memory_mb=peak,
    )


def bench_oti_batch_sizes(
    backbone: Backbone,
    features: torch.Tensor,
    names: list[str],
    concepts: list[list[str]] | None,
    phrase_bank: PhraseBank | None,
    config: OTIConfig,
    sizes: tuple[int, ...] = (32, 128),
    seed: int = 42,
) -> list[dict]:
    """OTI of the same images at each batch size: seconds, images/s and the last step's mean ``cos`` and
    ``total`` losses (a batch size changes an image's seeded draws, not its update: they should agree)."""
    rows = []
    for size in sizes:
        batches: list[InvertedBatch] = []
        start = time.perf_counter()
        invert_images(
            backbone, features, names, concepts, phrase_bank, config, size, seed, False, on_batch=batches.append
        )
        seconds = time.perf_counter() - start
        # per-batch means of the last step, weighted back to per-image means
        last = {k: sum(b.result.history[k][-1] * len(b.names) for b in batches) / len(names) for k in ("cos", "total")}
        rows.append({"batch_size": size, "seconds": seconds, "images_per_s": len(names) / seconds, **last})
    return rows


def write_bench_images(folder, n: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> list:
    """``n`` random JPEGs of ImageNet's typical size, so decoding and resizing cost what they cost."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # Smooth noise compresses like a photo (pure noise would make unrealistically large files).
    for i in range(n):
        small = rng.integers(0, 256, size=(size[1] // 25, size[0] // 25, 3), dtype=np.uint8)
        Image.fromarray(small).resize(size, Image.BILINEAR).save(folder / f"img_{i:06d}.jpg", quality=90)
    return sorted(folder.glob("*.jpg"))


def bench_feature_extraction(
    backbone: Backbone, folder, workers: tuple[int, ...] = (0, 2), batch_size: int = 32, preprocess: str = "targetpad"
) -> dict[int, float]:
    """Images/s of ``image_features`` from JPEG files (decoding, targetpad, image tower) per worker count."""
    out = {}
    size = backbone.model.visual.image_size
    height, width = (size, size) if isinstance(size, int) else size
    with torch.no_grad():  # warm-up: first-call allocations should not count against workers=0
        backbone.model.encode_image(torch.zeros(1, 3, height, width, device=backbone.device))
    for w in workers:
        source = ImageFolderSource(folder)  # a new one each time: features are remembered per source object
        configured = configure_images(backbone, preprocess, w)
        _sync(backbone.device)
        start = time.perf_counter()
        image_features(configured, source, source.names, batch_size=batch_size, progress=False, cache=False)
        _sync(backbone.device)
        out[w] = len(source.names) / (time.perf_counter() - start)
    return out


def bench_retrieval(gallery_size=120_000, queries=800, dim=512, k=50, seed=0) -> dict:
    """Seconds and queries/s of ranking ``queries`` against ``gallery_size`` (CIRCO's: about 120k) synthetic
    features, top-``k`` names per query."""
    gen = torch.Generator().manual_seed(seed)
    gallery = F.normalize(torch.randn(gallery_size, dim, generator=gen), dim=-1)
    query = F.normalize(torch.randn(queries, dim, generator=gen), dim=-1)
    names = [f"{i:012d}" for i in range(gallery_size)]
    start = time.perf_counter()
    rankings = rank_gallery(query, gallery, names, k)
    seconds = time.perf_counter() - start
    assert len(rankings) == queries and len(rankings[0]) == k
    return {
        "retrieval_seconds": seconds,
        "retrieval_queries_per_s": queries / seconds,
        "gallery_size": gallery_size,
        "queries": queries,
        "dim": dim,
    }
