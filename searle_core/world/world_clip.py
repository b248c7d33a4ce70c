"""``shapes-clip``: the world's small CLIP (open_clip's ``ModifiedResNet`` on 32×32 images, a text tower over
CLIP's real BPE vocabulary, so ``$`` is token 259), trained contrastively on fresh renders with grammar captions,
cached by everything that determines it; both recipes' weights are shipped. Why: ``docs/shapes-world.md``."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from searle_core.clip.backbone import InMemoryWeights, quiet_log, state_digest
from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_save, atomic_write_text, save_or_warn, sha256_of
from searle_core.infra.paths import data_dir
from searle_core.method.encoding import encode_text
from searle_core.world.attributes import ATTRIBUTES, VALUES, WORLD_VERSION, all_combos, decode
from searle_core.world.grammar import INCLUDE_P, caption_for, describe, training_vocabulary
from searle_core.world.render import render_codes
from searle_core.world.shapes_world import ShapesWorld, WorldConfig, images_to_tensor, random_codes, random_jitter

WORLD_BACKBONE = "shapes-clip"
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
#: How weights are stored (shipped and cached); part of the cache key, so weights stored otherwise never mix.
STORAGE = "fp16, untrained token rows redrawn (v1)"
TOKEN_TABLE = "token_embedding.weight"
ROW_STD = 0.02  # open_clip's own initialisation of the token table


@dataclass(frozen=True)
class WorldCLIPConfig:
    """The world CLIP's recipe: AdamW, linear warm-up then cosine, one fresh batch a step; groups of
    ``group_size`` images differ from the first in one attribute each (hard negatives)."""

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
        """Fewer steps on the smaller world, for CI."""
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
    """CLIP's symmetric loss with every true caption a positive (a caption naming only the colour is true of
    every image of that colour, which plain InfoNCE would push apart)."""
    logits = logit_scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    target = matches.float()
    i2t = -(target / target.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    t2i = -(target.T / target.T.sum(1, keepdim=True) * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (i2t + t2i) / 2


def training_batch(
    world: ShapesWorld, config: WorldCLIPConfig, rng: np.random.Generator
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Images, captions and codes of one batch, in groups that share all attributes but one (each its own)."""
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
    full = rng.random(n) < config.full_caption_p
    captions = [describe(decode(row), rng, 1.0 if f else INCLUDE_P) for row, f in zip(codes, full)]
    return images, captions, codes


class _CompactEmbedding(torch.nn.Module):
    """The token-table rows captions use (about 40 of 49,408), trained in place of the table, whose dense
    AdamW update would cost more than the rest of a step; sorted, so end-of-text keeps the largest id."""

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
    """Token ids any training caption can contain (the rows training updates), padding included."""
    tokenizer = open_clip.get_tokenizer(WORLD_BACKBONE) if tokenizer is None else tokenizer
    words = training_vocabulary()
    # a word may tokenize differently alone than in a sentence
    return sorted({0}.union(*tokenizer([" ".join(words)]).tolist(), *tokenizer(words).tolist()))


def train_world_clip(config: WorldCLIPConfig = WorldCLIPConfig(), progress: bool = True) -> tuple[dict, dict]:
    """Train the world CLIP from scratch: ``(state_dict, log)`` with per-step losses and the time."""
    torch.manual_seed(config.seed)
    with quiet_log("No pretrained weights loaded"):
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


# Weights are stored small: half precision, and of the token table only the trained rows, the others redrawn.
def untrained_rows(shape: tuple[int, int], seed: int) -> torch.Tensor:
    """The values every untrained row of the token table takes (seeded, independent of training)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator) * ROW_STD).half().float()


def finalise(state: dict[str, torch.Tensor], trained_ids: list[int], seed: int) -> dict[str, torch.Tensor]:
    """Weights as stored: floats rounded to half precision (kept float32), the token table's rows outside
    ``trained_ids`` replaced by :func:`untrained_rows` of ``seed``. Idempotent."""
    out = {k: v.half().float() if v.is_floating_point() else v.clone() for k, v in state.items()}
    table = out[TOKEN_TABLE]
    trained = torch.zeros(len(table), dtype=torch.bool)
    trained[torch.as_tensor(trained_ids)] = True
    out[TOKEN_TABLE] = torch.where(trained[:, None], table, untrained_rows(tuple(table.shape), seed))
    return out


def pack(state: dict[str, torch.Tensor], trained_ids: list[int], seed: int, log: dict) -> dict:
    """The shipped form: half-precision tensors, the trained token rows only, and the training log."""
    state = finalise(state, trained_ids, seed)
    ids = torch.as_tensor(sorted(set(trained_ids)))
    return {
        "storage": STORAGE,
        "seed": seed,
        "table_shape": list(state[TOKEN_TABLE].shape),
        "token_ids": ids,
        "token_rows": state[TOKEN_TABLE][ids].half(),
        "state": {k: v.half() if v.is_floating_point() else v for k, v in state.items() if k != TOKEN_TABLE},
        "log": log,
    }


def expand(packed: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """The full float32 state dict and training log of a :func:`pack` result."""
    if packed.get("storage") != STORAGE:
        raise ValueError(f"shipped world-CLIP weights stored as {packed.get('storage')!r}, expected {STORAGE!r}")
    state = {k: v.float() if v.is_floating_point() else v for k, v in packed["state"].items()}
    table = untrained_rows(tuple(packed["table_shape"]), packed["seed"])
    table[packed["token_ids"]] = packed["token_rows"].float()
    return {**state, TOKEN_TABLE: table}, packed["log"]


def shipped_path(key: str) -> Path:
    """Where the shipped weights of the recipe ``key`` are (or would be)."""
    return SHIPPED_DIR / f"{WORLD_BACKBONE}-{key}.pt"


def shipped_sha256() -> dict[str, str]:
    """File name -> the SHA-256 recorded when the weights were shipped (``weights/SHA256SUMS``)."""
    sums = SHIPPED_DIR / "SHA256SUMS"
    return {n: h for h, n in (line.split() for line in sums.read_text().splitlines())} if sums.is_file() else {}


def read_shipped(key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The shipped weights and training log of the recipe ``key`` once their SHA-256 matches the one recorded
    (flipped bits would change every number silently), or ``None`` if none is shipped."""
    if not (path := shipped_path(key)).is_file():
        return None
    if (actual := sha256_of(path)) != (recorded := shipped_sha256().get(path.name)):
        raise InputError(
            f"{path}: the shipped world CLIP weights are damaged (SHA-256 {actual[:16]}..., recorded "
            f"{str(recorded)[:16]}... in SHA256SUMS); restore the file (git checkout, or reinstall the package)"
        )
    return expand(torch.load(path, map_location="cpu", weights_only=True))


def world_clip_weights(
    cache_dir=None, quick=False, config: WorldCLIPConfig | None = None, progress=True, use_shipped=True
) -> Path | InMemoryWeights:
    """The world CLIP's weights (``config``, else the quick or full recipe) under ``cache_dir``: cached, else
    shipped (unless ``use_shipped`` is off), else trained here; in memory where the cache cannot be written."""
    config = config or (WorldCLIPConfig.quick() if quick else WorldCLIPConfig())
    folder = Path(cache_dir) if cache_dir else data_dir() / "cache" / "world_clip"
    path, recorded = folder / f"{WORLD_BACKBONE}-{config.cache_key()}.pt", shipped_sha256()
    # Weights from a shipped file are cached under its content: another shipped file rebuilds the cache entry.
    sha = recorded.get(shipped_path(config.cache_key()).name) if use_shipped else None
    if stale := path.is_file() and sha and (training_log(path) or {}).get("shipped") not in (None, sha):
        print(f"{path}: cached from other shipped weights than {sha[:16]}...; rebuilding it", flush=True)
    if stale or not path.is_file():
        shipped = read_shipped(config.cache_key()) if use_shipped else None
        if shipped is not None:
            state, log = shipped[0], {**shipped[1], "shipped": sha}
        else:
            note = f"Training the world CLIP ({WORLD_BACKBONE}, {config.steps} steps) once; it is cached in {folder}."
            print(note, flush=True)
            state, log = train_world_clip(config, progress=progress)
            state = finalise(state, trained_token_ids(), config.seed)  # stored as shipped weights are
        if not save_or_warn(lambda: atomic_save(state, path), path, "world CLIP weights"):
            return InMemoryWeights(f"{path.name} (not cached, {state_digest(state)})", state)
        log_path = path.with_suffix(".json")
        save_or_warn(lambda: atomic_write_text(json.dumps(log), log_path), log_path, "world CLIP training log")
    return path


@torch.no_grad()
def zero_shot_report(backbone, world: ShapesWorld, names: list[str], batch_size: int = 1024) -> dict[str, float]:
    """The % of ``names`` whose best full caption among all combinations is their own (``total``), per
    attribute the % whose best combination has their value, and ``images``."""
    combos = np.array(all_combos())
    captions = [caption_for(decode(c)) for c in combos]
    text = F.normalize(encode_text(backbone.model, backbone.tokenize(captions)).float(), dim=-1)
    cfg = backbone.model.visual.preprocess_cfg
    predicted = []
    for start in range(0, len(names), batch_size):
        chunk = world.array(names[start : start + batch_size])
        pixels = images_to_tensor(chunk, cfg["mean"], cfg["std"], backbone.device)
        image = F.normalize(backbone.model.encode_image(pixels).float(), dim=-1)
        predicted.append((image @ text.T).argmax(dim=1).cpu().numpy())
    guess, truth = combos[np.concatenate(predicted)], world.codes(names)
    report = {"total": 100.0 * float((guess == truth).all(axis=1).mean())}
    report.update({a: 100.0 * float((guess[:, i] == truth[:, i]).mean()) for i, a in enumerate(ATTRIBUTES)})
    return {**report, "images": len(names)}


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
