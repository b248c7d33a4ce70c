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
from searle_core.method.phi_training import PhiTrainConfig, train_phi
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


def projected_hours(images_per_s: float, n_images: int) -> float:
    """Hours one device takes for ``n_images`` at ``images_per_s`` (images/s of a full-length run)."""
    if not images_per_s > 0:
        raise ValueError(f"images/s must be positive, got {images_per_s}")
    return n_images / images_per_s / 3600


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


@dataclass
class PrecisionBenchResult:
    """One workload at several training precisions, timed interleaved on the same inputs: the median
    seconds per precision over ``repeats`` rounds, each against the first precision (``ratio``: how many
    times faster), and how far each precision's output is from the first one's."""

    what: str
    backbone: str
    device: str
    threads: int
    repeats: int
    seconds: dict[str, float]
    ratio: dict[str, float]
    cosine: dict[str, float]
    max_rel_diff: dict[str, float]
    detail: dict

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def agreement(base: torch.Tensor, other: torch.Tensor) -> tuple[float, float]:
    """The smallest row cosine of ``other`` to ``base`` and the largest difference relative to each row's
    largest entry (max over rows of max|Δ| / max|base|): both are scale-free."""
    base, other = base.detach().float().cpu(), other.detach().float().cpu()
    cosine = float(F.cosine_similarity(base, other, dim=-1).min())
    rel = (other - base).abs().amax(dim=-1) / base.abs().amax(dim=-1).clamp_min(1e-12)
    return cosine, float(rel.max())


def bench_precisions(run, precisions: tuple[str, ...], repeats: int = 2, warmup: bool = True) -> tuple[dict, dict]:
    """Time ``run(precision) -> tensor`` for each precision, interleaved (round r runs every precision once,
    so a load change on a shared machine hits all of them alike): median seconds and the first round's
    outputs. ``warmup``: one untimed call of each first (allocations, oneDNN's kernel choice)."""
    if warmup:
        for p in precisions:
            run(p)
    times: dict[str, list[float]] = {p: [] for p in precisions}
    outputs: dict[str, torch.Tensor] = {}
    for _ in range(repeats):
        for p in precisions:
            start = time.perf_counter()
            out = run(p)
            times[p].append(time.perf_counter() - start)
            outputs.setdefault(p, out)
    return {p: float(np.median(t)) for p, t in times.items()}, outputs


def _precision_result(what, backbone, precisions, repeats, warmup, run, detail) -> PrecisionBenchResult:
    seconds, outputs = bench_precisions(run, precisions, repeats, warmup)
    base = precisions[0]
    agree = {p: agreement(outputs[base], outputs[p]) for p in precisions}
    return PrecisionBenchResult(
        what=what,
        backbone=backbone.name,
        device=str(backbone.device),
        threads=torch.get_num_threads(),
        repeats=repeats,
        seconds=seconds,
        ratio={p: seconds[base] / seconds[p] for p in precisions},
        cosine={p: a[0] for p, a in agree.items()},
        max_rel_diff={p: a[1] for p, a in agree.items()},
        detail=detail,
    )


def bench_oti_precisions(
    backbone: Backbone, precisions=("fp32", "bf16"), steps=3, batch_size=32, seed=42, repeats=2, warmup=True
) -> PrecisionBenchResult:
    """The library's OTI (phrase regulariser on) of one batch at each precision; outputs: the EMA tokens."""
    feats, concepts, bank = bench_inputs(backbone, batch_size, seed)

    def run(precision: str) -> torch.Tensor:
        config = OTIConfig(steps=steps, precision=precision)
        result = oti(backbone, feats, concepts, bank, config, seed=seed, phrase_cache=PhraseFeatureCache(backbone))
        _sync(backbone.device)
        return result.tokens

    detail = {"images": batch_size, "steps": steps}
    return _precision_result("OTI", backbone, precisions, repeats, warmup, run, detail)


def bench_phi_precisions(
    backbone: Backbone,
    precisions=("fp32", "bf16"),
    n_images=256,
    batch_size=64,
    seed=42,
    repeats=2,
    warmup=True,
    phrases_per_concept=8,
) -> PrecisionBenchResult:
    """One epoch of φ's training (the phrase regulariser on) at each precision on the same images, tokens and
    phrases; outputs: the trained φ's tokens of those images (in fp32, as evaluation computes them). The
    phrase bank is small (``phrases_per_concept``): its one-off encoding would otherwise dominate one epoch."""
    feats, concepts, bank = bench_inputs(backbone, n_images, seed, phrases_per_concept)
    targets = torch.randn(n_images, backbone.token_dim, generator=torch.Generator().manual_seed(seed + 1)) * 0.02

    def run(precision: str) -> torch.Tensor:
        config = PhiTrainConfig(epochs=1, batch_size=batch_size, seed=seed, precision=precision)
        phi = train_phi(backbone, feats, targets, concepts, bank, config, progress=False).phi
        with torch.no_grad():
            return phi(feats.to(backbone.device))

    detail = {"images": n_images, "batch_size": batch_size, "steps": max(1, n_images // batch_size)}
    return _precision_result("φ training", backbone, precisions, repeats, warmup, run, detail)
