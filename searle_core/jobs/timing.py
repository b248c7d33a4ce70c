"""Benchmarks (not tests): the project's OTI against a plainly written reference recipe, gallery
feature extraction, and the retrieval step at CIRCO's gallery size.

The reference recipe is OTI as one would first write it from the paper: every text pass runs CLIP's
full 77-token context, the unmodified phrases are re-encoded at every step, templates and phrases go
through separate passes, prompts are tokenized at every step. It makes exactly the same random draws
as :func:`searle_core.method.oti` (initial tokens, templates, phrases) so after the same steps the
two must produce the same tokens up to floating-point rounding; ``max_abs_diff`` checks that the
project's speed-ups change nothing but the speed.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from searle_core.clip.backbone import Backbone
from searle_core.datasets import ImageFolderSource
from searle_core.datasets.features import configure_images, image_features
from searle_core.infra.device import grad_scaler, scaled_step, train_autocast
from searle_core.inversion.phrases import template_phrases
from searle_core.method.encoding import encode_text, encode_with_pseudo_tokens
from searle_core.method.losses import cosine_loss
from searle_core.method.oti import InvertedBatch, OTIConfig, invert_images, oti
from searle_core.method.regulariser import PhraseBank, PhraseFeatureCache, PhraseSampler
from searle_core.method.templates import fill
from searle_core.retrieval.ranking import rank_gallery

#: Everyday concepts for the benchmark's offline phrase bank (no network, no GPT needed).
BENCH_CONCEPTS: tuple[str, ...] = (
    "dog",
    "cat",
    "red car",
    "bicycle",
    "ice cream cone",
    "wooden chair",
    "coffee mug",
    "sailboat",
    "umbrella",
    "laptop",
    "horse",
    "teddy bear",
    "pizza",
    "street lamp",
    "guitar",
    "tennis racket",
    "park bench",
    "fire hydrant",
    "bird",
    "potted plant",
    "running shoe",
    "wrist watch",
    "backpack",
    "kite",
    "train",
    "bridge",
    "lighthouse",
    "mountain",
    "book",
    "clock",
    "giraffe",
    "elephant",
)


def reference_oti(
    backbone: Backbone,
    image_features: torch.Tensor,
    concepts: list[list[str]] | None,
    phrase_bank: PhraseBank | None,
    config: OTIConfig = OTIConfig(),
    seed: int = 42,
) -> torch.Tensor:
    """OTI written plainly (the baseline of ``searle bench oti``); returns the EMA tokens.

    Same draws as :func:`searle_core.method.oti`: the initial tokens from ``torch.Generator(seed)``,
    then, from ``random.Random(seed)``, every step's template per image followed by every step's phrase
    draw. Everything else is done the slow, obvious way.

    Args:
        backbone: the frozen CLIP.
        image_features: (N, embed_dim) image features.
        concepts: per image, its concepts (``None``: no regulariser).
        phrase_bank: concept -> phrases.
        config: OTI hyper-parameters.
        seed: the same seed given to the project's OTI.
    """
    device, model = backbone.device, backbone.model
    n = image_features.shape[0]
    targets = image_features.to(device, torch.float32)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    tokens = (torch.randn(n, backbone.token_dim, generator=gen) * config.init_std).to(device).requires_grad_()
    ema = tokens.detach().clone()
    optimizer = torch.optim.AdamW([tokens], lr=config.lr, weight_decay=config.weight_decay)
    scaler = grad_scaler(device, config.precision)
    template_ids = [[rng.randrange(len(config.templates)) for _ in range(n)] for _ in range(config.steps)]
    regularise = config.lambda_gpt > 0 and concepts is not None and phrase_bank is not None
    draws = []
    if regularise:
        sampler = PhraseSampler([c[: config.top_concepts] for c in concepts], phrase_bank, rng, draw="phrase")
        draws = [sampler.draw() for _ in range(config.steps)]
    lam = config.lambda_cos + (config.lambda_gpt if regularise else 0.0)
    for step in range(config.steps):
        prompts = [fill(config.templates[i], "$") for i in template_ids[step]]
        with train_autocast(device, config.precision):
            feats = encode_with_pseudo_tokens(
                model, backbone.tokenize(prompts), tokens, backbone.dollar_token_id, truncate=False
            )
            loss = config.lambda_cos * cosine_loss(feats, targets)
            if regularise and draws[step].rows:
                draw = draws[step]
                pseudo = encode_with_pseudo_tokens(
                    model,
                    backbone.tokenize(draw.pseudo_phrases),
                    tokens[draw.rows],
                    backbone.dollar_token_id,
                    truncate=False,
                )
                with torch.no_grad():
                    plain = F.normalize(
                        encode_text(model, backbone.tokenize(draw.phrases), truncate=False).float(), dim=-1
                    )
                loss = loss + config.lambda_gpt * cosine_loss(pseudo, plain)
            loss = loss / lam
        optimizer.zero_grad(set_to_none=True)
        scaled_step(loss, optimizer, scaler)
        with torch.no_grad():
            ema.mul_(config.ema_decay).add_(tokens.detach(), alpha=1 - config.ema_decay)
    return (ema if config.use_ema else tokens.detach()).clone()


@dataclass
class OTIBenchResult:
    """Throughput of both recipes on the same batch, and how far their tokens are apart."""

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
    """Synthetic but realistic inputs: random unit image features, each image with its own concepts
    from :data:`BENCH_CONCEPTS`, and an offline bank of "a photo of <concept> that ..." phrases."""

    gen = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(n_images, backbone.embed_dim, generator=gen), dim=-1)
    rng = random.Random(seed)
    per_image = [rng.sample(BENCH_CONCEPTS, min(concepts_per_image, len(BENCH_CONCEPTS))) for _ in range(n_images)]
    return feats, per_image, template_phrases(BENCH_CONCEPTS, phrases_per_concept, seed)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_oti(
    backbone: Backbone,
    steps: int = 10,
    batch_size: int = 32,
    seed: int = 42,
    config: OTIConfig | None = None,
    warmup: bool = True,
    full_steps: int = 350,
) -> OTIBenchResult:
    """Time the project's OTI and the reference recipe on the same batch for ``steps`` steps.

    Args:
        backbone: the frozen CLIP (a random-weights ``ViT-B-32`` is fine: speed does not depend on weights).
        steps: optimisation steps of both runs.
        batch_size: images optimised together (32 in the paper).
        seed: seed of both runs (same draws).
        config: OTI hyper-parameters (``steps`` is overridden); the paper's by default.
        warmup: one untimed step of each first (allocator, kernels, ``torch.compile`` if any).
        full_steps: steps of a real run (the paper's 350), to turn the timings into images/s.
    """
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
    # A fresh phrase cache: encoding the batch's plain phrases is part of the project's cost.
    ours = oti(backbone, feats, concepts, bank, config, seed=seed, phrase_cache=PhraseFeatureCache(backbone)).tokens
    _sync(device)
    ours_s = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    # images/s of a full OTI run (``full_steps`` steps per image), projected from the timed steps.
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
    """OTI of the same images at each batch size: seconds, images/s and the final losses.

    A batch size changes which seeded draws an image gets, not what each image's update computes
    (its loss alone moves its token; Adam removes the batch mean's 1/B), so the final losses of the
    rows should agree up to the draws' noise while the time does not.

    Returns:
        One dict per size: ``batch_size``, ``seconds``, ``images_per_s``, ``cos`` and ``total`` (the
        last step's losses, averaged over images).
    """
    rows = []
    for size in sizes:
        batches: list[InvertedBatch] = []
        start = time.perf_counter()
        invert_images(
            backbone, features, names, concepts, phrase_bank, config, size, seed, False, on_batch=batches.append
        )
        seconds = time.perf_counter() - start
        # per-batch means of the last step, weighted back to per-image means
        last = {
            key: sum(b.result.history[key][-1] * len(b.names) for b in batches) / len(names) for key in ("cos", "total")
        }
        rows.append({"batch_size": size, "seconds": seconds, "images_per_s": len(names) / seconds, **last})
    return rows


# ---- gallery features and retrieval ---------------------------------------------------------
def write_bench_images(folder, n: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> list:
    """``n`` random JPEGs of ImageNet's typical size, so decoding and resizing cost what they cost."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

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
    """Images/s of :func:`~searle_core.datasets.features.image_features` from JPEG files, per
    data-loader worker count (decoding + targetpad + the image tower)."""

    out = {}
    with torch.no_grad():  # warm-up: first-call allocations should not count against workers=0
        backbone.model.encode_image(torch.zeros(1, 3, backbone.image_size, backbone.image_size, device=backbone.device))
    for w in workers:
        # A new source each time: features.py remembers features per source object within a process.
        source = ImageFolderSource(folder)
        configured = configure_images(backbone, preprocess, w)
        _sync(backbone.device)
        start = time.perf_counter()
        image_features(configured, source, source.names, batch_size=batch_size, progress=False, cache=False)
        _sync(backbone.device)
        out[w] = len(source.names) / (time.perf_counter() - start)
    return out


def bench_retrieval(
    gallery_size: int = 120_000, queries: int = 800, dim: int = 512, k: int = 50, seed: int = 0
) -> dict[str, float]:
    """Seconds and queries/s of ranking ``queries`` against a synthetic gallery of ``gallery_size``
    normalised features (CIRCO's gallery has about 120k images), top-``k`` names per query."""

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
