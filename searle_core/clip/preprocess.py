"""Image pre-processing: CLIP's standard transform and SEARLE's "targetpad" variant.

CLIP resizes the shorter side and centre-crops a square, which cuts off the ends of long images
(a full-length dress, a panorama). SEARLE's "targetpad" first pads the shorter side with black
until the aspect ratio is at most ``target_ratio`` (1.25), so the crop loses at most a sliver,
then applies the usual CLIP resize (bicubic), centre crop and normalisation.

The order is the authors' (``data_utils.targetpad_transform`` and OpenAI's ``clip._transform``):
pad *in the image's own mode*, resize, crop, and only then convert to RGB. Images are handed over
as decoded (a CMYK JPEG stays CMYK, a palette PNG stays a palette), so the mode decides what
happens as it does in theirs: Pillow resizes palette images with nearest neighbour, RGBA with
premultiplied alpha, and the final ``convert("RGB")`` drops transparency and clips 16-bit values.
Converting first (or compositing transparency on white) gives other tensors for such files, and
COCO's unlabeled images (CIRCO's gallery) include them.

All transforms are module-level classes (no lambdas) so they pickle into DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torchvision.transforms.functional as FT
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from searle_core.infra.errors import InputError

# OpenAI CLIP's normalisation constants (also open_clip's defaults).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
TARGET_RATIO = 1.25

PreprocessKind = Literal["clip", "targetpad"]


class ToRGB:
    """Convert any PIL mode to RGB, as the authors' ``_convert_image_to_rgb`` (the last PIL step)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return to_rgb(image)

    def __repr__(self) -> str:
        return "ToRGB()"


class TargetPad:
    """Pad the shorter side with black, centred, so that ``long / short <= target_ratio``.

    Images already within the ratio pass unchanged. As in the reference implementation the
    padding on each side is ``int((long / target_ratio - short) / 2)``, so a 200x100 image becomes
    200x160 and a 100x200 one 160x200. The padding is torchvision's constant pad in the image's
    own mode (for a palette image, palette index ``fill``), as theirs is.

    Args:
        target_ratio: the largest aspect ratio left after padding (1.25 in the paper).
        fill: padding grey level (0 = black).
    """

    def __init__(self, target_ratio: float = TARGET_RATIO, fill: int = 0) -> None:
        if target_ratio < 1:
            raise InputError(f"target_ratio must be >= 1, got {target_ratio}")
        self.target_ratio = target_ratio
        self.fill = fill

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if max(w, h) / min(w, h) < self.target_ratio:
            return image
        scaled = max(w, h) / self.target_ratio
        pad_w = max(int((scaled - w) / 2), 0)
        pad_h = max(int((scaled - h) / 2), 0)
        return FT.pad(image, [pad_w, pad_h, pad_w, pad_h], self.fill, "constant")

    def __repr__(self) -> str:
        return f"TargetPad(target_ratio={self.target_ratio}, fill={self.fill})"


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB as the authors' code does: ``image.convert("RGB")``.

    Transparency is dropped (each pixel keeps its colour), 16-bit values above 255 clip to 255.
    The model's input does this after padding and resizing (:func:`make_preprocess`); elsewhere
    (captioners, pictures) it is the one conversion, so every consumer sees the same colours.
    """
    return image if image.mode == "RGB" else image.convert("RGB")


def _interpolation(name: str) -> InterpolationMode:
    modes = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}
    if name not in modes:
        raise InputError(f"interpolation must be one of {sorted(modes)}, got {name!r}")
    return modes[name]


def make_preprocess(
    kind: PreprocessKind = "targetpad",
    image_size: int | Sequence[int] = 224,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    interpolation: str = "bicubic",
    target_ratio: float = TARGET_RATIO,
) -> Callable[[Image.Image], torch.Tensor]:
    """Build a PIL -> normalised ``(3, H, W)`` tensor transform.

    Args:
        kind: ``"clip"`` (resize shorter side, centre crop) or ``"targetpad"`` (pad first).
        image_size: model input size; an int or a square ``(h, w)``.
        mean: per-channel normalisation mean.
        std: per-channel normalisation std.
        interpolation: ``"bicubic"`` (CLIP) or ``"bilinear"``.
        target_ratio: targetpad's largest aspect ratio.
    """
    if kind not in ("clip", "targetpad"):
        raise InputError(f"unknown preprocess kind {kind!r}; expected 'clip' or 'targetpad'")
    if not isinstance(image_size, int):
        size = tuple(image_size)
        if len(size) != 2 or size[0] != size[1]:
            raise InputError(f"only square image sizes are supported, got {image_size}")
        image_size = int(size[0])
    # The authors' order: pad and resize in the image's own mode, convert to RGB after the crop.
    steps: list[Any] = [TargetPad(target_ratio)] if kind == "targetpad" else []
    steps += [
        T.Resize(image_size, interpolation=_interpolation(interpolation)),
        T.CenterCrop(image_size),
        ToRGB(),
        T.ToTensor(),
        T.Normalize(mean=tuple(mean), std=tuple(std)),
    ]
    return T.Compose(steps)


def make_preprocess_from_open_clip(
    model: torch.nn.Module, kind: PreprocessKind = "targetpad", target_ratio: float = TARGET_RATIO
) -> Callable[[Image.Image], torch.Tensor]:
    """Build the transform from an open_clip model's own preprocessing config.

    Reads size, mean, std and interpolation from ``open_clip.get_model_preprocess_cfg(model)``
    so a backbone with non-OpenAI statistics is normalised correctly.

    Args:
        model: a model made by ``open_clip.create_model*``.
        kind: ``"clip"`` or ``"targetpad"``.
        target_ratio: targetpad's largest aspect ratio.
    """
    import open_clip  # local: keep this module importable without open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    if cfg.get("resize_mode", "shortest") != "shortest":
        raise InputError(f"model uses resize_mode={cfg['resize_mode']!r}; only 'shortest' (CLIP's) is supported here")
    return make_preprocess(
        kind,
        image_size=cfg.get("size", 224),
        mean=cfg.get("mean", CLIP_MEAN),
        std=cfg.get("std", CLIP_STD),
        interpolation=cfg.get("interpolation", "bicubic"),
        target_ratio=target_ratio,
    )
