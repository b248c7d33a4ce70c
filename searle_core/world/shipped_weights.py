"""The world CLIP's weights as the package ships them: trained once by a maintainer (``make
world-weights``), read on first use instead of training for minutes on every machine.

Why ship them: training the default world CLIP takes about three minutes on 2 CPU cores, more than a
third of ``make run``, and training it on two machines gave two slightly different CLIPs (about a
point of mAP apart on the world's tables); a shipped file gives every machine the same model, so
the README's numbers are the ones a user gets. ``world_clip.world_clip_weights`` still trains when
no shipped file matches the recipe (another config, another open_clip version): the key is the
recipe's ``cache_key``.

What is stored, to keep the files small (about 4 MB each): every tensor in half precision, and of
the 49,408-row token table only the rows the captions train (the world's words, start and end of
text); the other rows are never trained, so they are drawn again from a seeded generator.
:func:`finalise` applies the same two steps to freshly trained weights, so a model trained here and
one expanded from the shipped file are the same tensors.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

#: Folder of the shipped files, inside the package (package data).
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
#: The storage recipe; part of the weights' cache key, so weights stored otherwise are never mixed up.
STORAGE = "fp16, untrained token rows redrawn (v1)"
TOKEN_TABLE = "token_embedding.weight"
#: Standard deviation of the redrawn rows: open_clip's own initialisation of the token table.
ROW_STD = 0.02


def untrained_rows(shape: tuple[int, int], seed: int) -> torch.Tensor:
    """The values every untrained row of the token table takes (seeded, independent of training)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator) * ROW_STD).half().float()


def finalise(state: dict[str, torch.Tensor], trained_ids: list[int], seed: int) -> dict[str, torch.Tensor]:
    """Trained weights as stored: floats rounded to half precision (kept as float32 tensors), and the
    token table's untrained rows replaced by :func:`untrained_rows`. Applying it twice changes nothing.

    Args:
        state: the model's state dict.
        trained_ids: the token ids whose rows training updated.
        seed: the recipe's seed (seeds the redrawn rows).
    """
    out = {k: v.half().float() if v.is_floating_point() else v.clone() for k, v in state.items()}
    table = out[TOKEN_TABLE]
    trained = torch.zeros(len(table), dtype=torch.bool)
    trained[torch.as_tensor(trained_ids)] = True
    out[TOKEN_TABLE] = torch.where(trained[:, None], table, untrained_rows(tuple(table.shape), seed))
    return out


def pack(state: dict[str, torch.Tensor], trained_ids: list[int], seed: int, log: dict) -> dict:
    """The shipped form of (finalised) weights: half-precision tensors, the trained token rows only,
    and the training log (losses, seconds, config) that ``searle bench world`` reports."""
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
    """The full state dict (float32) and training log of a :func:`pack` result."""
    if packed.get("storage") != STORAGE:
        raise ValueError(f"shipped world-CLIP weights stored as {packed.get('storage')!r}, expected {STORAGE!r}")
    state = {k: v.float() if v.is_floating_point() else v for k, v in packed["state"].items()}
    table = untrained_rows(tuple(packed["table_shape"]), packed["seed"])
    table[packed["token_ids"]] = packed["token_rows"].float()
    state[TOKEN_TABLE] = table
    return state, packed["log"]


def shipped_path(key: str, folder: str | os.PathLike = SHIPPED_DIR) -> Path:
    """Where the shipped weights of the recipe with cache key ``key`` are (or would be)."""
    return Path(folder) / f"shapes-clip-{key}.pt"


def read_shipped(key: str, folder: str | os.PathLike = SHIPPED_DIR) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The shipped weights and training log of the recipe ``key``, or ``None`` if none is shipped."""
    path = shipped_path(key, folder)
    if not path.is_file():
        return None
    return expand(torch.load(path, map_location="cpu", weights_only=True))
