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
