"""One place that decides where tensors live and which precision runs there.

Everything in the package takes a ``device`` argument ("auto", "cpu", "cuda", "cuda:1", ...) and
resolves it here, so no module scatters ``.cuda()`` calls.

Precision follows the authors' code: evaluation (image and text features, rankings) runs in full
fp32 with no autocast; training (OTI, φ, the baselines' networks) runs under fp16 autocast with a
``GradScaler`` on CUDA. ``bf16`` is an option (no scaler needed); the CPU trains in fp32 unless a
precision is asked for explicitly.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

from searle_core.infra.errors import InputError

#: Training precisions: ``auto`` (fp16 on CUDA, fp32 on CPU, as the authors), or one named.
Precision = Literal["auto", "fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")
#: Evaluation always runs in fp32 (the authors cast features with ``.float()`` and use no autocast).
EVAL_PRECISION = "fp32"

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn a user's device choice into a ``torch.device``.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), a device string or a device.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"device {device} was requested but CUDA is not available on this machine; pass --device cpu (or 'auto')."
        )
    return device


def eval_precision(device: torch.device | str):
    """Full fp32 for evaluation: turns off any autocast a caller left on (features are compared
    across methods and with the authors' numbers, so they never depend on the caller's context)."""
    return torch.autocast(device_type=torch.device(device).type, enabled=False)


def training_precision(device: torch.device | str, precision: str = "auto") -> str:
    """The precision training runs in: ``fp32``, ``fp16`` or ``bf16``.

    Args:
        device: where training runs.
        precision: ``auto`` (CUDA: fp16, the authors' choice; CPU: fp32) or one of
            ``fp32``/``fp16``/``bf16``.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "fp16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def train_autocast(device: torch.device, precision: str = "auto"):
    """The autocast context of a training step (a no-op in fp32).

    Args:
        device: where the step runs.
        precision: see :func:`training_precision`.
    """
    resolved = training_precision(device, precision)
    if resolved == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[resolved])


def grad_scaler(device: torch.device, precision: str = "auto") -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 training on CUDA (the authors' ``GradScaler``); ``None`` otherwise
    (bf16 and fp32 have fp32's exponent range and need none)."""
    device = torch.device(device)
    if training_precision(device, precision) == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def scaled_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler) -> None:
    """Backward and optimiser step, through ``scaler`` when there is one."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
