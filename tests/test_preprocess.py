"""targetpad and CLIP pre-processing against plain NumPy/PIL reference computations."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from searle_core.clip.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    TargetPad,
    make_preprocess,
    make_preprocess_from_open_clip,
)


def _random_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _reference(array: np.ndarray, size: int, mean=CLIP_MEAN, std=CLIP_STD) -> np.ndarray:
    """Resize shorter side to ``size`` (bicubic), centre-crop, scale to [0, 1], normalise."""
    h, w = array.shape[:2]
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    resized = np.asarray(Image.fromarray(array).resize((new_w, new_h), Image.BICUBIC))
    top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
    crop = resized[top : top + size, left : left + size].astype(np.float32) / 255.0
    out = (crop - np.array(mean, np.float32)) / np.array(std, np.float32)
    return out.transpose(2, 0, 1)


def test_targetpad_geometry():
    pad = TargetPad(1.25)
    wide = pad(_random_image(200, 100))
    assert wide.size == (200, 160)  # 200 / 1.25 = 160: 30 black rows above and below
    arr = np.asarray(wide)
    assert arr[:30].max() == 0 and arr[130:].max() == 0
    assert np.array_equal(arr[30:130], np.asarray(_random_image(200, 100)))
    assert pad(_random_image(100, 200)).size == (160, 200)
    small = _random_image(110, 100)
    assert pad(small) is small  # ratio 1.1 < 1.25: untouched


def test_targetpad_transform_matches_plain_computation():
    image = _random_image(200, 100, seed=1)
    padded = np.zeros((160, 200, 3), np.uint8)
    padded[30:130] = np.asarray(image)
    expected = _reference(padded, 224)
    got = make_preprocess("targetpad", 224)(image)
    assert got.shape == (3, 224, 224) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_clip_transform_matches_plain_computation():
    image = _random_image(200, 100, seed=2)
    expected = _reference(np.asarray(image), 224)
    np.testing.assert_allclose(make_preprocess("clip", 224)(image).numpy(), expected, atol=1e-5)
    # The two kinds differ exactly because clip crops the sides away.
    assert not torch.allclose(make_preprocess("clip", 224)(image), make_preprocess("targetpad", 224)(image))


@pytest.mark.parametrize("mode", ["CMYK", "P", "RGBA", "L"])
def test_any_mode_becomes_three_channels(mode):
    image = Image.new(mode, (30, 20))
    out = make_preprocess("targetpad", 32)(image)
    assert out.shape == (3, 32, 32)


def test_transform_pickles_and_rejects_bad_arguments():
    transform = make_preprocess("targetpad", (224, 224))
    clone = pickle.loads(pickle.dumps(transform))
    image = _random_image(50, 90)
    assert torch.equal(clone(image), transform(image))
    with pytest.raises(ValueError, match="clip"):
        make_preprocess("squash", 224)
    with pytest.raises(ValueError, match="square"):
        make_preprocess("clip", (224, 256))


def test_from_open_clip_config():
    open_clip = pytest.importorskip("open_clip")
    model = torch.nn.Module()
    model.visual = torch.nn.Module()
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    open_clip.set_model_preprocess_cfg(
        model, {"size": 64, "mean": mean, "std": std, "interpolation": "bicubic", "resize_mode": "shortest"}
    )
    image = _random_image(120, 60, seed=3)
    got = make_preprocess_from_open_clip(model, "targetpad")(image)
    padded = np.zeros((96, 120, 3), np.uint8)
    padded[18:78] = np.asarray(image)
    np.testing.assert_allclose(got.numpy(), _reference(padded, 64, mean, std), atol=1e-5)
