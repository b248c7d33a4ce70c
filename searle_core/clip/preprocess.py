"""Image preprocessing: CLIP's, and SEARLE's ``targetpad`` (pad to a 1.25 aspect ratio first, so the crop keeps a
long image's ends); as the authors', RGB only after the crop (palette and RGBA files give other tensors otherwise)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import open_clip
import torch
import torchvision.transforms.functional as FT
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from searle_core.infra.errors import InputError

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
TARGET_RATIO = 1.25

PreprocessKind = Literal["clip", "targetpad"]


def to_rgb(image: Image.Image) -> Image.Image:
    """``image.convert("RGB")`` as the authors do: transparency dropped, 16-bit values clipped. The one
    conversion everywhere (model input after the crop, captioners, pictures), so all see the same colours."""
    return image if image.mode == "RGB" else image.convert("RGB")


class TargetPad:
    """Pad the shorter side with ``fill``, centred, by ``int((long / target_ratio - short) / 2)`` a side as the
    reference code (200x100 becomes 200x160), in the image's own mode; images within the ratio pass."""

    def __init__(self, target_ratio: float = TARGET_RATIO, fill: int = 0) -> None:
        if target_ratio < 1:
            raise InputError(f"target_ratio must be >= 1, got {target_ratio}")
        self.target_ratio, self.fill = target_ratio, fill

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if max(w, h) / min(w, h) < self.target_ratio:
            return image
        scaled = max(w, h) / self.target_ratio
        pad_w, pad_h = max(int((scaled - w) / 2), 0), max(int((scaled - h) / 2), 0)
        return FT.pad(image, [pad_w, pad_h, pad_w, pad_h], self.fill, "constant")


_INTERPOLATIONS = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}


def make_preprocess(
    kind: PreprocessKind = "targetpad",
    image_size: int | Sequence[int] = 224,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    interpolation: str = "bicubic",
    target_ratio: float = TARGET_RATIO,
) -> Callable[[Image.Image], torch.Tensor]:
    """A PIL -> normalised ``(3, H, W)`` transform: ``clip`` (resize the shorter side, centre crop) or
    ``targetpad`` (pad to ``target_ratio`` first); ``image_size`` an int or a square ``(h, w)``."""
    if kind not in ("clip", "targetpad"):
        raise InputError(f"unknown preprocess kind {kind!r}; expected 'clip' or 'targetpad'")
    if not isinstance(image_size, int):
        size = tuple(image_size)
        if len(size) != 2 or size[0] != size[1]:
            raise InputError(f"only square image sizes are supported, got {image_size}")
        image_size = int(size[0])
    if interpolation not in _INTERPOLATIONS:
        raise InputError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {interpolation!r}")
    steps = [TargetPad(target_ratio)] if kind == "targetpad" else []
    steps += [T.Resize(image_size, interpolation=_INTERPOLATIONS[interpolation]), T.CenterCrop(image_size), to_rgb]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean=tuple(mean), std=tuple(std))])


def make_preprocess_from_open_clip(
    model: torch.nn.Module, kind: PreprocessKind = "targetpad", target_ratio: float = TARGET_RATIO
) -> Callable[[Image.Image], torch.Tensor]:
    """:func:`make_preprocess` with the open_clip model's own size, mean, std and interpolation."""
    cfg = open_clip.get_model_preprocess_cfg(model)
    if cfg.get("resize_mode", "shortest") != "shortest":
        raise InputError(f"model uses resize_mode={cfg['resize_mode']!r}; only 'shortest' (CLIP's) is supported here")
    size, mean, std = cfg.get("size", 224), cfg.get("mean", CLIP_MEAN), cfg.get("std", CLIP_STD)
    return make_preprocess(kind, size, mean, std, cfg.get("interpolation", "bicubic"), target_ratio)
