"""Feature caching and preprocessing: what the cache key names, and that a hit skips the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from standins import protocol_env, searle_cache  # noqa: F401

from searle_core.datasets import ImageFolderSource, ImageLoadError
from searle_core.datasets.features import ImagePipeline, configure_images, image_features, text_features, weights_key

pytestmark = pytest.mark.usefixtures("protocol_env")  # one torch thread, a tmp SEARLE_DATA


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (10, 16, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    return root


@pytest.fixture
def no_model(monkeypatch, random_backbone):
    """After this fixture, any image or text forward pass fails the test."""

    def boom(*args, **kwargs):
        raise AssertionError("the model ran although the features were cached")

    monkeypatch.setattr(random_backbone.model, "encode_image", boom)
    monkeypatch.setattr("searle_core.datasets.features.encode_text", boom)


def test_image_features_are_cached_on_disk_and_reused(folder, random_backbone, tmp_path, request):
    names = ImageFolderSource(folder).names
    first = image_features(random_backbone, ImageFolderSource(folder), names, cache=tmp_path, progress=False)
    assert first.shape == (6, random_backbone.embed_dim)
    assert torch.allclose(first.norm(dim=-1), torch.ones(6))
    assert len(list(tmp_path.glob("image-*.pt"))) == 1
    request.getfixturevalue("no_model")
    again = image_features(random_backbone, ImageFolderSource(folder), names, cache=tmp_path, progress=False)
    torch.testing.assert_close(again, first)


def test_cache_key_names_preprocessing_file_list_and_weights(folder, random_backbone, tmp_path):
    names = ImageFolderSource(folder).names
    clip = configure_images(random_backbone, "clip")
    pad = configure_images(random_backbone, "targetpad")
    a = image_features(clip, ImageFolderSource(folder), names, cache=tmp_path, progress=False)
    b = image_features(pad, ImageFolderSource(folder), names, cache=tmp_path, progress=False)
    assert not torch.allclose(a, b)  # 16x10 images: targetpad pads before the crop
    image_features(clip, ImageFolderSource(folder), names[::-1], cache=tmp_path, progress=False)
    image_features(clip, ImageFolderSource(folder), names[:3], cache=tmp_path, progress=False)
    assert len(list(tmp_path.glob("image-*.pt"))) == 4
    copy = tmp_path / "copy"
    copy.mkdir()
    for n in names:
        (copy / n).write_bytes((folder / n).read_bytes())
    image_features(clip, ImageFolderSource(copy), names, cache=tmp_path, progress=False)
    assert len(list(tmp_path.glob("image-*.pt"))) == 5  # same names elsewhere: other files, other key


def test_random_weights_are_fingerprinted(random_backbone):
    from searle_core.clip.backbone import load_backbone

    assert random_backbone.pretrained is None and weights_key(random_backbone).startswith("random-")
    torch.manual_seed(0)
    same = load_backbone("shapes-clip", pretrained=None, device="cpu")
    torch.manual_seed(1)
    other = load_backbone("shapes-clip", pretrained=None, device="cpu")
    assert weights_key(same) == weights_key(random_backbone) != weights_key(other)
    # The same weights whatever the thread count (BatchNorm statistics are measured on noise).
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if threads == 1 else 1)
    try:
        torch.manual_seed(0)
        assert weights_key(load_backbone("shapes-clip", pretrained=None, device="cpu")) == weights_key(same)
    finally:
        torch.set_num_threads(threads)


def test_clip_pipeline_matches_open_clip_and_names_itself(folder, random_backbone):
    image = Image.open(folder / "img0.png")
    clip = configure_images(random_backbone, "clip", num_workers=3)
    assert isinstance(clip.preprocess, ImagePipeline) and clip.model is random_backbone.model
    assert (clip.preprocess.preprocess_id, clip.preprocess.num_workers) == ("clip", 3)
    torch.testing.assert_close(clip.preprocess(image), random_backbone.preprocess(image))
    pad = configure_images(random_backbone, "targetpad").preprocess
    assert pad.preprocess_id == "targetpad" and pad(image).shape == (3, 32, 32)
    assert configure_images(random_backbone, "targetpad", target_ratio=1.5).preprocess.preprocess_id == "targetpad-1.5"


def test_workers_and_in_memory_reuse_of_a_gallery(folder, random_backbone, tmp_path, request):
    source = ImageFolderSource(folder)
    backbone = configure_images(random_backbone, "targetpad", num_workers=1)  # the pipeline pickles to a worker
    gallery = image_features(backbone, source, source.names, batch_size=4, cache=False, progress=False)
    plain = image_features(
        configure_images(random_backbone, "targetpad"),
        ImageFolderSource(folder),
        source.names,
        cache=False,
        progress=False,
    )
    torch.testing.assert_close(gallery, plain)
    request.getfixturevalue("no_model")
    # The methods ask for reference images separately: served from the gallery just computed.
    refs = image_features(backbone, source, [source.names[4], source.names[1]], cache=False, progress=False)
    torch.testing.assert_close(refs, gallery[[4, 1]])


def test_damaged_cache_file_is_recomputed(folder, random_backbone, tmp_path):
    names = ImageFolderSource(folder).names
    first = image_features(random_backbone, ImageFolderSource(folder), names, cache=tmp_path, progress=False)
    (cached,) = tmp_path.glob("image-*.pt")
    cached.write_bytes(b"truncated")
    again = image_features(random_backbone, ImageFolderSource(folder), names, cache=tmp_path, progress=False)
    torch.testing.assert_close(again, first)
    torch.testing.assert_close(F.normalize(torch.load(cached, weights_only=True), dim=-1), first)  # raw on disk


def test_text_features_cache(random_backbone, tmp_path, request):
    texts = ["a red dress", "a blue shirt with stripes"]
    first = text_features(random_backbone, texts, cache=tmp_path)
    text_features(random_backbone, texts[::-1], cache=tmp_path)
    assert len(list(tmp_path.glob("text-*.pt"))) == 2
    assert text_features(random_backbone, texts).shape == first.shape  # default: not cached
    assert len(list(tmp_path.glob("text-*.pt"))) == 2
    request.getfixturevalue("no_model")
    torch.testing.assert_close(text_features(random_backbone, texts, cache=tmp_path), first)


def test_unreadable_image_in_a_worker_keeps_the_loaders_message(folder, random_backbone, tmp_path):
    (tmp_path / "ok.png").write_bytes((folder / "img0.png").read_bytes())
    (tmp_path / "bad.png").write_bytes(b"not an image")
    backbone = configure_images(random_backbone, "clip", num_workers=1)
    with pytest.raises(ImageLoadError) as err:
        image_features(backbone, ImageFolderSource(tmp_path), ["ok.png", "bad.png"], cache=False, progress=False)
    assert str(err.value).startswith(f"unreadable image file {tmp_path / 'bad.png'} (image 'bad.png'")
    assert "Traceback" not in str(err.value)
