"""Notebook 6's tables: one labelled target against every ground truth, and the real benchmarks'
annotation files side by side.

A single-target benchmark (CIRR, FashionIQ) labels one image per query; any other image that also
satisfies the query counts as a miss (a false negative). :func:`single_vs_all` scores the same
rankings both ways, and :func:`false_negatives` lists the images the single-target score calls wrong
although they satisfy the query. :func:`annotation_overview` reads the annotation files as released
(no images needed) and counts what each benchmark asks.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from searle_core.datasets.base import CIRQuery
from searle_core.datasets.circo import query_aspects
from searle_core.infra.errors import InputError
from searle_core.metrics.benchmarks import average_precision_at_k

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")


def single_vs_all(rankings: Sequence[Sequence[str]], queries: Sequence[CIRQuery], k: int) -> pd.DataFrame:
    """Per query: whether the labelled target is in the top ``k`` (CIRR/FashionIQ's Recall@k), whether
    any ground truth is (every valid image counted), how many ground truths the top ``k`` holds, and
    CIRCO's AP@k, in percent where a share."""
    if len(rankings) != len(queries):
        raise InputError(f"got {len(rankings)} rankings for {len(queries)} queries: one ranking per query")
    rows = []
    for ranking, query in zip(rankings, queries):
        if query.target is None or not query.ground_truths:
            raise InputError(f"query {query.query_id!r} has no labelled target or ground truths (a test split?)")
        top = list(ranking)[:k]
        truths = set(query.ground_truths)
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
    """``(query index, images)`` for each query whose top ``k`` holds ground truths other than the
    labelled target: the images a single-target benchmark scores as wrong although they are right."""
    out = []
    for i, (ranking, query) in enumerate(zip(rankings, queries)):
        others = [n for n in list(ranking)[:k] if n in set(query.ground_truths) and n != query.target]
        if others:
            out.append((i, others))
    return out


def _read(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from err


def _words(captions: list[str]) -> float:
    return float(np.mean([len(c.split()) for c in captions])) if captions else float("nan")


def _cirr(folder: Path) -> dict:
    captions = folder / "captions" / "cap.rc2.val.json"
    split = folder / "image_splits" / "split.rc2.val.json"
    triplets = _read(captions)
    return {
        "queries (val)": len(triplets),
        "ground truths per query": 1.0,
        "gallery (val)": len(_read(split)) if split.is_file() else None,
        "words per caption": _words([t["caption"] for t in triplets]),
        "files": str(captions),
    }


def _fashioniq(folder: Path) -> dict:
    triplets, gallery, read = [], 0, []
    for category in FASHIONIQ_CATEGORIES:
        captions = folder / "captions" / f"cap.{category}.val.json"
        split = folder / "image_splits" / f"split.{category}.val.json"
        if not captions.is_file():
            continue
        triplets += _read(captions)
        gallery += len(_read(split)) if split.is_file() else 0
        read.append(str(captions))
    if not read:
        raise FileNotFoundError(f"no FashionIQ captions under {folder / 'captions'} (cap.dress.val.json, ...)")
    return {
        "queries (val)": len(triplets),
        "ground truths per query": 1.0,
        "gallery (val)": gallery or None,
        # two captions per query, joined by the query prompt; counted one by one
        "words per caption": _words([c for t in triplets for c in t["captions"]]),
        "files": ", ".join(read),
    }


def _circo(folder: Path) -> tuple[dict, Counter]:
    annotations = folder / "annotations" / "val.json"
    queries = _read(annotations)
    coco = folder / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
    gallery = len(_read(coco)["images"]) if coco.is_file() else None
    aspects = Counter(a for q in queries for a in q.get("semantic_aspects", []))
    row = {
        "queries (val)": len(queries),
        "ground truths per query": float(np.mean([len(q["gt_img_ids"]) for q in queries])),
        "gallery (val)": gallery,
        "words per caption": _words([q["relative_caption"] for q in queries]),
        "files": str(annotations),
    }
    return row, aspects


def annotation_overview(
    cirr: str = "", fashioniq: str = "", circo: str = ""
) -> tuple[pd.DataFrame, Counter, list[str]]:
    """The validation splits of the three benchmarks from their annotation folders (the authors' layouts:
    CIRR's inner ``cirr/``, FashionIQ's root, CIRCO's root).

    Returns:
        ``(table, CIRCO's semantic aspects counted over its queries, why a benchmark was skipped)``:
        one row per benchmark whose folder is given and readable; the gallery size is ``None`` where
        the files do not list it (CIRCO's gallery is COCO 2017 unlabeled, listed outside its
        annotations).
    """
    rows, aspects, skipped = {}, Counter(), []
    for name, folder, read in (("CIRR", cirr, _cirr), ("FashionIQ", fashioniq, _fashioniq), ("CIRCO", circo, _circo)):
        if not folder:
            skipped.append(f"{name}: no annotation folder given")
            continue
        try:
            got = read(Path(folder))
        except FileNotFoundError as err:
            skipped.append(f"{name}: {err.filename or err}: not found")
            continue
        if name == "CIRCO":
            got, aspects = got
        rows[name] = got
    return pd.DataFrame(rows).T, aspects, skipped


def map_per_aspect(rankings: Sequence[Sequence[str]], queries: Sequence[CIRQuery], k: int = 10) -> dict[str, float]:
    """mAP@k (percent) per semantic aspect: CIRCO's (stored joined by ``,``; a query counts in each of
    its aspects) or the world's change types (``colour+shape`` is one aspect); empty when the queries
    carry no aspect."""
    per: dict[str, list[float]] = {}
    for ranking, query in zip(rankings, queries):
        for aspect in query_aspects(query):
            per.setdefault(aspect, []).append(100.0 * average_precision_at_k(ranking, query.ground_truths, k))
    return {a: float(np.mean(v)) for a, v in per.items()}
