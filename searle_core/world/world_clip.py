"""``shapes-clip``: the ``shapes`` world's small CLIP, trained by the project.

An open_clip ``CLIP`` from ``model_configs/shapes-clip.json``: open_clip's ``ModifiedResNet`` image tower
with one block per stage on 32×32 images, and a causal text tower over CLIP's real BPE vocabulary (so
``$`` is token 259 as in the real models), trained contrastively on freshly rendered images with grammar
captions. Weights are cached under ``data/cache/world_clip`` keyed by everything that determines them;
the package ships both recipes' weights (``shipped_weights``), so it trains only for another recipe.
Why the recipe is what it is (the convolutional tower, hard negatives, steps): ``docs/shapes-world.md``.
How good it is: zero-shot classification of held-out renders among every attribute combination
(``searle world build``, ``searle bench world``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from searle_core.clip.weights import InMemoryWeights
from searle_core.infra.cache import save_or_warn
from searle_core.infra.files import atomic_save, atomic_write_text
from searle_core.infra.paths import data_dir
from searle_core.method.encoding import encode_text
from searle_core.world.attributes import ATTRIBUTES, VALUES, WORLD_VERSION, all_combos, decode
from searle_core.world.grammar import caption_for, describe, training_vocabulary
from searle_core.world.render import render_codes
from searle_core.world.shapes_world import ShapesWorld, WorldConfig, images_to_tensor, random_codes, random_jitter
from searle_core.world.shipped_weights import STORAGE, finalise, read_shipped

WORLD_BACKBONE = "shapes-clip"


@dataclass(frozen=True)
class WorldCLIPConfig:
    """How the world CLIP is trained: AdamW with a linear warm-up then a cosine schedule, one freshly
    rendered batch a step. Groups of ``group_size`` images differ from the first in exactly one attribute
    each (hard negatives; 1: independent images); ``full_caption_p`` of captions state every attribute."""

    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 30
    seed: int = 0  # initialisation and the training stream
    world: WorldConfig = field(default_factory=WorldConfig)
    group_size: int = 5
    full_caption_p: float = 0.3

    @classmethod
    def quick(cls) -> WorldCLIPConfig:
        """Fewer steps on the smaller world, for CI (87.5 % zero-shot)."""
        return cls(steps=420, world=WorldConfig.quick())

    def cache_key(self) -> str:
        model, version = open_clip.get_model_config(WORLD_BACKBONE), open_clip.__version__
        payload = {"train": asdict(self), "model": model, "world_version": WORLD_VERSION, "open_clip": version}
        payload = json.dumps({**payload, "stored": STORAGE}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def mentioned_attributes(caption: str) -> dict[str, str]:
    """The attribute values a grammar caption states ("a red shape" states only the colour)."""
    words = set(caption.split())
    return {a: v for a, values in VALUES.items() for v in values if v in words}


def caption_matches(captions: list[str], codes: np.ndarray) -> torch.Tensor:
    """(N, N) bool: caption j is true of image i (image i has every value caption j states)."""
    attrs = [decode(row) for row in codes]
    stated = [mentioned_attributes(c) for c in captions]
    return torch.tensor([[all(a[k] == v for k, v in s.items()) for s in stated] for a in attrs])


def multi_positive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, matches: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """CLIP's symmetric loss with every true caption of an image a positive: a caption naming only the
    colour is true of every image of that colour, which plain InfoNCE would push apart."""
    logits = logit_scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    target = matches.float()
    i2t = -(target / target.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    t2i = -(target.T / target.T.sum(1, keepdim=True) * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (i2t + t2i) / 2


def training_batch(
    world: ShapesWorld, config: WorldCLIPConfig, rng: np.random.Generator
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Images, captions and codes of one batch; groups of ``config.group_size`` images share all attributes
    but one (another for each member), so pairs differ only in the changed attribute."""
    n, g = config.batch_size, max(1, config.group_size)
    base = random_codes(rng, -(-n // g))
    codes = np.repeat(base, g, axis=0)[:n].copy()
    sizes = np.array([len(VALUES[a]) for a in ATTRIBUTES])
    member = np.arange(n) % g
    changed = (member - 1 + rng.integers(len(ATTRIBUTES), size=n // g + 1).repeat(g)[:n]) % len(ATTRIBUTES)
    for i in np.flatnonzero(member > 0):
        a = changed[i]
        codes[i, a] = (codes[i, a] + rng.integers(1, sizes[a])) % sizes[a]
    images = render_codes(codes, random_jitter(rng, n), world.config)
    include = np.where(rng.random(n) < config.full_caption_p, 1.0, None)
    captions = [
        describe(decode(row), rng) if p is None else describe(decode(row), rng, include_p=1.0)
        for row, p in zip(codes, include)
    ]
    return images, captions, codes


class _CompactEmbedding(torch.nn.Module):
    """The token-table rows the captions use (about 40 of 49,408), trained in place of the table, whose
    dense AdamW update would cost more than the rest of a step. Ids map to compact rows in sorted order,
    so end-of-text keeps the largest id (EOT pooling still finds it)."""

    def __init__(self, table: torch.nn.Embedding, ids: list[int]) -> None:
        super().__init__()
        self.ids = torch.tensor(sorted(set(ids)))
        self.lookup = torch.zeros(table.num_embeddings, dtype=torch.long)
        self.lookup[self.ids] = torch.arange(len(self.ids))
        self.weight = torch.nn.Parameter(table.weight.detach()[self.ids].clone())

    def compact(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lookup[tokens]

    def forward(self, compact_tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(compact_tokens, self.weight)


def trained_token_ids(tokenizer=None) -> list[int]:
    """Token ids any training caption can contain, the token-table rows training updates: the words,
    start/end of text and padding."""
    tokenizer, ids = open_clip.get_tokenizer(WORLD_BACKBONE) if tokenizer is None else tokenizer, {0}
    for row in tokenizer([" ".join(training_vocabulary())]).tolist():
        ids.update(row)
    for word in training_vocabulary():  # a word may tokenize differently alone than in a sentence
        ids.update(tokenizer([word])[0].tolist())
    return sorted(ids)


class _quiet_random_init(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded" warning (on the root logger, red in a notebook)
    while the world CLIP is built from scratch, where random initialisation is the point."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()

    def __enter__(self):
        logging.getLogger().addFilter(self)

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeFilter(self)


def train_world_clip(config: WorldCLIPConfig = WorldCLIPConfig(), progress: bool = True) -> tuple[dict, dict]:
    """Train the world CLIP from scratch: ``(state_dict, log)`` with per-step losses and the time."""
    torch.manual_seed(config.seed)
    with _quiet_random_init():
        model = open_clip.create_model(WORLD_BACKBONE, pretrained=None)
    model.train()
    world = ShapesWorld(config.world)
    mean, std = model.visual.preprocess_cfg["mean"], model.visual.preprocess_cfg["std"]
    tokenizer, full_table = open_clip.get_tokenizer(WORLD_BACKBONE), model.token_embedding
    model.token_embedding = compact = _CompactEmbedding(full_table, trained_token_ids(tokenizer))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        t = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.5 * config.lr * (1 + math.cos(math.pi * t))

    rng = np.random.default_rng([config.seed, 1234])
    losses, start = [], time.perf_counter()
    bar = tqdm(range(config.steps), desc="training shapes-clip", disable=not progress)
    for step in bar:
        images, captions, codes = training_batch(world, config, rng)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        image_features = model.encode_image(images_to_tensor(images, mean, std))
        text_features = encode_text(model, compact.compact(tokenizer(captions)))
        matches = caption_matches(captions, codes)
        loss = multi_positive_loss(image_features, text_features, matches, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - start
    with torch.no_grad():
        full_table.weight[compact.ids] = compact.weight
    model.token_embedding = full_table
    log = {"losses": losses, "seconds": seconds, "threads": torch.get_num_threads(), "config": asdict(config)}
    return model.state_dict(), log


def world_clip_weights(
    cache_dir=None, quick=False, config: WorldCLIPConfig | None = None, progress=True, use_shipped=True
) -> Path | InMemoryWeights:
    """The world CLIP's weights (``config``, else the quick or full recipe) in ``cache_dir`` (default
    ``data/cache/world_clip``): the cached file, else the shipped weights of this recipe (unless
    ``use_shipped`` is off, as when a maintainer retrains them), else trained here, then cached. Where the
    cache cannot be written (a warning, as for every cache) the weights in memory: the run goes on."""
    config = config or (WorldCLIPConfig.quick() if quick else WorldCLIPConfig())
    folder = Path(cache_dir) if cache_dir else data_dir() / "cache" / "world_clip"
    path = folder / f"{WORLD_BACKBONE}-{config.cache_key()}.pt"
    if not path.is_file():
        shipped = read_shipped(config.cache_key()) if use_shipped else None
        if shipped is not None:
            state, log = shipped[0], {**shipped[1], "shipped": True}
        else:
            print(
                f"Training the world CLIP ({WORLD_BACKBONE}, {config.steps} steps) once; it is cached in {folder}.",
                flush=True,
            )
            state, log = train_world_clip(config, progress=progress)
            state = finalise(state, trained_token_ids(), config.seed)  # stored as shipped weights are
        if not save_or_warn(lambda: atomic_save(state, path), path, "world CLIP weights"):
            return InMemoryWeights(f"{path.name} (not cached, {_digest(state)})", state, log)
        log_path = path.with_suffix(".json")
        save_or_warn(lambda: atomic_write_text(json.dumps(log), log_path), log_path, "world CLIP training log")
    return path


def _digest(state: dict[str, torch.Tensor]) -> str:
    """A short hash of a state dict's tensors, naming weights that exist in memory only."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def zero_shot_report(backbone, world: ShapesWorld, names: list[str], batch_size: int = 1024) -> dict[str, float]:
    """``{"total", <attribute>..., "images"}``: the % of ``names`` whose best-scoring full caption among all
    combinations is their own (total), and per attribute the % whose best combination has their value."""
    combos = np.array(all_combos())
    captions = [caption_for(decode(c)) for c in combos]
    text = F.normalize(encode_text(backbone.model, backbone.tokenize(captions)).float(), dim=-1)
    cfg = backbone.model.visual.preprocess_cfg
    predicted = []
    for start in range(0, len(names), batch_size):
        pixels = images_to_tensor(
            world.array(names[start : start + batch_size]), cfg["mean"], cfg["std"], backbone.device
        )
        image = F.normalize(backbone.model.encode_image(pixels).float(), dim=-1)
        predicted.append((image @ text.T).argmax(dim=1).cpu().numpy())
    guess, truth = combos[np.concatenate(predicted)], world.codes(names)
    report = {"total": 100.0 * float((guess == truth).all(axis=1).mean())}
    report.update({a: 100.0 * float((guess[:, i] == truth[:, i]).mean()) for i, a in enumerate(ATTRIBUTES)})
    report["images"] = len(names)
    return report


def held_out_names(world: ShapesWorld) -> list[str]:
    """Renders the world CLIP never trained on, every combination balanced: both splits' galleries."""
    return world.gallery_names("val") + world.gallery_names("test")


def training_log(weights) -> dict | None:
    """The log written beside cached weights (losses, seconds, threads, config), if any."""
    path = Path(weights).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else None


def format_report(report: dict[str, float], log: dict | None = None) -> str:
    """The zero-shot table (total and per attribute) and the training time, as printed by the CLI."""
    cells = " | ".join(f"{a} {report[a]:.1f}" for a in ATTRIBUTES)
    lines = [
        f"zero-shot accuracy over all {len(all_combos())} attribute combinations, {report['images']} held-out "
        f"renders: {report['total']:.1f} %  ({cells})"
    ]
    if log:
        steps, batch = log["config"]["steps"], log["config"]["batch_size"]
        lines.append(
            f"{'shipped weights, ' if log.get('shipped') else ''}trained in {log['seconds']:.0f} s "
            f"({steps} steps of {batch}, {log.get('threads', '?')} torch threads; "
            f"final loss {np.mean(log['losses'][-20:]):.3f})"
        )
    return "\n".join(lines)
