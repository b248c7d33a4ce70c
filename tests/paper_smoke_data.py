"""The paper-smoke profile's inputs: the paper path's files at toy size (``make paper-smoke`` builds them).

Real annotation files from ``../shared/data`` reduced to a few queries, written in the authors'
layouts with generated images (:mod:`standins`); open_clip ``ViT-B-32`` with seeded random weights
saved in OpenAI's state-dict layout (its extra ``input_resolution``/``context_length``/``vocab_size``
entries, so the loader treats the file as OpenAI's and builds QuickGELU); a random φ checkpoint in the
authors' layout ``{"epoch", "Phi"}``; a phrase pickle and a concepts CSV of a few dozen concepts;
a folder of unlabeled images. ``notebooks/profiles/paper-smoke.yaml`` points at these paths.

    python tests/paper_smoke_data.py [runs/paper-smoke-data]
"""

from __future__ import annotations

import csv
import pickle
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from standins import DATA, build_cirr, build_fashioniq, read_json, write_image, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "runs" / "paper-smoke-data"
SEED = 42
N_QUERIES = 4  # per split (FashionIQ: per category)
N_CONCEPTS = 40  # association costs concepts × 24 templates text encodings
N_UNLABELED = 16
CIRCO_DISTRACTORS = range(1, 61)  # ≥ 50 gallery images: 50-long rankings exist


def build_circo_small(root: Path, n_queries: int = N_QUERIES) -> Path:
    """CIRCO val and test, the first ``n_queries`` of each, their images and 60 distractors."""
    ids: dict[int, None] = {}
    for split in ("val", "test"):
        anns = read_json(DATA / "circo" / f"annotations/{split}.json")[:n_queries]
        write_json(root / f"annotations/{split}.json", anns)
        for ann in anns:
            ids.update(dict.fromkeys([ann["reference_img_id"], *ann.get("gt_img_ids", [])]))
    ids.update(dict.fromkeys(CIRCO_DISTRACTORS))
    listing = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 16, "height": 10} for i in ids]
    write_json(root / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json", {"images": listing})
    for i in ids:
        write_image(root / "COCO2017_unlabeled/unlabeled2017" / f"{i:012d}.jpg", str(i))
    return root


def write_openai_weights(path: Path, seed: int = SEED) -> Path:
    """Seeded random ``ViT-B-32`` weights as OpenAI's state dict (open_clip's keys are OpenAI's, plus
    the three non-parameter entries OpenAI's model carries), fp16 as OpenAI releases them."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    state.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def write_phi_checkpoint(path: Path, seed: int = SEED) -> Path:
    """A random φ of ViT-B/32's widths (512 -> 2048 -> 2048 -> 512), saved as the authors save theirs."""
    from searle_core.method.phi import Phi

    torch.manual_seed(seed)
    phi = Phi(512, 2048, 512)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 3, "Phi": phi.state_dict()}, path)
    return path


def write_vocabulary(root: Path, n: int = N_CONCEPTS) -> tuple[Path, Path]:
    """The first ``n`` one-word concepts of the real class descriptions, and three phrases each."""
    with open(DATA / "concepts" / "oidv7-class-descriptions.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["DisplayName"].isalpha() and r["DisplayName"].islower()]
    rows = rows[:: max(1, len(rows) // n)][:n]
    concepts = root / "concepts" / "oidv7-class-descriptions.csv"
    concepts.parent.mkdir(parents=True, exist_ok=True)
    with open(concepts, "w", newline="") as f:
        writer = csv.DictWriter(f, ["LabelName", "DisplayName"])
        writer.writeheader()
        writer.writerows(rows)
    bank = {
        r["DisplayName"]: [
            f"a photo of a {r['DisplayName']} on a table",
            f"a {r['DisplayName']} in the street",
            f"two people looking at a {r['DisplayName']}",
        ]
        for r in rows
    }
    phrases = root / "phrases" / "concept_to_phrases.pkl"
    phrases.parent.mkdir(parents=True, exist_ok=True)
    phrases.write_bytes(pickle.dumps(bank))
    return concepts, phrases


def build(root: Path = DEFAULT) -> Path:
    """Every input of the paper-smoke profile under ``root`` (rebuilt from scratch each time)."""
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    build_cirr(root / "CIRR", n_queries=N_QUERIES, extra_gallery=45)
    build_fashioniq(root / "FashionIQ", n_queries=N_QUERIES, extra_gallery=8)
    build_circo_small(root / "CIRCO")
    for i in range(N_UNLABELED):
        write_image(root / "ImageNet1K" / "test" / f"ILSVRC2012_test_{i + 1:08d}.JPEG", f"unlabeled-{i}")
    write_openai_weights(root / "weights" / "ViT-B-32-random.pt")
    write_phi_checkpoint(root / "checkpoints" / "SEARLE_ViT-B32-random.pt")
    write_vocabulary(root)
    return root


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))
