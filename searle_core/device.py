"""One place that decides where tensors live and which precision runs there.

Everything in the package takes a ``device`` argument ("auto", "cpu", "cuda", "cuda:1", ...) and
resolves it here, so no module scatters ``.cuda()`` calls.
"""

from __future__ import annotations

import contextlib

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn a user's device choice into a ``torch.device``.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), a device string or a device.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} was requested but CUDA is not available on this machine; "
                           "pass --device cpu (or 'auto').")
    return device


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision on CUDA (bf16 where supported, else fp16); full fp32 on CPU.

    CPU autocast would change numbers without making these small matmuls faster, and exactness
    tests run on CPU, so it stays off there.
    """
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def needs_grad_scaler(device: torch.device) -> bool:
    """fp16 autocast needs a loss scaler; bf16 and fp32 do not."""
    return device.type == "cuda" and not torch.cuda.is_bf16_supported()
