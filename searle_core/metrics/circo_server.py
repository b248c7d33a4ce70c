"""Score a CIRCO prediction file locally, the way the CIRCO evaluation server does.

Only the **validation** split can be scored here: the test split's ground truths are withheld and
test predictions go to the evaluation server (https://circo.micc.unifi.it/).

Prediction file format (same as the server's): a JSON object ``{query id: [image ids]}`` with the
top 50 COCO image ids of every query, best first, e.g. ``{"0": [9761, 489535, ...], ...}``.

Checks, each failing with a :class:`CIRCOScoringError` (a ``ValueError``) that names the file, the
query or field and what was expected:

* every annotation id has predictions (the message lists the first missing ids) and no other query
  id appears;
* each value is a list of image ids: ints or int-like strings (``"9761"``); floats, booleans and
  other strings are rejected;
* **length**: the server scores the top 50, so a list with *more* than 50 ids is cut to its first
  50, while a list with *fewer* than ``min_predictions`` ids (50 by default) is rejected, because
  the server's format requires the top 50 and a short list is nearly always a truncation bug. Pass
  ``min_predictions=0`` to score short lists anyway (missing ranks then count as misses);
* an image id repeated inside one query's list (anywhere in the list) is rejected, and so is a
  query id repeated as a key of the file (JSON would silently keep the last copy);
* annotations without ``gt_img_ids`` (the test split) are rejected with a message saying that only
  validation can be scored locally.

The official ``evaluation.py`` is the reference for the arithmetic: AP@K divides by
``min(#GT, K)``, Recall@K looks for ``target_img_id`` only, and semantic mAP@10 averages AP@10 over
the queries tagged with each aspect. An annotation file without ``semantic_aspects`` (an early
CIRCO release) is accepted; the semantic breakdown is then empty.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from searle_core.infra.errors import InputError, read_json
from searle_core.metrics import CIRCO_KS, circo_metrics

CIRCO_TOP_K = 50
CIRCO_SERVER_URL = "https://circo.micc.unifi.it/"
_INT_STRING = re.compile(r"\s*[+-]?\d+\s*")
_SHOW = 5  # how many offending ids an error message lists


class CIRCOScoringError(InputError):
    """A CIRCO annotation or prediction file that cannot be scored."""


def _load_json(source: str | Path | Any, kind: str) -> tuple[Any, str]:
    """Return (content, label) for a path or an already-loaded object."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{kind} file {path} does not exist")
        try:
            return read_json(path, f"{kind} file"), str(path)
        except InputError as error:  # invalid JSON, non-UTF-8 bytes, a key repeated ("0" twice)
            raise CIRCOScoringError(str(error)) from None
    return source, f"<{kind} given as a Python object>"


def _as_int(value: Any) -> int | None:
    """An int for ints and int-like strings, None for anything else (floats and bools included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str) and _INT_STRING.fullmatch(value):
        return int(value)
    return None


def _id_list(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:_SHOW])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > _SHOW else "")


def _read_annotations(annotations: str | Path | list) -> tuple[list[dict], str]:
    content, label = _load_json(annotations, "annotations")
    if not isinstance(content, list) or not all(isinstance(a, dict) for a in content):
        raise CIRCOScoringError(
            f"{label}: expected a JSON list of query annotations (objects with 'id', "
            f"'target_img_id', 'gt_img_ids', ...), got {type(content).__name__}"
        )
    if not content:
        raise CIRCOScoringError(f"{label}: the annotation list is empty")
    queries: list[dict] = []
    seen: set[int] = set()
    for position, annotation in enumerate(content):
        where = f"{label}: annotation #{position}"
        if "id" not in annotation:
            raise CIRCOScoringError(f"{where}: missing field 'id' (expected an integer query id)")
        query_id = _as_int(annotation["id"])
        if query_id is None:
            raise CIRCOScoringError(f"{where}: field 'id' is {annotation['id']!r}, expected an integer query id")
        where = f"{label}: annotation id {query_id}"
        if query_id in seen:
            raise CIRCOScoringError(f"{where}: field 'id' repeats; expected unique query ids")
        seen.add(query_id)
        if "gt_img_ids" not in annotation:
            raise CIRCOScoringError(
                f"{where}: no field 'gt_img_ids' (expected the list of ground-truth image ids). "
                f"This looks like the CIRCO test split, whose ground truths are not public: only "
                f"the validation split (val.json) can be scored locally; submit test predictions "
                f"to the evaluation server {CIRCO_SERVER_URL}"
            )
        raw_gts = annotation["gt_img_ids"]
        gts = [_as_int(g) for g in raw_gts] if isinstance(raw_gts, list) else [None]
        if not gts or any(g is None for g in gts):
            raise CIRCOScoringError(
                f"{where}: field 'gt_img_ids' is {raw_gts!r}, expected a non-empty list of integer image ids"
            )
        if "target_img_id" not in annotation:
            raise CIRCOScoringError(f"{where}: missing field 'target_img_id' (expected an integer image id)")
        target = _as_int(annotation["target_img_id"])
        if target is None:
            raise CIRCOScoringError(
                f"{where}: field 'target_img_id' is {annotation['target_img_id']!r}, expected an integer image id"
            )
        aspects = annotation.get("semantic_aspects", [])
        if not isinstance(aspects, list) or not all(isinstance(a, str) for a in aspects):
            raise CIRCOScoringError(
                f"{where}: field 'semantic_aspects' is {aspects!r}, expected a list of aspect names"
            )
        queries.append({"id": query_id, "target": target, "gts": gts, "aspects": aspects})
    return queries, label


def _read_predictions(
    predictions: str | Path | Mapping, query_ids: list[int], min_predictions: int
) -> tuple[dict[int, list[int]], str]:
    content, label = _load_json(predictions, "predictions")
    if not isinstance(content, Mapping):
        raise CIRCOScoringError(
            f"{label}: expected a JSON object {{query id: [top-{CIRCO_TOP_K} image ids]}}, got {type(content).__name__}"
        )
    known = set(query_ids)
    id_range = f"{min(query_ids)}..{max(query_ids)}"
    by_id: dict[int, list[int]] = {}
    unknown: list[str] = []
    for key, values in content.items():
        query_id = _as_int(key)
        if query_id is None or query_id not in known:
            unknown.append(repr(key))
            continue
        if query_id in by_id:
            raise CIRCOScoringError(f"{label}: query id {query_id} appears under two keys; expected one key per query")
        by_id[query_id] = values
    if unknown:
        raise CIRCOScoringError(
            f"{label}: unknown query id(s) {_id_list(unknown)}; expected only the "
            f"{len(query_ids)} annotation ids ({id_range})"
        )
    missing = [q for q in query_ids if q not in by_id]
    if missing:
        raise CIRCOScoringError(
            f"{label}: no predictions for query id(s) {_id_list(missing)}; expected a key for "
            f"every one of the {len(query_ids)} annotation ids ({id_range})"
        )

    rankings: dict[int, list[int]] = {}
    for query_id in query_ids:
        values = by_id[query_id]
        where = f"{label}: query {query_id}"
        if not isinstance(values, (list, tuple)):
            raise CIRCOScoringError(
                f"{where}: value is {type(values).__name__}, expected a list of {CIRCO_TOP_K} image ids"
            )
        ids = [_as_int(v) for v in values]
        bad = [v for v, i in zip(values, ids) if i is None]
        if bad:
            raise CIRCOScoringError(
                f"{where}: image id {bad[0]!r} is not an integer; expected integer COCO image ids "
                f"(ints or int-like strings)"
            )
        if len(ids) < min_predictions:
            raise CIRCOScoringError(
                f"{where}: {len(ids)} image ids, expected the top {CIRCO_TOP_K} (at least {min_predictions})"
            )
        first: dict[int, int] = {}
        for position, image_id in enumerate(ids):
            earlier = first.setdefault(image_id, position)
            if earlier != position:
                raise CIRCOScoringError(
                    f"{where}: image id {image_id} appears twice (ranks {earlier + 1} and "
                    f"{position + 1}); expected unique image ids per query"
                )
        rankings[query_id] = ids[:CIRCO_TOP_K]
    return rankings, label


def score_circo(
    annotations: str | Path | list[dict],
    predictions: str | Path | Mapping[str, Sequence[int | str]],
    *,
    min_predictions: int = CIRCO_TOP_K,
) -> dict:
    """Score CIRCO validation predictions as the evaluation server does.

    Args:
        annotations: path to CIRCO ``val.json`` or its loaded list of annotations.
        predictions: path to a prediction JSON file or its loaded dict ``{query id: [image ids]}``
            (keys may be ints or int-like strings).
        min_predictions: fewest image ids accepted per query (default 50, the server's format);
            lists longer than 50 are cut to their first 50.

    Returns:
        The :func:`searle_core.metrics.circo_metrics` dict, unrounded percents: ``mAP@5``,
        ``mAP@10``, ``mAP@25``, ``mAP@50``, ``Recall@5`` ... ``Recall@50`` and
        ``semantic_mAP@10`` (``{aspect: value}``).

    Raises:
        CIRCOScoringError: a ValueError naming the file, the query or field and the expected value.
        FileNotFoundError: a path that does not exist.
    """
    if isinstance(min_predictions, bool) or not isinstance(min_predictions, int):
        raise TypeError(f"min_predictions must be an int, got {min_predictions!r}")
    queries, _ = _read_annotations(annotations)
    query_ids = [q["id"] for q in queries]
    rankings, _ = _read_predictions(predictions, query_ids, min_predictions)
    return circo_metrics(
        [rankings[q["id"]] for q in queries],
        [q["gts"] for q in queries],
        [q["target"] for q in queries],
        [q["aspects"] for q in queries],
        ks=CIRCO_KS,
    )


def format_circo_scores(scores: Mapping[str, Any]) -> str:
    """Render a :func:`score_circo` result as a plain-text table (percent, two decimals).

    Args:
        scores: the dict returned by :func:`score_circo` or :func:`~searle_core.metrics.circo_metrics`.

    Returns:
        A multi-line table: mAP@K and Recall@K side by side, then mAP@10 per semantic aspect.
    """
    ks = sorted(int(key.split("@", 1)[1]) for key in scores if key.startswith("mAP@"))
    width = 8
    lines = ["CIRCO scores (percent)", f"{'':<8}" + "".join(f"{'@' + str(k):>{width}}" for k in ks)]
    for metric in ("mAP", "Recall"):
        cells = "".join(
            f"{scores[f'{metric}@{k}']:>{width}.2f}" if f"{metric}@{k}" in scores else f"{'-':>{width}}" for k in ks
        )
        lines.append(f"{metric:<8}{cells}")
    lines.append("mAP uses every ground truth (gt_img_ids); Recall only the target_img_id.")
    semantic = scores.get("semantic_mAP@10") or {}
    if semantic:
        name_width = max(len(aspect) for aspect in semantic)
        lines.append("")
        lines.append("mAP@10 per semantic aspect")
        for aspect, value in semantic.items():
            lines.append(f"  {aspect:<{name_width}}  {value:6.2f}")
    return "\n".join(lines)
