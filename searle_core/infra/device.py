"""Where tensors live and which precision runs there. As the authors' code, evaluation runs in fp32 with no
autocast, training under fp16 autocast with a ``GradScaler`` on CUDA; on a CPU in bf16 where it pays, else fp32."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch

from searle_core.infra.errors import InputError

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")
EVAL_PRECISION = "fp32"
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
BF16_MIN_WIDTH = 512


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """A user's device choice as a ``torch.device`` (``auto``: CUDA when available, else CPU)."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device} was requested but CUDA is not available here; pass --device cpu (or auto).")
    return device


def set_threads(threads: int = 0) -> None:
    """Set torch's CPU threads; 0: ``OMP_NUM_THREADS`` where set (torchrun's 1 per process), else half the cores,
    at least 1 (torch's default, every core, collapses beside another process)."""
    omp = os.environ.get("OMP_NUM_THREADS", "")
    default = int(omp) if omp.isdigit() and int(omp) > 0 else max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads or default)


def eval_precision(device: torch.device | str):
    """Full fp32 for evaluation, whatever autocast a caller left on (features are compared across methods)."""
    return torch.autocast(device_type=torch.device(device).type, enabled=False)


@functools.cache
def native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16, AMX-BF16, Arm BF16): read from its flags, not assumed."""
    text = Path(cpuinfo).read_text() if os.path.isfile(cpuinfo) else ""
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(text.split()))


def training_precision(device: torch.device | str, precision: str = "auto", width: int | None = None) -> str:
    """The precision training runs in; ``auto``: fp16 on CUDA (the authors'), bf16 on a :func:`native_bf16` CPU
    for a text tower ``width`` >= ``BF16_MIN_WIDTH`` where it pays (docs/results.md), else fp32."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        wide = (width or 0) >= BF16_MIN_WIDTH and native_bf16()
        return "fp16" if torch.device(device).type == "cuda" else "bf16" if wide else "fp32"
    return precision


def train_autocast(device: torch.device, precision: str = "auto", width: int | None = None):
    dtype = _DTYPES.get(training_precision(device, precision, width))
    return torch.autocast(torch.device(device).type, dtype) if dtype else contextlib.nullcontext()


def grad_scaler(device: torch.device, precision: str = "auto") -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 training on CUDA (the authors' ``GradScaler``); bf16 and fp32 need none."""
    cuda_fp16 = torch.device(device).type == "cuda" and training_precision(device, precision) == "fp16"
    return torch.amp.GradScaler("cuda") if cuda_fp16 else None


def scaled_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler) -> None:
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
