"""Helpers of the fault cases (bad inputs, damaged run folders, interruptions; each marked
``@pytest.mark.audit_open`` in the test file of the unit it exercises): tiny datasets, CLI calls,
snapshots, and the fixtures several of those files share.

Every dataset here is written from scratch (a few queries, 16x10 noise images), so the fault cases
need neither the real annotation files nor a trained CLIP: CLI calls use the random-weights small
CLIP. Each case asserts the exit status, that the error line names the culprit, and that nothing
was written or lost (a snapshot of the folders involved, before and after). Fixtures are imported by
name where they are used (``from cli_helpers import circo  # noqa: F401``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from searle_core.cli import main

CLI = ["--backbone", "shapes-clip", "--pretrained", "none", "--device", "cpu", "--no-progress"]
IMAGE_SIZE = (16, 10)


def searle(capsys, *argv) -> tuple[int, str, str]:
    """``searle ARGV`` in-process: (exit status, stdout, stderr); argparse's exit counts as a status."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str, *culprits) -> str:
    """The one ``searle CMD: error: ...`` line of ``err``; asserts no traceback and that it names every culprit."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("searle ") and ": error: " in line]
    assert len(lines) == 1, err
    for culprit in culprits:
        assert str(culprit) in lines[0], f"{culprit!r} not named in: {lines[0]}"
    assert "weights_only=False" not in err
    return lines[0]


def fails(capsys, argv, *culprits, code: int = 2) -> str:
    """Run ``argv``; assert the exit status and a one-line error naming ``culprits``; return that line."""
    status, _, err = searle(capsys, *argv)
    assert status == code, err
    return error_line(err, *culprits)


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` (hidden ones included) -> sha256 of its bytes; a missing root is empty."""
    files = {}
    for root in roots:
        root = Path(root)
        if root.is_file():
            files[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
        elif root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def write_image(path: Path, seed: int, size: tuple[int, int] = IMAGE_SIZE) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def circo_annotations(n: int = 3, gallery: int = 8) -> list[dict]:
    return [
        {
            "id": q,
            "reference_img_id": 1 + q,
            "target_img_id": 1 + (q + 1) % gallery,
            "gt_img_ids": [1 + (q + 1) % gallery, 1 + (q + 2) % gallery],
            "relative_caption": f"is number {q}",
            "shared_concept": "thing",
            "semantic_aspects": ["addition"],
        }
        for q in range(n)
    ]


def tiny_circo(root: Path, n: int = 3, gallery: int = 8, annotations: list[dict] | None = None) -> Path:
    """A CIRCO folder: ``n`` val queries over ``gallery`` images with ids 1..gallery."""
    write_json(root / "annotations/val.json", circo_annotations(n, gallery) if annotations is None else annotations)
    write_json(
        root / "annotations/test.json",
        [
            {"id": q, "reference_img_id": 1 + q, "relative_caption": "is red", "shared_concept": "thing"}
            for q in range(n)
        ],
    )
    listing = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(1, gallery + 1)]
    write_json(root / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json", {"images": listing})
    for i in range(1, gallery + 1):
        write_image(root / "COCO2017_unlabeled/unlabeled2017" / f"{i:012d}.jpg", i)
    return root


def tiny_cirr(root: Path, n: int = 3, gallery: int = 8, pairids: list[int] | None = None) -> Path:
    """A CIRR folder in the authors' layout (``cirr/captions``, ``cirr/image_splits``, ``dev/``):
    ``n`` val queries over ``gallery`` dev images."""
    names = [f"dev-{i}-0-img0" for i in range(gallery)]
    pairids = list(range(n)) if pairids is None else pairids
    caps = [
        {
            "pairid": p,
            "reference": names[q],
            "target_hard": names[(q + 1) % gallery],
            "caption": "is red",
            "target_soft": {names[(q + 1) % gallery]: 1.0},
            "img_set": {"id": q, "members": names[q : q + 6] if q + 6 <= gallery else names[:6]},
        }
        for q, p in zip(range(n), pairids)
    ]
    write_json(root / "cirr/captions/cap.rc2.val.json", caps)
    write_json(root / "cirr/image_splits/split.rc2.val.json", {n_: f"./dev/{n_}.png" for n_ in names})
    for i, name in enumerate(names):
        write_image(root / "dev" / f"{name}.png", 100 + i)
    return root


def tiny_fashioniq(root: Path, asins=("a1", "a2", "a3")) -> Path:
    """A FashionIQ folder: ``asins`` in every category's val split, one caption entry each, three images."""
    for cat in ("dress", "shirt", "toptee"):
        write_json(root / f"image_splits/split.{cat}.val.json", list(asins))
        write_json(root / f"captions/cap.{cat}.val.json", [{"candidate": "a1", "target": "a2", "captions": ["x", "y"]}])
    for i, asin in enumerate(("a1", "a2", "a3")):
        write_image(root / "images" / f"{asin}.jpg", i)
    return root


def truncated_image(path: Path) -> Path:
    """A 64x64 image cut after 300 bytes: the header reads; only a full decode fails."""
    write_image(path, 3, size=(64, 64))
    path.write_bytes(path.read_bytes()[:300])  # the header reads; only a full decode fails
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    """An image folder (``--dataset imagenet``): four readable images and one truncated JPEG, img9.jpg."""
    folder = tmp_path / "imagenet"
    for i in range(4):
        write_image(folder / f"img{i}.png", i)
    truncated_image(folder / "img9.jpg")
    return folder


#: ``searle evaluate`` on a CIRCO folder with the image-only baseline (no φ, no OTI): what the loaders' cases run.
EVALUATE_CIRCO = ["evaluate", "--dataset", "circo", "--method", "image-only", *CLI, "--num-workers", "0"]


@pytest.fixture
def circo(tmp_path) -> Path:
    """A tiny CIRCO folder (``tiny_circo``) in the test's folder."""
    return tiny_circo(tmp_path / "circo")


def evaluate_fails(capsys, tmp_path, root, *culprits, extra=()) -> str:
    """``searle evaluate`` on ``root`` fails naming ``culprits``; no dataset file changed, no feature cached."""
    before = snapshot(root)
    line = fails(capsys, [*EVALUATE_CIRCO, "--dataset-path", root, *extra], *culprits)
    assert snapshot(root) == before
    assert not list((tmp_path / "searle_data").rglob("image-*.pt"))  # failed before any feature was computed
    return line


#: A tiny OTI run that checkpoints every batch: 12 shapes images, 3 steps, batches of 4.
TINY_OTI = [
    "oti",
    "--quick",
    *CLI,
    "--max-images",
    "12",
    "--oti-steps",
    "3",
    "--oti-batch-size",
    "4",
    "--checkpoint-every",
    "1",
    "--seed",
    "5",
]


@pytest.fixture
def reference(tmp_path, capsys) -> torch.Tensor:
    """Tokens of the uninterrupted tiny run (``TINY_OTI``), in ``tmp_path / "reference"``."""
    status, _, err = searle(capsys, *TINY_OTI, "--out", tmp_path / "reference")
    assert status == 0, err
    return torch.load(tmp_path / "reference/tokens.pt", weights_only=True)["tokens"]


def run_env(tmp_path) -> dict:
    """The environment of a ``python -m searle_core`` child: the test's SEARLE_DATA, one thread, this checkout."""
    return {
        **os.environ,
        "SEARLE_DATA": str(tmp_path / "searle_data"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }


def kill_repeatedly(argv, tmp_path, progress, targets, rng) -> int:
    """Start ``argv`` with --resume; once ``progress()`` reaches each target, SIGKILL it after a random
    delay; finally let it finish. Returns how many kills landed."""
    kills = 0
    for target in [*targets, None]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "searle_core", *map(str, argv), "--resume"],
            env=run_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if target is None:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
            return kills
        deadline = time.monotonic() + 90
        while proc.poll() is None and progress() < target and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
    return kills
