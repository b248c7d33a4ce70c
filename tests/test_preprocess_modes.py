"""The model's input equals the authors' for image files of every mode: max difference 0.

The reference side restates ``src/data_utils.py`` (``TargetPad``, ``targetpad_transform``) and
OpenAI's ``clip._transform`` here, calling nothing of the project: ``PIL.Image.open`` on the file
(no EXIF rotation, no conversion), pad in the file's own mode, bicubic resize, centre crop,
``convert("RGB")``, ``ToTensor``, normalise. The project's side is the path every benchmark takes:
:class:`ImageFolderSource` loading, then the backbone's preprocessing.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
import torchvision.transforms.functional as FT
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from searle_core.clip.preprocess import make_preprocess
from searle_core.datasets.folder import ImageFolderSource

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class _TheirTargetPad:
    def __init__(self, target_ratio: float) -> None:
        self.target_ratio = target_ratio

    def __call__(self, image):
        w, h = image.size
        if max(w, h) / min(w, h) < self.target_ratio:
            return image
        scaled_max_wh = max(w, h) / self.target_ratio
        hp = max(int((scaled_max_wh - w) / 2), 0)
        vp = max(int((scaled_max_wh - h) / 2), 0)
        return FT.pad(image, [hp, vp, hp, vp], 0, "constant")


def _theirs(kind: str, dim: int):
    head = [_TheirTargetPad(1.25)] if kind == "targetpad" else []
    return Compose(
        head
        + [
            Resize(dim, interpolation=InterpolationMode.BICUBIC),
            CenterCrop(dim),
            lambda image: image.convert("RGB"),
            ToTensor(),
            Normalize(MEAN, STD),
        ]
    )


def _noise(w: int, h: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8)


def _write_files(folder) -> dict[str, str]:
    """One file per mode, of mixed aspect ratios; returns name -> the mode it opens in."""
    a = _noise(90, 40, 0)
    Image.fromarray(a[..., :3]).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray(a[..., :3]).quantize(64).save(folder / "palette.png")
    pal = Image.fromarray(_noise(40, 100, 1)[..., :3]).quantize(32)
    pal.info["transparency"] = 3  # palette index 3 is transparent (a tRNS chunk)
    pal.save(folder / "palette_transparent.png", transparency=3)
    rgba = _noise(120, 50, 2)
    rgba[..., 3] = np.where(rgba[..., 3] > 128, 255, rgba[..., 3] // 2)  # opaque, translucent, clear
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray(a[..., 0]).save(folder / "grey.png")
    Image.fromarray(np.stack([a[..., 0], a[..., 3]], -1), "LA").save(folder / "grey_alpha.png")
    deep = (np.random.default_rng(3).integers(0, 65536, (70, 30))).astype(np.uint16)
    Image.fromarray(deep).save(folder / "sixteen.png")
    rotated = Image.fromarray(_noise(100, 60, 4)[..., :3])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    rotated.save(folder / "exif_rotated.jpg", exif=exif.tobytes(), quality=95)
    Image.fromarray(_noise(64, 60, 5)[..., :3]).save(folder / "rgb_square.png")
    return {name: Image.open(folder / name).mode for name in sorted(p.name for p in folder.iterdir())}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("modes")
    return folder, _write_files(folder)


def test_files_cover_every_mode(files):
    _, modes = files
    assert sorted(set(modes.values())) == sorted({"CMYK", "P", "RGBA", "L", "LA", "I;16", "RGB"})
    folder, _ = files
    assert Image.open(folder / "exif_rotated.jpg").getexif().get(0x0112) == 6


@pytest.mark.parametrize("kind", ["targetpad", "clip"])
def test_preprocessing_equals_the_authors_for_every_mode(files, kind):
    folder, modes = files
    source = ImageFolderSource(folder)
    ours, theirs = make_preprocess(kind, 64), _theirs(kind, 64)
    for name in modes:
        got = ours(source.load_image(name))
        want = theirs(PIL.Image.open(folder / name))
        assert got.shape == want.shape == (3, 64, 64), name
        assert (got - want).abs().max().item() == 0, f"{name} ({modes[name]}, {kind})"


def test_converting_first_would_differ(files):
    """Control: on these files, converting to RGB before padding and resizing (the old order) or
    compositing transparency on white changes the tensors, so the test above can fail."""
    folder, modes = files
    theirs = _theirs("targetpad", 64)
    convert_first = Compose([lambda image: image.convert("RGB"), theirs])
    differs = {
        name
        for name in modes
        if not torch.equal(theirs(PIL.Image.open(folder / name)), convert_first(PIL.Image.open(folder / name)))
    }
    assert {"palette.png", "palette_transparent.png", "rgba.png"} <= differs
    source = ImageFolderSource(folder)
    assert source.load_image("cmyk.jpg").mode == "CMYK"  # decoded as stored; converted after the crop
