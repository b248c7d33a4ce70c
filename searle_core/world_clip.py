"""``shapes-clip``: the small CLIP of the ``shapes`` world, trained by the project.

An open_clip ``CLIP`` built from ``model_configs/shapes-clip.json`` (ViT on 32×32 images, causal
text transformer over CLIP's real BPE vocabulary, so ``$`` is token 259 as in the real models),
trained contrastively on freshly rendered world images with captions from the world's grammar.
Weights are cached under ``data/cache/world_clip`` keyed by everything that determines them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .datasets.shapes import VALUES, ShapesWorld, WorldConfig, all_combos, caption_for
from .datasets.shapes.world import WORLD_VERSION, decode
from .paths import cache_dir as project_cache_dir
from .text_encoding import encode_text

WORLD_BACKBONE = "shapes-clip"


@dataclass(frozen=True)
class WorldCLIPConfig:
    """How the world CLIP is trained.

    Args:
        steps: optimiser steps (one freshly rendered batch each).
        batch_size: image-caption pairs per step.
        lr: peak AdamW learning rate (cosine schedule after a linear warm-up).
        weight_decay: AdamW weight decay.
        warmup: warm-up steps.
        seed: seeds initialisation and the training stream.
        world: the world the images come from.
    """

    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 30
    seed: int = 0
    world: WorldConfig = field(default_factory=WorldConfig)

    @classmethod
    def quick(cls) -> "WorldCLIPConfig":
        """Fewer steps, for CI: still well above chance, trained in about a minute."""
        return cls(steps=250, world=WorldConfig.quick())

    def cache_key(self) -> str:
        model_cfg = open_clip.get_model_config(WORLD_BACKBONE)
        payload = json.dumps({"train": asdict(self), "model": model_cfg, "world_version": WORLD_VERSION,
                              "open_clip": open_clip.__version__}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def images_to_tensor(images: np.ndarray, mean, std, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, H, W, 3) uint8 -> normalised (N, 3, H, W) float, like CLIP's ToTensor + Normalize."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def mentioned_attributes(caption: str) -> dict[str, str]:
    """The attribute values a grammar caption states ("a red shape" states only the colour)."""
    words = set(caption.split())
    return {a: v for a, values in VALUES.items() for v in values if v in words}


def caption_matches(captions: list[str], codes: np.ndarray) -> torch.Tensor:
    """(N, N) bool: caption j is true of image i (image i has every value caption j states)."""
    attrs = [decode(row) for row in codes]
    stated = [mentioned_attributes(c) for c in captions]
    return torch.tensor([[all(a[k] == v for k, v in s.items()) for s in stated] for a in attrs])


def multi_positive_loss(image_features: torch.Tensor, text_features: torch.Tensor, matches: torch.Tensor,
                        logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric loss where every true caption of an image is a positive.

    A caption that names only the colour is true of every image of that colour in the batch;
    treating those as negatives (plain InfoNCE) would push apart what the caption correctly
    describes, so the target distribution spreads over all matches instead.
    """
    logits = logit_scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    target = matches.float()
    i2t = -(target / target.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    t2i = -(target.T / target.T.sum(1, keepdim=True) * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (i2t + t2i) / 2


def train_world_clip(config: WorldCLIPConfig = WorldCLIPConfig(), progress: bool = True) -> tuple[dict, dict]:
    """Train the world CLIP from scratch.

    Returns:
        ``(state_dict, log)`` where ``log`` has per-step losses and the training time.
    """
    torch.manual_seed(config.seed)
    model = open_clip.create_model(WORLD_BACKBONE, pretrained=None)
    model.train()
    world = ShapesWorld(config.world)
    mean, std = model.visual.preprocess_cfg["mean"], model.visual.preprocess_cfg["std"]
    tokenizer = open_clip.get_tokenizer(WORLD_BACKBONE)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        t = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.5 * config.lr * (1 + math.cos(math.pi * t))

    rng = np.random.default_rng([config.seed, 1234])
    losses, start = [], time.perf_counter()
    bar = tqdm(range(config.steps), desc="training shapes-clip", disable=not progress)
    for step in bar:
        images, captions, codes = world.training_pairs(config.batch_size, rng, return_codes=True)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        image_features = model.encode_image(images_to_tensor(images, mean, std))
        text_features = encode_text(model, tokenizer(captions))
        loss = multi_positive_loss(image_features, text_features, caption_matches(captions, codes),
                                   model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    log = {"losses": losses, "seconds": time.perf_counter() - start, "config": asdict(config)}
    return model.state_dict(), log


def world_clip_weights(cache_dir: str | os.PathLike | None = None, quick: bool = False,
                       config: WorldCLIPConfig | None = None, progress: bool = True) -> Path:
    """Path of the trained world CLIP weights, training them on first use.

    Args:
        cache_dir: where weights are cached (default ``data/cache/world_clip``).
        quick: use :meth:`WorldCLIPConfig.quick` (CI-sized) instead of the full recipe.
        config: an explicit training config (overrides ``quick``).
        progress: progress bar while training.
    """
    config = config or (WorldCLIPConfig.quick() if quick else WorldCLIPConfig())
    folder = Path(cache_dir) if cache_dir else project_cache_dir("world_clip")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{WORLD_BACKBONE}-{config.cache_key()}.pt"
    if not path.is_file():
        state, log = train_world_clip(config, progress=progress)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # a killed run never leaves a half-written cache entry
        path.with_suffix(".json").write_text(json.dumps(log))
    return path


@torch.no_grad()
def zero_shot_accuracy(backbone, world: ShapesWorld, names: list[str]) -> float:
    """% of images whose full canonical caption, among all attribute combinations, scores highest."""
    combos = all_combos()
    captions = [caption_for(decode(c)) for c in combos]
    text = F.normalize(encode_text(backbone.model, backbone.tokenize(captions)), dim=-1)
    cfg = backbone.model.visual.preprocess_cfg
    image = backbone.model.encode_image(images_to_tensor(world.array(names), cfg["mean"], cfg["std"], backbone.device))
    predicted = (F.normalize(image, dim=-1) @ text.T).argmax(dim=1).cpu().numpy()
    truth = {c: i for i, c in enumerate(combos)}
    correct = [predicted[i] == truth[tuple(int(v) for v in row)] for i, row in enumerate(world.codes(names))]
    return 100.0 * float(np.mean(correct))
