"""Helpers of the bad-input battery (``test_faults_*.py``): tiny datasets, CLI calls, snapshots.

Every dataset here is written from scratch (a few queries, 16x10 noise images), so the battery
needs neither the real annotation files nor a trained CLIP: CLI calls use the random-weights small
CLIP. Each case asserts the exit status, that the error line names the culprit, and that nothing
was written or lost (a snapshot of the folders involved, before and after).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
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
