"""The real benchmarks, CIRR, FashionIQ and CIRCO, read from their release layouts (``*_LAYOUT``), with what
their annotation text may name: paths inside the dataset (checked lexically: linked image folders must keep
working), ids that are ids, captions that are text.
- CIRR: the gallery is the split file's names in order; a query's reference leaves its ranking;
  ``subset`` keeps the six ``img_set.members`` as released (Recall_subset drops the reference).
- FashionIQ: captions stripped of ``.?, `` as SEARLE does (empty ones kept: counts match the release).
  Each query is ranked against its category's gallery (``extra["gallery_by_category"]``); ranking
  against ``gallery``, their union, would not reproduce the paper's numbers.
- CIRCO: the gallery is the COCO unlabeled image-info file's images, named ``str(id)``; ``aspect``
  joins a query's semantic aspects with ``,`` (:func:`query_aspects`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from searle_core.datasets.base import CaptionCorpus, CIRBenchmark, CIRQuery
from searle_core.datasets.folder import CheckImages, FileImageSource, OnMissing, resolve_missing
from searle_core.infra.errors import InputError
from searle_core.infra.files import check_annotations, check_unique, digest, read_json, read_text

CIRR_SPLITS = ("train", "val", "test1")
CIRR_LAYOUT = """\
<root>/   (the CIRR folder, as released and as the SEARLE authors' README shows it)
  cirr/
    captions/cap.rc2.{train,val,test1}.json
    image_splits/split.rc2.{train,val,test1}.json   (name -> "./dev/dev-244-0-img0.png", relative to <root>)
  train/<0..99>/*.png
  dev/*.png
  test1/*.png
(also accepted: --dataset-path <root>/cirr, or captions/ and image_splits/ directly in <root>)"""
FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
FASHIONIQ_SPLITS = ("train", "val", "test")
FASHIONIQ_LAYOUT = """\
<root>/
  captions/cap.{dress,shirt,toptee}.{train,val,test}.json   ([{"candidate", "target", "captions": [2]}])
  image_splits/split.{dress,shirt,toptee}.{train,val,test}.json   (list of asins)
  images/<asin>.jpg   (or <asin>.png in some releases)"""
CIRCO_SPLITS = ("val", "test")
#: CIRCO's semantic aspects, in the order the official evaluator reports them.
CIRCO_ASPECTS: tuple[str, ...] = tuple(
    "cardinality addition negation direct_addressing compare_change comparative_statement "
    "statement_with_conjunction spatial_relations_background viewpoint".split()
)
IMAGE_INFO = "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
CIRCO_LAYOUT = """\
<root>/
  annotations/{val,test}.json
  COCO2017_unlabeled/
    annotations/image_info_unlabeled2017.json   ({"images": [{"id", "file_name", ...}]})
    unlabeled2017/000000271520.jpg ...   (12-digit zero-padded ids)"""


def _describe(entry: object) -> str:
    # ascii(): a lone surrogate cannot be printed to a UTF-8 terminal; its escape can.
    return ascii(entry) if isinstance(entry, str) else repr(entry)


def contained_path(root: str | os.PathLike, entry: object, annotation: str | os.PathLike, where: str) -> Path:
    """``root / entry``, normalised, once the entry is known to name a file inside ``root``."""
    if not isinstance(entry, str):
        kind = type(entry).__name__
        raise InputError(f"{annotation}: {where} is a JSON {kind} ({_describe(entry)}); expected a relative image path")
    # The common case, checked cheaply (CIRCO lists 123k files): no "..", not absolute, plain text.
    plain = entry and entry.isascii() and ".." not in entry and "\x00" not in entry
    if plain and not entry.startswith(("/", "\\")):
        return (root if isinstance(root, Path) else Path(root)) / entry
    shown = _describe(entry)
    if not entry or "\x00" in entry:
        raise InputError(f"{annotation}: {where} names the path {shown}; expected a relative image path")
    try:
        os.fsencode(entry)
    except UnicodeEncodeError:
        raise InputError(
            f"{annotation}: {where} names the path {shown}, which holds a character no file name can "
            "(a lone surrogate); expected a relative image path"
        ) from None
    if os.path.isabs(entry) or entry.startswith(("/", "\\")):
        raise InputError(
            f"{annotation}: {where} names the absolute path {shown}; expected a path relative to {root} "
            "(annotation paths may not leave the dataset folder)"
        )
    base = os.path.normpath(os.path.abspath(root))
    joined = os.path.normpath(os.path.join(base, entry))
    if os.path.commonpath([base, joined]) != base or joined == base:
        raise InputError(
            f"{annotation}: {where} names the path {shown}, which leads outside the dataset folder {root}; "
            "expected a path inside it"
        )
    # Keep the caller's (possibly relative) root: only the entry's own part is normalised.
    return Path(root) / os.path.relpath(joined, base)


def check_int_id(value: object, annotation: str | os.PathLike, where: str, field: str) -> str:
    """``str(value)`` for a JSON integer or a string of digits: ``NaN`` or ``12.5`` would make submission keys."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return str(int(value))
    raise InputError(f"{annotation}: {where} has {field} {_describe(value)}; expected an integer id")


def check_caption(value: object, annotation: str | os.PathLike, where: str, field: str) -> str:
    """``value`` when it is a string: a ``null``, number or object would become the prompt ``"... that None"``."""
    if isinstance(value, str):
        return value
    kind = "null" if value is None else type(value).__name__
    raise InputError(f"{annotation}: {where} has {field} of JSON type {kind} ({_describe(value)}); expected a string")


def read_dataset_json(path: str | os.PathLike, what: str) -> Any:
    """A dataset's JSON file; duplicate keys, too deep a nesting and NaN/Infinity are errors naming the file."""
    constants: list[str] = []
    value = read_json(path, what, parse_constant=lambda name: constants.append(name) or float(name))
    if constants:  # rare: only then walk the document to name the field
        stack, field = [(value, "")], None
        while stack and field is None:
            item, at = stack.pop()
            if isinstance(item, float) and not math.isfinite(item):
                field = at or "(top level)"
            elif isinstance(item, dict):
                stack.extend((v, f"{at}.{k}" if at else str(k)) for k, v in reversed(item.items()))
            elif isinstance(item, list):
                stack.extend((v, f"{at}[{i}]") for i, v in reversed(list(enumerate(item))))
        raise InputError(f"{path}: field {field} is {constants[0]}, which JSON does not allow; expected a {what}")
    return value


def check_paths(root: Path, required: Sequence[str], layout: str) -> None:
    if missing := [p for p in required if not (root / p).exists()]:
        raise FileNotFoundError(
            f"dataset folder {root} is incomplete: missing {', '.join(missing)}.\nExpected layout:\n{layout}"
        )


def _check_names(annotation: Path, where: str, expected: str, fields) -> None:
    for field, value in fields:
        if value is not None and not isinstance(value, str):
            raise InputError(f"{annotation}: {where} has {field} {value!r}; expected {expected} (a string)")


def _annotations(path: Path, dataset: str, fields: tuple[str, ...], id_field: str) -> tuple[list[dict], list[str]]:
    """A file's annotations, each with ``fields``, and their integer ids, each once ("12" and 12 are one id)."""
    rows = check_annotations(read_dataset_json(path, f"{dataset} annotation file"), path, fields, id_field)
    ids = [check_int_id(row[id_field], path, f"annotation #{i}", id_field) for i, row in enumerate(rows)]
    check_unique(map(int, ids), path, id_field)
    return rows, ids


def _finish(
    name, split, root, layout, queries, gallery, source, check_images, on_missing, also_bad=(), exclude=False, **extra
) -> CIRBenchmark:
    """The benchmark, once every referenced image is checked (missing ones fail or are dropped)."""
    queries, gallery, skipped = resolve_missing(queries, gallery, source, check_images, on_missing, layout, also_bad)
    extra = {"skipped": skipped, "root": str(root), **extra}
    return CIRBenchmark(name, split, queries, gallery, source, exclude_reference=exclude, extra=extra)


def cirr_layout(root: str | Path) -> tuple[Path, Path]:
    """``(annotations, images)``: the folder holding ``captions/`` and ``image_splits/``, and that of ``./dev/...``."""
    root, images = Path(root), ("train", "dev", "test1")
    has = lambda folder, names: any((folder / n).is_dir() for n in names)
    if has(root / "cirr", ("captions", "image_splits")):
        return root / "cirr", root
    if has(root, ("captions", "image_splits")):  # the inner cirr/ folder given by itself: images in its parent
        return root, root.parent if root.name == "cirr" and not has(root, images) and has(root.parent, images) else root
    return root / "cirr", root


def load_cirr(
    root: str | Path, split: str = "val", on_missing: OnMissing = "error", check_images: CheckImages = "exists"
) -> CIRBenchmark:
    """A CIRR split (``test``/``dev``: ``test1``/``val``), ``query_id = str(pairid)``; no targets on ``test1``."""
    root = Path(root)
    annotations_dir, image_root = cirr_layout(root)
    split = {"test": "test1", "dev": "val"}.get(split, split)
    if split not in CIRR_SPLITS:
        raise InputError(f"unknown CIRR split {split!r}; expected one of {', '.join(CIRR_SPLITS)} (or 'test')")
    cap_rel, split_rel = f"captions/cap.rc2.{split}.json", f"image_splits/split.rc2.{split}.json"
    # Named from the folder the user gave, so the error says "cirr/captions/..." where that is missing.
    required = [(annotations_dir / rel).relative_to(root).as_posix() for rel in (cap_rel, split_rel)]
    check_paths(root, required, CIRR_LAYOUT)
    split_file, cap_file = annotations_dir / split_rel, annotations_dir / cap_rel
    name_to_relpath = read_dataset_json(split_file, "CIRR annotation file")
    if not isinstance(name_to_relpath, dict):
        raise InputError(f"{split_file}: expected a JSON object name -> relative path")
    paths = {n: contained_path(image_root, rel, split_file, f"entry {n!r}") for n, rel in name_to_relpath.items()}

    annotations, pairids = _annotations(cap_file, "CIRR", ("pairid", "reference", "caption"), "pairid")
    queries: list[CIRQuery] = []
    referrers: dict[str, str] = {}
    for ann, pairid in zip(annotations, pairids):
        entry, target, img_set = f"pairid {pairid}", ann.get("target_hard"), ann.get("img_set", {})
        if not isinstance(img_set, dict) or not isinstance(img_set.get("members", []), list):
            raise InputError(f"{cap_file}: {entry} has img_set {img_set!r}; expected an object with a 'members' list")
        members = tuple(img_set.get("members", ())) or None
        fields = [("reference", ann["reference"]), ("target_hard", target)]
        _check_names(cap_file, entry, "an image name", fields + [("img_set member", m) for m in members or ()])
        caption = check_caption(ann["caption"], cap_file, entry, "caption")
        queries.append(CIRQuery(pairid, ann["reference"], (caption,), target, (target,) if target else (), members))
        named = [("reference", ann["reference"]), *([("target", target)] if target else [])]
        for role, name in named + [("img_set member", m) for m in members or ()]:
            referrers.setdefault(name, f"{role} of {cap_rel} pairid {pairid}")

    # A name the split file does not list is another split's: it could never be ranked.
    if unlisted := [n for q in queries for n in (q.reference, q.target, *(q.subset or ())) if n and n not in paths]:
        raise InputError(
            f"{cap_file}: {len(set(unlisted))} image name(s) its captions use are not in {split_file} "
            f"(first: {unlisted[0]!r}, {referrers[unlisted[0]]}); expected the captions and the split file of "
            f"the same split (cap.rc2.{split}.json with split.rc2.{split}.json, as released)"
        )
    source = FileImageSource(paths, referrers, default_referrer=f"gallery entry of {split_rel}")
    args = (queries, list(name_to_relpath), source, check_images, on_missing)
    return _finish("cirr", split, root, CIRR_LAYOUT, *args, exclude=True)


def _fashioniq_image(root: Path, asin: str, referrer: str) -> Path:
    # The asin is annotation text: "<asin>.jpg" must name a file inside images/ before it is looked at.
    jpg = contained_path(root / "images", f"{asin}.jpg", root, f"asin {asin!r} ({referrer})")
    if jpg.exists():
        return jpg
    png = jpg.with_suffix(".png")  # some releases
    return png if png.exists() else jpg


def load_fashioniq(
    root: str | Path,
    split: str = "val",
    category: str | Sequence[str] | None = None,
    on_missing: OnMissing = "error",
    check_images: CheckImages = "exists",
) -> CIRBenchmark:
    """FashionIQ for some categories (``None``: all), query ids ``"<category>-<index>"``, galleries by category."""
    root = Path(root)
    if split not in FASHIONIQ_SPLITS:
        raise InputError(f"unknown FashionIQ split {split!r}; expected one of {', '.join(FASHIONIQ_SPLITS)}")
    categories = (
        list(FASHIONIQ_CATEGORIES) if category is None else [category] if isinstance(category, str) else list(category)
    )
    unknown = [c for c in categories if c not in FASHIONIQ_CATEGORIES]
    if unknown or not categories:
        raise InputError(f"unknown FashionIQ category {unknown}; expected some of {', '.join(FASHIONIQ_CATEGORIES)}")
    check_unique(categories, "FashionIQ categories", "category")  # a repeat would evaluate its queries twice
    required = [f"{kind}.{c}.{split}.json" for kind in ("captions/cap", "image_splits/split") for c in categories]
    check_paths(root, required + ["images"], FASHIONIQ_LAYOUT)

    queries: list[CIRQuery] = []
    gallery_by_category: dict[str, list[str]] = {}
    referrers: dict[str, str] = {}
    for cat in categories:
        split_rel, cap_rel = f"image_splits/split.{cat}.{split}.json", f"captions/cap.{cat}.{split}.json"
        split_file, cap_file = root / split_rel, root / cap_rel
        listing = read_dataset_json(split_file, "FashionIQ split file")
        if not isinstance(listing, list):
            raise InputError(f"{split_file}: expected a JSON list of asins, got a JSON {type(listing).__name__}")
        _check_names(split_file, "the split list", "an asin", ((f"entry #{i}", a) for i, a in enumerate(listing)))
        check_unique(listing, split_file, "asin")
        gallery_by_category[cat] = list(listing)
        for asin in listing:
            referrers.setdefault(asin, f"gallery entry of {split_rel}")
        annotations = read_dataset_json(cap_file, "FashionIQ caption file")
        check_annotations(annotations, cap_file, ("candidate", "captions"))  # no query ids in FashionIQ
        for index, ann in enumerate(annotations):
            target, qid, entry = ann.get("target"), f"{cat}-{index}", f"annotation #{index}"
            _check_names(cap_file, entry, "an asin", [("candidate", ann["candidate"]), ("target", target)])
            if not isinstance(ann["captions"], list):
                raise InputError(f"{cap_file}: {entry} has captions {ann['captions']!r}; expected a list of strings")
            # ".?, " stripped from both ends, as the reference code does
            captions = tuple(check_caption(c, cap_file, entry, "captions").strip(".?, ") for c in ann["captions"])
            queries.append(CIRQuery(qid, ann["candidate"], captions, target, (target,) if target else (), category=cat))
            # Query references win over gallery entries: they say which query breaks.
            referrers[ann["candidate"]] = f"candidate of {cap_rel} entry {index} ({qid})"
            if target:
                referrers[target] = f"target of {cap_rel} entry {index} ({qid})"

    gallery = list(dict.fromkeys(a for cat in categories for a in gallery_by_category[cat]))
    names = set(gallery) | {q.reference for q in queries} | {q.target for q in queries if q.target}
    source = FileImageSource({a: _fashioniq_image(root, a, referrers[a]) for a in names}, referrers)
    bench = _finish("fashioniq", split, root, FASHIONIQ_LAYOUT, queries, gallery, source, check_images, on_missing)
    kept = set(bench.gallery)
    bench.extra["gallery_by_category"] = {c: [a for a in g if a in kept] for c, g in gallery_by_category.items()}
    return bench


def split_fashioniq_by_category(benchmark: CIRBenchmark) -> dict[str, CIRBenchmark]:
    """One benchmark per category, each with that category's own gallery (how the paper scores)."""
    return {
        cat: replace(
            benchmark,
            queries=[q for q in benchmark.queries if q.category == cat],
            gallery=list(gallery),
            extra=dict(benchmark.extra, gallery_by_category={cat: gallery}),
        )
        for cat, gallery in benchmark.extra["gallery_by_category"].items()
    }


def query_aspects(query: CIRQuery) -> list[str]:
    """The semantic aspects of a CIRCO query as a list (empty when unannotated)."""
    return [a for a in (query.aspect or "").split(",") if a]


def load_circo(
    root: str | Path, split: str = "val", on_missing: OnMissing = "error", check_images: CheckImages = "exists"
) -> CIRBenchmark:
    """One CIRCO split (``val``: 220 queries; ``test``: 800, no ground truths), ``query_id = str(id)``, image
    names ``str(image id)``; ``extra["semantic_aspects"]`` by query."""
    root = Path(root)
    if split not in CIRCO_SPLITS:
        raise InputError(f"unknown CIRCO split {split!r}; expected one of {', '.join(CIRCO_SPLITS)}")
    ann_rel = f"annotations/{split}.json"
    check_paths(root, [ann_rel, IMAGE_INFO], CIRCO_LAYOUT)
    images_dir, info_file, ann_file = root / "COCO2017_unlabeled" / "unlabeled2017", root / IMAGE_INFO, root / ann_rel

    info = read_dataset_json(info_file, "COCO image-info file")
    if not isinstance(info, dict) or not isinstance(info.get("images"), list):
        raise InputError(f"{info_file}: expected COCO image-info JSON with an 'images' list")
    images = check_annotations(info["images"], info_file, ("id", "file_name"))
    ids = [check_int_id(img["id"], info_file, f"image #{i}", "id") for i, img in enumerate(images)]
    check_unique(ids, info_file, "image id")  # a repeat would silently point an id at another file
    paths = {
        i: contained_path(images_dir, img["file_name"], info_file, f"image id {i} file_name")
        for i, img in zip(ids, images)
    }
    gallery, listed = list(paths), set(paths)

    annotations, qids = _annotations(ann_file, "CIRCO", ("id", "reference_img_id", "relative_caption"), "id")
    queries: list[CIRQuery] = []
    referrers: dict[str, str] = {}
    aspects: dict[str, list[str]] = {}
    for ann, qid in zip(annotations, qids):
        entry = f"query id {qid}"
        reference = check_int_id(ann["reference_img_id"], ann_file, entry, "reference_img_id")
        target = ann.get("target_img_id")
        target = None if "target_img_id" not in ann else check_int_id(target, ann_file, entry, "target_img_id")
        gt_list = ann.get("gt_img_ids", [])
        if not isinstance(gt_list, list):
            raise InputError(f"{ann_file}: {entry} has gt_img_ids {gt_list!r}; expected a list of image ids")
        gts = tuple(check_int_id(g, ann_file, entry, "gt_img_ids entry") for g in gt_list)
        check_unique(gts, f"{ann_file}: {entry}", "gt_img_ids entry")
        if target is not None and target not in gts:
            gts = (target, *gts)  # the target is always a ground truth
        aspects[qid] = list(ann.get("semantic_aspects", ()))
        caption = check_caption(ann["relative_caption"], ann_file, entry, "relative_caption")
        queries.append(CIRQuery(qid, reference, (caption,), target, gts, aspect=",".join(aspects[qid]) or None))
        for name, role in [(reference, "reference_img_id"), *((g, "gt_img_ids") for g in gts)]:
            referrers.setdefault(name, f"{role} of {ann_rel} query id {qid}")
            if name not in paths:  # not in the image-info file (an incomplete download): name its COCO file
                paths[name] = images_dir / f"{int(name):012d}.jpg"
                referrers[name] += f" (id not listed in {IMAGE_INFO})"

    source = FileImageSource(paths, referrers, default_referrer=f"image listed in {IMAGE_INFO}")
    # Ids not in the image-info file cannot be retrieved even if their file exists: they count as missing.
    unlisted = [n for n in paths if n not in listed]
    bench = _finish(
        "circo", split, root, CIRCO_LAYOUT, queries, gallery, source, check_images, on_missing, also_bad=unlisted
    )
    bench.extra["semantic_aspects"] = {q.query_id: aspects[q.query_id] for q in bench.queries}
    return bench


CAPTION_FIELDS = ("caption", "text")  # in order of preference
_EXPECTED = (
    "one caption per line, a JSON list of strings (or of objects with a 'caption'/'text' field, or "
    "{'captions': [...]}), or a CSV with a 'caption' or 'text' column"
)


def _bad(path: Path, what: str) -> InputError:
    return InputError(f"captions file {path}: {what}; expected {_EXPECTED}")


def _from_json(path: Path, data) -> list:
    if isinstance(data, dict):
        key = next((k for k in ("captions", *CAPTION_FIELDS) if k in data), None)
        if key is None:
            raise _bad(path, f"a JSON object without a 'captions' or 'text' key (keys: {sorted(data)[:5]})")
        data = data[key]
    if not isinstance(data, list):
        raise _bad(path, f"JSON {type(data).__name__} instead of a list")
    unnamed = [i for i, row in enumerate(data) if isinstance(row, dict) and not any(k in row for k in CAPTION_FIELDS)]
    if unnamed:
        raise _bad(path, f"item {unnamed[0]} has no 'caption' or 'text' field")
    return [next(row[k] for k in CAPTION_FIELDS if k in row) if isinstance(row, dict) else row for row in data]


def read_captions(path: str | Path) -> CaptionCorpus:
    """The captions of ``path`` (in a form ``_EXPECTED`` names) as a :class:`CaptionCorpus` named by content."""
    path = Path(path)
    if not path.is_file():
        raise _bad(path, "no such file")
    text = read_text(path, "captions file")  # a byte-order mark dropped, other bytes than UTF-8 named
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            rows = _from_json(path, json.loads(text))
        except json.JSONDecodeError as err:
            raise _bad(path, f"invalid JSON (line {err.lineno})") from None
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))  # U+2028 or U+0085 inside a caption stays in it
        column = next((c for c in CAPTION_FIELDS if c in (reader.fieldnames or [])), None)
        if column is None:
            raise _bad(path, f"no 'caption' or 'text' column (columns: {reader.fieldnames})")
        rows = [row[column] for row in reader]
    else:
        rows = text.split("\n")  # not splitlines(): U+2028 or U+0085 inside a caption would split it
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, str)), None)
    if bad is not None:
        raise _bad(path, f"caption {bad} is a {type(rows[bad]).__name__}, not a string")
    captions = [r.strip() for r in rows if r.strip()]
    if not captions:
        raise _bad(path, "no captions")
    return CaptionCorpus(f"file-{path.name}-" + digest(captions), lambda: captions)
