"""The world CLIP's weights as the package ships them (``make world-weights``), read on first use so
every machine gets the same model without minutes of training; a recipe with no shipped file (another
``cache_key``) is trained instead. Files stay small (4 MB): half precision, and of the token table only
the rows captions train, the others redrawn from a seeded generator. :func:`finalise` applies both
steps to freshly trained weights, so trained and expanded weights are the same tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch

SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
#: The storage recipe; part of the weights' cache key, so weights stored otherwise are never mixed up.
STORAGE = "fp16, untrained token rows redrawn (v1)"
TOKEN_TABLE = "token_embedding.weight"
ROW_STD = 0.02  # open_clip's own initialisation of the token table


def untrained_rows(shape: tuple[int, int], seed: int) -> torch.Tensor:
    """The values every untrained row of the token table takes (seeded, independent of training)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator) * ROW_STD).half().float()


def finalise(state: dict[str, torch.Tensor], trained_ids: list[int], seed: int) -> dict[str, torch.Tensor]:
    """Weights as stored: floats rounded to half precision (kept float32) and the token table's rows
    outside ``trained_ids`` replaced by :func:`untrained_rows` of the recipe's ``seed``. Idempotent."""
    out = {k: v.half().float() if v.is_floating_point() else v.clone() for k, v in state.items()}
    table = out[TOKEN_TABLE]
    trained = torch.zeros(len(table), dtype=torch.bool)
    trained[torch.as_tensor(trained_ids)] = True
    out[TOKEN_TABLE] = torch.where(trained[:, None], table, untrained_rows(tuple(table.shape), seed))
    return out


def pack(state: dict[str, torch.Tensor], trained_ids: list[int], seed: int, log: dict) -> dict:
    """The shipped form: half-precision tensors, the trained token rows only, and the training log
    (losses, seconds, config) that ``searle bench world`` reports."""
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
    state[TOKEN_TABLE] = table
    return state, packed["log"]


def shipped_path(key: str, folder: Path = SHIPPED_DIR) -> Path:
    """Where the shipped weights of the recipe with cache key ``key`` are (or would be)."""
    return Path(folder) / f"shapes-clip-{key}.pt"


def read_shipped(key: str, folder: Path = SHIPPED_DIR) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The shipped weights and training log of the recipe ``key``, or ``None`` if none is shipped."""
    path = shipped_path(key, folder)
    return expand(torch.load(path, map_location="cpu", weights_only=True)) if path.is_file() else None
