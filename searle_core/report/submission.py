"""Prediction files for the CIRR (``recall``, ``recall_subset``) and CIRCO evaluation servers, in their formats.
Rankings are cut to the servers' ``k``; shorter ones, duplicates or a CIRR reference in its own ranking are errors
(the servers would score them silently wrong). Written atomically: never half a submission."""

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


def _top_k(query_id: str, ranking: Sequence[Any], k: int) -> list:
    top = list(ranking)[:k]
    if len(top) < k:
        raise InputError(f"query {query_id}: ranking has {len(top)} entries, the server needs {k}")
    if len({str(x) for x in top}) < k:
        raise InputError(f"query {query_id}: duplicate image in the top {k}")
    return top


def _check_keys(predictions: Mapping[str, Any], queries: Sequence[CIRQuery] | None, what: str) -> None:
    if queries is None:
        return
    expected, got = {q.query_id for q in queries}, {str(k) for k in predictions}
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
    """CIRR's ``{"version": "rc2", "metric": ..., "<pairid>": [names]}``: ``recall`` (top 50) and ``recall_subset``
    (top 3 inside ``img_set``); with ``queries``, every query must be present and references / subsets are checked."""
    _check_keys(predictions, queries, "CIRR recall")
    _check_keys(subset_predictions, queries, "CIRR recall_subset")
    by_id, files = {q.query_id: q for q in queries or ()}, []
    for ranked, k, metric in ((predictions, TOP_K, "recall"), (subset_predictions, SUBSET_TOP_K, "recall_subset")):
        files.append({"version": "rc2", "metric": metric})
        for pairid, ranking in ranked.items():
            top, q = _top_k(str(pairid), ranking, k), by_id.get(str(pairid))
            if q is not None and q.reference in top:
                raise InputError(f"pairid {pairid}: reference {q.reference} is in its own top {k} ({metric})")
            if k == SUBSET_TOP_K and q is not None and q.subset is not None:
                if outside := [x for x in top if x not in q.subset]:
                    raise InputError(f"pairid {pairid}: {outside} not in the query's img_set")
            files[-1][str(pairid)] = [str(x) for x in top]
    return files[0], files[1]


def write_cirr_submission(
    out_dir: str | Path,
    predictions: Mapping[str, Sequence[str]],
    subset_predictions: Mapping[str, Sequence[str]],
    name: str = "searle",
    queries: Sequence[CIRQuery] | None = None,
) -> tuple[Path, Path]:
    """Write ``recall_submission_<name>.json`` and ``recall_subset_submission_<name>.json`` (see
    :func:`cirr_submission`), both renamed into place only once both are written."""
    recall, subset = cirr_submission(predictions, subset_predictions, queries)
    out = Path(out_dir)

    def write(data, tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:  # builtins.open: the fault tests replace it
            f.write(json.dumps(data))

    files = {out / f"recall_submission_{name}.json": recall, out / f"recall_subset_submission_{name}.json": subset}
    first, second = atomic_write_many({path: lambda tmp, data=data: write(data, tmp) for path, data in files.items()})
    return first, second


def cirr_subset_rankings(
    queries: Sequence[CIRQuery], rankings: Sequence[Sequence[str]], k: int = SUBSET_TOP_K
) -> dict[str, list[str]]:
    """Per pairid, the first ``k`` ``img_set`` members (reference excluded) in ranking order."""
    out = {}
    for q, ranking in zip(queries, rankings):
        members = set(q.subset or ()) - {q.reference}
        out[q.query_id] = [n for n in ranking if n in members][:k]
    return out


def _circo_id(name: Any) -> int:
    try:  # the server compares integer COCO ids; gallery names are str(id)
        return int(name)
    except (TypeError, ValueError):
        raise InputError(f"CIRCO image name {name!r} is not an integer image id") from None


def circo_submission(
    predictions: Mapping[str, Sequence[Any]], queries: Sequence[CIRQuery] | None = None
) -> dict[str, list[int]]:
    """``{query id: top-50 integer image ids}``; with ``queries``, every query must be present."""
    _check_keys(predictions, queries, "CIRCO")
    out = {str(qid): [_circo_id(x) for x in _top_k(str(qid), ranking, TOP_K)] for qid, ranking in predictions.items()}
    return dict(sorted(out.items(), key=lambda kv: (not kv[0].isdigit(), int(kv[0]) if kv[0].isdigit() else 0, kv[0])))


def write_circo_submission(
    path: str | Path, predictions: Mapping[str, Sequence[Any]], queries: Sequence[CIRQuery] | None = None
) -> Path:
    """Write :func:`circo_submission` to ``path`` atomically."""
    return atomic_write_text(json.dumps(circo_submission(predictions, queries)), path)
