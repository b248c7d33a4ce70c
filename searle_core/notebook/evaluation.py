"""Notebook 6's tables: one labelled target against every ground truth (a single-target benchmark scores any
other image that satisfies the query as a miss), and the real benchmarks' annotation files side by side."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from searle_core.datasets import FASHIONIQ_CATEGORIES, CIRQuery, query_aspects
from searle_core.infra.errors import InputError
from searle_core.infra.files import read_json
from searle_core.metrics.benchmarks import average_precision_at_k


def single_vs_all(rankings: Sequence[Sequence[str]], queries: Sequence[CIRQuery], k: int) -> pd.DataFrame:
    """Per query: whether the labelled target is in the top ``k`` (CIRR/FashionIQ's Recall@k), whether any
    ground truth is, how many ground truths the top ``k`` holds, and CIRCO's AP@k (percent)."""
    if len(rankings) != len(queries):
        raise InputError(f"got {len(rankings)} rankings for {len(queries)} queries: one ranking per query")
    rows = []
    for ranking, query in zip(rankings, queries):
        if query.target is None or not query.ground_truths:
            raise InputError(f"query {query.query_id!r} has no labelled target or ground truths (a test split?)")
        top, truths = list(ranking)[:k], set(query.ground_truths)
        rows.append(
            {
                "query": query.query_id,
                "ground truths": len(truths),
                f"target in top {k}": query.target in top,
                f"any ground truth in top {k}": bool(truths & set(top)),
                f"ground truths in top {k}": len(truths & set(top)),
                f"AP@{k}": 100.0 * average_precision_at_k(ranking, truths, k),
            }
        )
    return pd.DataFrame(rows)


def false_negatives(
    rankings: Sequence[Sequence[str]], queries: Sequence[CIRQuery], k: int
) -> list[tuple[int, list[str]]]:
    """``(query index, images)`` per query whose top ``k`` holds ground truths other than the labelled
    target: the images a single-target benchmark scores as wrong although they are right."""
    others = ([n for n in list(r)[:k] if n in q.ground_truths and n != q.target] for r, q in zip(rankings, queries))
    return [(i, images) for i, images in enumerate(others) if images]


#: Each benchmark's validation captions and gallery list in its authors' layout (``{}``: a FashionIQ category).
VAL_FILES = {
    "CIRR": ("captions/cap.rc2.val.json", "image_splits/split.rc2.val.json"),
    "FashionIQ": ("captions/cap.{}.val.json", "image_splits/split.{}.val.json"),
    "CIRCO": ("annotations/val.json", "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"),
}


def _overview(name: str, folder: Path) -> tuple[dict, list[dict]]:
    """A benchmark's row of :func:`annotation_overview` and its validation queries as released."""
    captions, split = VAL_FILES[name]
    files = [(folder / captions.format(c), folder / split.format(c)) for c in FASHIONIQ_CATEGORIES]
    if name != "FashionIQ":
        files = files[:1]
    elif not (files := [f for f in files if f[0].is_file()]):
        raise FileNotFoundError(f"no FashionIQ captions under {folder / 'captions'} (cap.dress.val.json, ...)")
    queries, gallery = [], None
    for captions_file, split_file in files:
        queries += read_json(captions_file, "annotation file")
        if split_file.is_file():
            listed = read_json(split_file, "annotation file")
            gallery = (gallery or 0) + len(listed["images"] if name == "CIRCO" else listed)
    # FashionIQ's two captions per query (joined by the query prompt) are counted one by one
    field = {"CIRR": "caption", "FashionIQ": "captions", "CIRCO": "relative_caption"}[name]
    texts = [c for q in queries for c in (q[field] if name == "FashionIQ" else [q[field]])]
    truths = float(np.mean([len(q["gt_img_ids"]) for q in queries])) if name == "CIRCO" else 1.0
    return {
        "queries (val)": len(queries),
        "ground truths per query": truths,
        "gallery (val)": gallery,
        "words per caption": float(np.mean([len(c.split()) for c in texts])) if texts else float("nan"),
        "files": ", ".join(str(f) for f, _ in files),
    }, queries


def annotation_overview(
    cirr: str = "", fashioniq: str = "", circo: str = ""
) -> tuple[pd.DataFrame, Counter, list[str]]:
    """The three benchmarks' validation splits from their annotation folders (the authors' layouts: CIRR's
    inner ``cirr/``, FashionIQ's root, CIRCO's root): ``(a row per readable benchmark, CIRCO's semantic
    aspects counted, why a benchmark was skipped)``. The gallery is ``None`` where the files do not list it."""
    rows, aspects, skipped = {}, Counter(), []
    for name, folder in (("CIRR", cirr), ("FashionIQ", fashioniq), ("CIRCO", circo)):
        if not folder:
            skipped.append(f"{name}: no annotation folder given")
            continue
        try:
            rows[name], queries = _overview(name, Path(folder))
        except FileNotFoundError as err:
            skipped.append(f"{name}: {err.filename or err}: not found")
            continue
        if name == "CIRCO":
            aspects = Counter(a for q in queries for a in q.get("semantic_aspects", []))
    return pd.DataFrame(rows).T, aspects, skipped


def map_per_aspect(rankings: Sequence[Sequence[str]], queries: Sequence[CIRQuery], k: int = 10) -> dict[str, float]:
    """mAP@k (percent) per semantic aspect: CIRCO's (a query counts in each of its aspects) or the world's
    change types (``colour+shape`` is one); empty when the queries carry no aspect."""
    per: dict[str, list[float]] = {}
    for ranking, query in zip(rankings, queries):
        for aspect in query_aspects(query):
            per.setdefault(aspect, []).append(100.0 * average_precision_at_k(ranking, query.ground_truths, k))
    return {a: float(np.mean(v)) for a, v in per.items()}
