"""Stand-in datasets for the protocol tests: the real annotation files, generated images.

The annotation files are the authors' releases in ``../shared/data``, else ``data/annotations`` (``make
annotations``; tests/conftest.py's ``annotations_dir``), read, never copied into the project (reduced
copies are written under pytest's tmp folders). Images are tiny noise pictures,
distinct per name (seeded by the name) and 16x10 so that ``targetpad`` actually pads them.

Test modules import the fixtures they use. pytest makes one instance of a fixture per module that
defines it, so the session-wide ones memoise their result here: the stand-in folders and one
feature cache folder are shared by every module, and a gallery is encoded once per session.
Nothing is autouse; modules opt in with ``pytestmark = pytest.mark.usefixtures("protocol_env")``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, missing_annotations
from PIL import Image

DATA = SHARED_DATA  # ../shared/data, else data/annotations (tests/conftest.py: annotations_dir)
SIZE = (16, 10)
SEED = 42  # the CLI's default --seed, which also seeds --pretrained none
# Options every CLI call of the tests shares: the random-weights small CLIP on the CPU, quietly.
CLI = ["--backbone", "shapes-clip", "--pretrained", "none", "--device", "cpu", "--no-progress", "--num-workers", "0"]
CIRCO_DISTRACTORS = range(1, 61)  # gallery filler (id 50 is also in val query 151): top-50 lists exist
CMYK_ID = 271520  # reference of CIRCO val query 0, stored as a CMYK JPEG


def need(sub: str) -> Path:
    path = DATA / sub
    if not path.exists():
        pytest.skip(missing_annotations(path))
    return path


def write_image(path: Path, name: str, mode: str = "RGB") -> None:
    """A noise image, the same for the same name; JPEG or PNG by the path's suffix."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little"))
    image = Image.fromarray(rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    (image.convert(mode) if mode != "RGB" else image).save(path)


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def build_cirr(root: Path, n_queries: int | None = 30, extra_gallery: int = 20, images: bool = True) -> Path:
    """CIRR val and test1 in the release's layout (``root/cirr/{captions,image_splits}``, images in
    ``root/{dev,test1}``): the first ``n_queries`` queries (all if None), their images plus a few others."""
    src = need("cirr")
    for split in ("val", "test1"):
        caps = read_json(src / f"captions/cap.rc2.{split}.json")
        split_map = read_json(src / f"image_splits/split.rc2.{split}.json")
        if n_queries is not None:
            caps = caps[:n_queries]
            needed = {n for c in caps for n in (c["reference"], c.get("target_hard"), *c["img_set"]["members"]) if n}
            others = [n for n in split_map if n not in needed][:extra_gallery]
            split_map = {n: rel for n, rel in split_map.items() if n in needed or n in others}
        write_json(root / f"cirr/captions/cap.rc2.{split}.json", caps)
        write_json(root / f"cirr/image_splits/split.rc2.{split}.json", split_map)
        if images:
            for name, rel in split_map.items():
                write_image(root / rel, name)
    return root


def build_fashioniq(root: Path, n_queries: int | None = 10, extra_gallery: int = 40, images: bool = True) -> Path:
    """FashionIQ val, three categories: the first ``n_queries`` per category, their images and others."""
    src = need("fashioniq")
    (root / "images").mkdir(parents=True, exist_ok=True)
    for cat in ("dress", "shirt", "toptee"):
        caps = read_json(src / f"captions/cap.{cat}.val.json")
        gallery = read_json(src / f"image_splits/split.{cat}.val.json")
        if n_queries is not None:
            caps = caps[:n_queries]
            needed = {n for c in caps for n in (c["candidate"], c["target"])}
            others = [a for a in gallery if a not in needed][:extra_gallery]
            gallery = [a for a in gallery if a in needed or a in others]
        write_json(root / f"captions/cap.{cat}.val.json", caps)
        write_json(root / f"image_splits/split.{cat}.val.json", gallery)
        if images:
            for asin in gallery:
                if not (root / "images" / f"{asin}.jpg").exists():
                    write_image(root / "images" / f"{asin}.jpg", asin)
    return root


def build_circo(root: Path, images: bool = True, cmyk: int | None = CMYK_ID) -> Path:
    """CIRCO val (220) and test (800) in full; the image-info file lists only the images they need."""
    src = need("circo")
    ids: dict[int, None] = {}
    for split in ("val", "test"):
        anns = read_json(src / f"annotations/{split}.json")
        write_json(root / f"annotations/{split}.json", anns)
        for ann in anns:
            ids.update(dict.fromkeys([ann["reference_img_id"], *ann.get("gt_img_ids", [])]))
    ids.update(dict.fromkeys(CIRCO_DISTRACTORS))
    listing = [{"id": i, "file_name": f"{i:012d}.jpg", "width": SIZE[0], "height": SIZE[1]} for i in ids]
    write_json(root / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json", {"images": listing})
    if images:
        for i in ids:
            write_image(
                root / "COCO2017_unlabeled/unlabeled2017" / f"{i:012d}.jpg", str(i), "CMYK" if i == cmyk else "RGB"
            )
    return root


_SESSION: dict[str, object] = {}


def _once(key: str, make):
    """``make()`` the first time ``key`` is asked for in this process, the same value afterwards."""
    if key not in _SESSION:
        _SESSION[key] = make()
    return _SESSION[key]


@pytest.fixture(scope="session")
def searle_cache(tmp_path_factory) -> Path:
    """One SEARLE_DATA folder for the session (feature caches shared by all protocol tests)."""
    return _once("searle_data", lambda: tmp_path_factory.mktemp("searle_data"))


@pytest.fixture
def protocol_env(searle_cache, monkeypatch):
    """The session's SEARLE_DATA, and one torch thread: this model's matmuls are too small for a
    second thread to pay for its synchronisation, which on a busy CI machine costs 10x."""
    monkeypatch.setenv("SEARLE_DATA", str(searle_cache))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cirr_standin(tmp_path_factory) -> Path:
    return _once("cirr", lambda: build_cirr(tmp_path_factory.mktemp("cirr")))


@pytest.fixture(scope="session")
def fiq_standin(tmp_path_factory) -> Path:
    return _once("fashioniq", lambda: build_fashioniq(tmp_path_factory.mktemp("fashioniq")))


@pytest.fixture(scope="session")
def circo_standin(tmp_path_factory) -> Path:
    return _once("circo", lambda: build_circo(tmp_path_factory.mktemp("circo")))


def _make_cli_backbone():
    from searle_core.clip.backbone import load_backbone
    from searle_core.datasets.features import configure_images

    logging.getLogger().setLevel(logging.ERROR)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        backbone = load_backbone("shapes-clip", None, device="cpu")
    return configure_images(backbone, "targetpad", num_workers=0)


@pytest.fixture(scope="session")
def cli_backbone():
    """The backbone ``searle evaluate --backbone shapes-clip --pretrained none`` builds for a real
    dataset: random weights under seed 42, targetpad preprocessing (so the CLI reuses its features)."""
    return _once("cli_backbone", _make_cli_backbone)
