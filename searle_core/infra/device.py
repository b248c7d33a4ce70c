"""Where tensors live and which precision runs there. As the authors' code, evaluation runs in fp32 with no
autocast, training under fp16 autocast with a ``GradScaler`` on CUDA (bf16 on request), in fp32 on CPU."""

from __future__ import annotations

import contextlib

import torch

from searle_core.infra.errors import InputError

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")
EVAL_PRECISION = "fp32"
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """A user's device choice as a ``torch.device`` (``auto``: CUDA when available, else CPU)."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"device {device} was requested but CUDA is not available on this machine; pass --device cpu (or 'auto')."
        )
    return device


def eval_precision(device: torch.device | str):
    """Full fp32 for evaluation: turns off any autocast a caller left on (features are compared across methods
    and with the authors' numbers)."""
    return torch.autocast(device_type=torch.device(device).type, enabled=False)


def training_precision(device: torch.device | str, precision: str = "auto") -> str:
    """The precision training runs in (``auto``: fp16 on CUDA, the authors' choice; fp32 on CPU)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "fp16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def train_autocast(device: torch.device, precision: str = "auto"):
    resolved = training_precision(device, precision)
    if resolved == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[resolved])


def grad_scaler(device: torch.device, precision: str = "auto") -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 training on CUDA (the authors' ``GradScaler``); bf16 and fp32 need none."""
    device = torch.device(device)
    if training_precision(device, precision) == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def scaled_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler) -> None:
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
