"""The image feature cache: images replaced in place (even with a restored timestamp) are encoded anew, and a
damaged cache file is recomputed."""

from __future__ import annotations

import os

import pytest
import torch
from cli_helpers import EVALUATE_CIRCO as EVAL
from cli_helpers import (
    circo,  # noqa: F401
    searle,
    write_image,
)

from searle_core.datasets import FileImageSource
from searle_core.datasets.features import configure_images, image_features

pytestmark = pytest.mark.audit_open


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_images_replaced_in_place_are_encoded_anew(tmp_path, random_backbone):
    backbone = configure_images(random_backbone, "clip")
    names = [f"img{i}" for i in range(4)]
    paths = {n: write_image(tmp_path / "images" / f"{n}.png", i) for i, n in enumerate(names)}
    source = FileImageSource(paths)
    old = image_features(backbone, source, names, progress=False)
    for i, n in enumerate(names):  # same names, new content; mtime moved on as a copy would
        write_image(paths[n], 1000 + i)
        os.utime(paths[n], ns=(os.stat(paths[n]).st_atime_ns, os.stat(paths[n]).st_mtime_ns + 10**9))
    fresh = image_features(backbone, FileImageSource(paths), names, progress=False, cache=False)
    assert not torch.allclose(old, fresh)
    # The same source object (in-memory reuse) and a new one (the disk cache, as a new process) both see the change.
    assert torch.equal(image_features(backbone, source, names, progress=False), fresh)
    assert torch.equal(image_features(backbone, FileImageSource(paths), names, progress=False), fresh)
    # Unchanged files still come from the cache: two cache files, one per file state.
    assert len(list((tmp_path / "searle_data/cache/features").glob("image-*.pt"))) == 2


@pytest.mark.usefixtures("one_thread", "opened")
def test_feature_cache_not_fooled_by_a_restored_timestamp(tmp_path, random_backbone):
    """``cp -p`` / ``rsync -a`` / ``tar x``: other pixels, same size, same mtime."""
    import torch

    from searle_core.datasets import FileImageSource
    from searle_core.datasets.features import configure_images, image_features

    backbone = configure_images(random_backbone, "clip")
    names = [f"img{i}" for i in range(3)]
    paths = {n: write_image(tmp_path / "images" / f"{n}.bmp", i) for i, n in enumerate(names)}  # BMP: size fixed
    old = image_features(backbone, FileImageSource(paths), names, progress=False)
    for i, n in enumerate(names):
        st = os.stat(paths[n])
        write_image(paths[n], 500 + i)
        os.utime(paths[n], ns=(st.st_atime_ns, st.st_mtime_ns))
        assert os.stat(paths[n]).st_size == st.st_size and os.stat(paths[n]).st_mtime_ns == st.st_mtime_ns
    fresh = image_features(backbone, FileImageSource(paths), names, progress=False, cache=False)
    assert not torch.allclose(old, fresh)
    assert torch.equal(image_features(backbone, FileImageSource(paths), names, progress=False), fresh)


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_damaged_feature_cache_is_recomputed(circo, tmp_path, capsys):
    status, out, err = searle(capsys, *EVAL, "--dataset-path", circo, "--json")
    assert status == 0, err
    for path in (tmp_path / "searle_data").rglob("image-*.pt"):
        path.write_bytes(b"garbage")
    status, again, err = searle(capsys, *EVAL, "--dataset-path", circo, "--json")
    assert status == 0 and again == out


@pytest.mark.usefixtures("tmp_searle_data")
def test_weights_files_are_identified_by_content(tmp_path, random_backbone):
    """Two weights files of one name and size with the same mtime (``cp -p``, ``rsync -a``) used to share every
    cache entry (the key was name, size and whole-second mtime): now their SHA-256 keys them apart."""
    import dataclasses
    import shutil

    from searle_core.clip.backbone import weights_key

    first, second = tmp_path / "a/weights.pt", tmp_path / "b/weights.pt"
    first.parent.mkdir()
    second.parent.mkdir()
    first.write_bytes(b"\x00" * 64)
    second.write_bytes(b"\x00" * 63 + b"\x01")  # one bit apart
    shutil.copystat(first, second)
    assert os.stat(first).st_mtime_ns == os.stat(second).st_mtime_ns
    key = lambda path: weights_key(dataclasses.replace(random_backbone, pretrained=str(path)))  # noqa: E731
    assert key(first) != key(second)
    assert key(first) == key(first) and key(first).startswith("weights.pt-")
    shutil.copy2(first, tmp_path / "c.pt")  # the same bytes elsewhere: the same content
    assert key(tmp_path / "c.pt").split("-", 1)[1] == key(first).split("-", 1)[1]


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
@pytest.mark.parametrize("stored", ["wider", "1-d", "float64"])
def test_a_cached_tensor_of_another_shape_or_type_is_rebuilt(stored, tmp_path, random_backbone, capsys):
    """A cache entry of the wrong width, rank or dtype (only its row count was checked) is rebuilt, said in one line."""
    backbone = configure_images(random_backbone, "clip")
    names = [f"img{i}" for i in range(3)]
    paths = {n: write_image(tmp_path / "images" / f"{n}.png", i) for i, n in enumerate(names)}
    right = image_features(backbone, FileImageSource(paths), names, progress=False)
    (entry,) = (tmp_path / "searle_data/cache/features").glob("image-*.pt")
    wrong = {
        "wider": torch.ones(3, backbone.embed_dim + 1),
        "1-d": torch.ones(3),
        "float64": torch.ones(3, backbone.embed_dim).double(),
    }
    torch.save(wrong[stored], entry)
    capsys.readouterr()
    assert torch.equal(image_features(backbone, FileImageSource(paths), names, progress=False), right)
    assert f"cache entry {entry} is a torch" in capsys.readouterr().err
    assert torch.equal(torch.load(entry), image_features(backbone, FileImageSource(paths), names, normalize=False))


def test_weights_are_identified_when_the_hash_index_cannot_be_written(tmp_path, monkeypatch, capsys):
    """SEARLE_DATA a file: the content hash is computed and the run goes on, with a warning (no raw Errno)."""
    from searle_core.infra.files import content_sha256, sha256_of

    (tmp_path / "data").write_text("a file, not a folder")
    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "data"))
    (tmp_path / "w.pt").write_bytes(b"weights")
    assert content_sha256(tmp_path / "w.pt") == sha256_of(tmp_path / "w.pt")
    assert "warning: could not write the hash index" in capsys.readouterr().err
