"""Prediction files for the CIRR and CIRCO evaluation servers.

Formats (as the servers and the authors' scripts expect):

* CIRR ``recall``: ``{"version": "rc2", "metric": "recall", "<pairid>": [50 image names], ...}``;
  CIRR ``recall_subset``: same with ``"metric": "recall_subset"`` and the top 3 names ranked inside
  the query's ``img_set`` (reference excluded).
* CIRCO: ``{"<query id>": [50 integer image ids], ...}`` for every query of the split.

Length rules: a ranking must hold at least ``k`` (50, or 3 for the subset) *distinct* entries;
longer rankings (e.g. the whole gallery) are cut to their first ``k``; shorter ones, duplicates
within the first ``k``, or a CIRR reference inside its own ranking are errors, because the servers
score such files silently wrong. Files are written atomically (temporary file, then rename) so an
interrupted run never leaves a half-written submission.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from searle_core.datasets.base import CIRQuery
from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_write_many, atomic_write_text

TOP_K = 50
SUBSET_TOP_K = 3


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` via a temporary file in the same folder and a rename.

    Args:
        path: destination file; its folder is created if needed.
        obj: anything ``json.dump`` accepts.
    """
    return atomic_write_text(json.dumps(obj), path)


def _top_k(query_id: str, ranking: Sequence[Any], k: int) -> list:
    """First ``k`` entries of a ranking, checked for length and uniqueness."""
    top = list(ranking)[:k]
    if len(top) < k:
        raise InputError(f"query {query_id}: ranking has {len(top)} entries, the server needs {k}")
    if len({str(x) for x in top}) < k:
        raise InputError(f"query {query_id}: duplicate image in the top {k}")
    return top


def _check_keys(predictions: Mapping[str, Any], queries: Sequence[CIRQuery] | None, what: str) -> None:
    if queries is None:
        return
    expected = {q.query_id for q in queries}
    got = {str(k) for k in predictions}
    missing, extra = expected - got, got - expected
    if missing or extra:
        raise InputError(
            f"{what}: {len(missing)} query id(s) without predictions (e.g. {sorted(missing)[:5]}) and "
            f"{len(extra)} unknown id(s) (e.g. {sorted(extra)[:5]}); the server needs every query"
        )


def cirr_submission(
    predictions: Mapping[str, Sequence[str]],
    subset_predictions: Mapping[str, Sequence[str]],
    queries: Sequence[CIRQuery] | None = None,
) -> tuple[dict, dict]:
    """Build the CIRR ``recall`` and ``recall_subset`` submission dictionaries.

    Args:
        predictions: pairid -> ranked gallery names (at least 50, reference excluded).
        subset_predictions: pairid -> names ranked inside the query's ``img_set`` (at least 3,
            reference excluded).
        queries: when given, every query must be present, and references / subsets are checked.
    """
    _check_keys(predictions, queries, "CIRR recall")
    _check_keys(subset_predictions, queries, "CIRR recall_subset")
    by_id = {q.query_id: q for q in queries or ()}
    recall: dict[str, Any] = {"version": "rc2", "metric": "recall"}
    subset: dict[str, Any] = {"version": "rc2", "metric": "recall_subset"}
    for pairid, ranking in predictions.items():
        top = _top_k(str(pairid), ranking, TOP_K)
        q = by_id.get(str(pairid))
        if q is not None and q.reference in top:
            raise InputError(f"pairid {pairid}: reference {q.reference} is in its own top {TOP_K}")
        recall[str(pairid)] = [str(x) for x in top]
    for pairid, ranking in subset_predictions.items():
        top = _top_k(str(pairid), ranking, SUBSET_TOP_K)
        q = by_id.get(str(pairid))
        if q is not None:
            if q.reference in top:
                raise InputError(f"pairid {pairid}: reference {q.reference} is in its subset ranking")
            outside = [x for x in top if q.subset is not None and x not in q.subset]
            if outside:
                raise InputError(f"pairid {pairid}: {outside} not in the query's img_set")
        subset[str(pairid)] = [str(x) for x in top]
    return recall, subset


def write_cirr_submission(
    out_dir: str | Path,
    predictions: Mapping[str, Sequence[str]],
    subset_predictions: Mapping[str, Sequence[str]],
    name: str = "searle",
    queries: Sequence[CIRQuery] | None = None,
) -> tuple[Path, Path]:
    """Write ``recall_submission_<name>.json`` and ``recall_subset_submission_<name>.json``.

    Args:
        out_dir: destination folder.
        predictions: pairid -> ranked gallery names.
        subset_predictions: pairid -> names ranked inside ``img_set``.
        name: run name used in the file names (as the authors' script).
        queries: optional queries for completeness checks (all 4,148 on test1).
    """
    recall, subset = cirr_submission(predictions, subset_predictions, queries)
    out_dir = Path(out_dir)
    # Both written before either is renamed: a full disk never leaves one new file beside an old one.
    files = {
        out_dir / f"recall_submission_{name}.json": json.dumps(recall),
        out_dir / f"recall_subset_submission_{name}.json": json.dumps(subset),
    }
    first, second = atomic_write_many({path: _text_writer(text) for path, text in files.items()})
    return first, second


def _text_writer(text: str):
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return write


def cirr_subset_rankings(
    queries: Sequence[CIRQuery], rankings: Sequence[Sequence[str]], k: int = SUBSET_TOP_K
) -> dict[str, list[str]]:
    """Per pairid, the first ``k`` ``img_set`` members (reference excluded) in ranking order.

    Args:
        queries: CIRR queries (their ``subset`` is the ``img_set``).
        rankings: full-gallery rankings, in query order.
        k: how many to keep (3 for the server's ``recall_subset`` file).
    """
    out = {}
    for q, ranking in zip(queries, rankings):
        members = set(q.subset or ()) - {q.reference}
        out[q.query_id] = [n for n in ranking if n in members][:k]
    return out


def _circo_id(name: Any) -> int:
    # The server compares integer COCO ids; gallery names are str(id).
    try:
        return int(name)
    except (TypeError, ValueError):
        raise InputError(f"CIRCO image name {name!r} is not an integer image id") from None


def circo_submission(
    predictions: Mapping[str, Sequence[Any]], queries: Sequence[CIRQuery] | None = None
) -> dict[str, list[int]]:
    """Build the CIRCO submission dictionary ``{query id: top-50 integer image ids}``.

    Args:
        predictions: query id -> ranked image names/ids (at least 50 distinct).
        queries: when given, every query must be present (800 on test).
    """
    _check_keys(predictions, queries, "CIRCO")
    out: dict[str, list[int]] = {}
    for qid, ranking in predictions.items():
        out[str(qid)] = [_circo_id(x) for x in _top_k(str(qid), ranking, TOP_K)]
    return dict(sorted(out.items(), key=lambda kv: (not kv[0].isdigit(), int(kv[0]) if kv[0].isdigit() else 0, kv[0])))


def write_circo_submission(
    path: str | Path, predictions: Mapping[str, Sequence[Any]], queries: Sequence[CIRQuery] | None = None
) -> Path:
    """Write a CIRCO submission file atomically.

    Args:
        path: destination JSON file.
        predictions: query id -> ranked image names/ids.
        queries: optional queries for the completeness check.
    """
    return write_json_atomic(path, circo_submission(predictions, queries))
