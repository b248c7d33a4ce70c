"""Score a CIRCO validation prediction file, ``{query id: [top-50 COCO image ids]}``, as the evaluation server does:
longer lists cut to 50, shorter than ``min_predictions`` an error. Test predictions can only go to the server."""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from searle_core.infra.errors import InputError
from searle_core.infra.files import read_json
from searle_core.metrics.benchmarks import CIRCO_KS, check_unique, circo_metrics

CIRCO_TOP_K = 50
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
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return int(value) if integral or (isinstance(value, str) and _INT_STRING.fullmatch(value)) else None


def _int_field(annotation: dict, field: str, where: str, what: str) -> int:
    if field not in annotation:
        raise CIRCOScoringError(f"{where}: missing field '{field}' (expected {what})")
    if (value := _as_int(annotation[field])) is None:
        raise CIRCOScoringError(f"{where}: field '{field}' is {annotation[field]!r}, expected {what}")
    return value


def _id_list(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:_SHOW])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > _SHOW else "")


def _read_annotations(annotations: str | Path | list) -> list[tuple[int, int, list[int], list[str]]]:
    """(query id, target, ground truths, aspects) of each annotation."""
    content, label = _load_json(annotations, "annotations")
    if not isinstance(content, list) or not all(isinstance(a, dict) for a in content):
        raise CIRCOScoringError(
            f"{label}: expected a JSON list of query annotations (objects with 'id', "
            f"'target_img_id', 'gt_img_ids', ...), got {type(content).__name__}"
        )
    if not content:
        raise CIRCOScoringError(f"{label}: the annotation list is empty")
    queries, seen = [], set()
    for position, annotation in enumerate(content):
        query_id = _int_field(annotation, "id", f"{label}: annotation #{position}", "an integer query id")
        where = f"{label}: annotation id {query_id}"
        if query_id in seen:
            raise CIRCOScoringError(f"{where}: field 'id' repeats; expected unique query ids")
        seen.add(query_id)
        if "gt_img_ids" not in annotation:
            raise CIRCOScoringError(
                f"{where}: no field 'gt_img_ids' (expected the list of ground-truth image ids). This looks like the "
                "CIRCO test split, whose ground truths are not public: only the validation split (val.json) can be "
                "scored locally; submit test predictions to the evaluation server https://circo.micc.unifi.it/"
            )
        raw_gts = annotation["gt_img_ids"]
        gts = [_as_int(g) for g in raw_gts] if isinstance(raw_gts, list) else [None]
        if not gts or any(g is None for g in gts):
            raise CIRCOScoringError(
                f"{where}: field 'gt_img_ids' is {raw_gts!r}, expected a non-empty list of integer image ids"
            )
        target = _int_field(annotation, "target_img_id", where, "an integer image id")
        aspects = annotation.get("semantic_aspects", [])
        if not isinstance(aspects, list) or not all(isinstance(a, str) for a in aspects):
            raise CIRCOScoringError(f"{where}: field 'semantic_aspects' is {aspects!r}, expected a list of aspects")
        queries.append((query_id, target, gts, aspects))
    return queries


def _read_predictions(predictions: str | Path | Mapping, query_ids: list[int], min_predictions: int) -> list[list[int]]:
    """The top 50 of each query, in ``query_ids`` order."""
    content, label = _load_json(predictions, "predictions")
    if not isinstance(content, Mapping):
        raise CIRCOScoringError(
            f"{label}: expected a JSON object {{query id: [top-{CIRCO_TOP_K} image ids]}}, got {type(content).__name__}"
        )
    known, id_range = set(query_ids), f"{min(query_ids)}..{max(query_ids)}"
    by_id: dict[int, Any] = {}
    unknown: list[str] = []
    for key, values in content.items():
        query_id = _as_int(key)
        if query_id is None or query_id not in known:
            unknown.append(repr(key))
        elif query_id in by_id:
            raise CIRCOScoringError(f"{label}: query id {query_id} appears under two keys; expected one key per query")
        else:
            by_id[query_id] = values
    if unknown:
        raise CIRCOScoringError(
            f"{label}: unknown query id(s) {_id_list(unknown)}; expected only the "
            f"{len(query_ids)} annotation ids ({id_range})"
        )
    if missing := [q for q in query_ids if q not in by_id]:
        raise CIRCOScoringError(
            f"{label}: no predictions for query id(s) {_id_list(missing)}; expected a key for "
            f"every one of the {len(query_ids)} annotation ids ({id_range})"
        )
    rankings = []
    for query_id in query_ids:
        values, where = by_id[query_id], f"{label}: query {query_id}"
        if not isinstance(values, (list, tuple)):
            raise CIRCOScoringError(
                f"{where}: value is {type(values).__name__}, expected a list of {CIRCO_TOP_K} image ids"
            )
        ids = [_as_int(v) for v in values]
        if bad := [v for v, i in zip(values, ids) if i is None]:
            raise CIRCOScoringError(
                f"{where}: image id {bad[0]!r} is not an integer; expected integer COCO image ids "
                f"(ints or int-like strings)"
            )
        if len(ids) < min_predictions:
            raise CIRCOScoringError(
                f"{where}: {len(ids)} image ids, expected the top {CIRCO_TOP_K} (at least {min_predictions})"
            )
        check_unique(ids, where, CIRCOScoringError)
        rankings.append(ids[:CIRCO_TOP_K])
    return rankings


def score_circo(
    annotations: str | Path | list[dict],
    predictions: str | Path | Mapping[str, Sequence[int | str]],
    *,
    min_predictions: int = CIRCO_TOP_K,
) -> dict:
    """Score CIRCO validation predictions (paths or loaded objects; keys ints or int-like strings) as
    the server does: the :func:`~searle_core.metrics.circo_metrics` dict, unrounded percents."""
    ids, targets, gts, aspects = zip(*_read_annotations(annotations))
    return circo_metrics(_read_predictions(predictions, list(ids), min_predictions), gts, targets, aspects, CIRCO_KS)


def format_circo_scores(scores: Mapping[str, Any]) -> str:
    """A :func:`score_circo` result as a text table: mAP@K and Recall@K, then mAP@10 per aspect."""
    ks = sorted(int(key.split("@", 1)[1]) for key in scores if key.startswith("mAP@"))
    lines = ["CIRCO scores (percent)", f"{'':<8}" + "".join(f"{'@' + str(k):>8}" for k in ks)]
    for metric in ("mAP", "Recall"):
        cells = "".join(f"{scores[f'{metric}@{k}']:>8.2f}" if f"{metric}@{k}" in scores else f"{'-':>8}" for k in ks)
        lines.append(f"{metric:<8}{cells}")
    lines.append("mAP uses every ground truth (gt_img_ids); Recall only the target_img_id.")
    if semantic := scores.get("semantic_mAP@10"):
        name_width = max(len(aspect) for aspect in semantic)
        lines += ["", "mAP@10 per semantic aspect"]
        lines += [f"  {aspect:<{name_width}}  {value:6.2f}" for aspect, value in semantic.items()]
    return "\n".join(lines)
