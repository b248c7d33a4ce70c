"""FashionIQ (Wu et al., CVPR 2021) in the authors' release layout.

Each query has two relative captions. They are stripped of ``.?, `` at both ends, as SEARLE does
before composing ``"c1 and c2"`` / ``"c2 and c1"``; an empty result is kept (three validation
captions are just punctuation), so query counts match the release.

Gallery decision: FashionIQ is evaluated *per category*, each query ranked against its own
category's gallery (``image_splits/split.<category>.<split>.json``). Loading one category gives a
plain benchmark whose gallery is that list. Loading several (the default: all three) gives one
benchmark whose queries carry ``category``; its ``gallery`` is the de-duplicated union (shirt and
toptee share 121 validation asins) and ``extra["gallery_by_category"]`` keeps each category's own
gallery. Retrieval and metrics must use the latter (or :func:`split_fashioniq_by_category`);
ranking against the union would not reproduce the paper's numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from searle_core.datasets.base import CIRBenchmark, CIRQuery, check_paths
from searle_core.datasets.containment import check_caption, contained_path, read_dataset_json, refuse_repeats
from searle_core.datasets.folder import CheckImages, FileImageSource, OnMissing, resolve_missing
from searle_core.infra.errors import InputError, check_annotations

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
FASHIONIQ_SPLITS = ("train", "val", "test")
FASHIONIQ_LAYOUT = """\
<root>/
  captions/cap.{dress,shirt,toptee}.{train,val,test}.json   ([{"candidate", "target", "captions": [2]}])
  image_splits/split.{dress,shirt,toptee}.{train,val,test}.json   (list of asins)
  images/<asin>.jpg   (or <asin>.png in some releases)"""

_STRIP = ".?, "


def strip_caption(caption: str) -> str:
    """Strip ``.?, `` from both ends of a FashionIQ caption, as the reference code does.

    Args:
        caption: raw relative caption.
    """
    return caption.strip(_STRIP)


def _image_path(root: Path, asin: str, referrer: str) -> Path:
    # The asin is annotation text: "<asin>.jpg" must name a file inside images/ before it is looked at.
    jpg = contained_path(root / "images", f"{asin}.jpg", root, f"asin {asin!r} ({referrer})")
    # Prefer .jpg (the common release); fall back to .png where only that exists.
    if jpg.exists():
        return jpg
    png = jpg.with_suffix(".png")
    return png if png.exists() else jpg


def load_fashioniq(
    root: str | Path,
    split: str = "val",
    category: str | Sequence[str] | None = None,
    on_missing: OnMissing = "error",
    check_images: CheckImages = "exists",
) -> CIRBenchmark:
    """Load FashionIQ for one or several categories.

    Args:
        root: the FashionIQ folder (see ``FASHIONIQ_LAYOUT``).
        split: ``train``, ``val`` or ``test``.
        category: ``dress``, ``shirt``, ``toptee``, a list of them, or ``None`` for all three.
        on_missing: ``"error"`` or ``"skip"`` (count in ``extra["skipped"]``).
        check_images: ``"exists"``, ``"open"`` or ``"none"``.

    Returns:
        A :class:`CIRBenchmark` named ``fashioniq``; query ids are ``"<category>-<index>"``
        (the release has none); ``extra["categories"]`` lists the categories loaded and
        ``extra["gallery_by_category"]`` maps each to its gallery.
    """
    root = Path(root)
    if split not in FASHIONIQ_SPLITS:
        raise InputError(f"unknown FashionIQ split {split!r}; expected one of {', '.join(FASHIONIQ_SPLITS)}")
    if category is None:
        categories = list(FASHIONIQ_CATEGORIES)
    else:
        categories = [category] if isinstance(category, str) else list(category)
    unknown = [c for c in categories if c not in FASHIONIQ_CATEGORIES]
    if unknown or not categories:
        raise InputError(f"unknown FashionIQ category {unknown}; expected some of {', '.join(FASHIONIQ_CATEGORIES)}")

    required = [f"captions/cap.{c}.{split}.json" for c in categories]
    required += [f"image_splits/split.{c}.{split}.json" for c in categories] + ["images"]
    check_paths(root, required, FASHIONIQ_LAYOUT)

    queries: list[CIRQuery] = []
    gallery_by_category: dict[str, list[str]] = {}
    referrers: dict[str, str] = {}
    for cat in categories:
        split_rel = f"image_splits/split.{cat}.{split}.json"
        split_file = root / split_rel
        listing = read_dataset_json(split_file, "FashionIQ split file")
        if not isinstance(listing, list):
            raise InputError(f"{split_file}: expected a JSON list of asins, got a JSON {type(listing).__name__}")
        for i, asin in enumerate(listing):
            if not isinstance(asin, str):
                raise InputError(f"{split_file}: entry #{i} is {asin!r}; expected an asin (a string)")
        refuse_repeats(listing, split_file, "asin")  # the release lists each once
        gallery_by_category[cat] = list(listing)
        for asin in gallery_by_category[cat]:
            referrers.setdefault(asin, f"gallery entry of {split_rel}")
        cap_rel = f"captions/cap.{cat}.{split}.json"
        cap_file = root / cap_rel
        annotations = read_dataset_json(cap_file, "FashionIQ caption file")
        # FashionIQ has no query ids: "candidate" and "captions" are what every entry needs.
        check_annotations(annotations, cap_file, ("candidate", "captions"))
        for index, ann in enumerate(annotations):
            target = ann.get("target")
            qid = f"{cat}-{index}"
            entry = f"annotation #{index}"
            for field, value in (("candidate", ann["candidate"]), ("target", target)):
                if value is not None and not isinstance(value, str):
                    raise InputError(f"{cap_file}: {entry} has {field} {value!r}; expected an asin (a string)")
            if not isinstance(ann["captions"], list):
                raise InputError(f"{cap_file}: {entry} has captions {ann['captions']!r}; expected a list of strings")
            queries.append(
                CIRQuery(
                    query_id=qid,
                    reference=ann["candidate"],
                    captions=tuple(
                        strip_caption(check_caption(c, cap_file, entry, "captions")) for c in ann["captions"]
                    ),
                    target=target,
                    ground_truths=(target,) if target else (),
                    category=cat,
                )
            )
            # Query references win over gallery entries: they say which query breaks.
            referrers[ann["candidate"]] = f"candidate of {cap_rel} entry {index} ({qid})"
            if target:
                referrers[target] = f"target of {cap_rel} entry {index} ({qid})"

    gallery = list(dict.fromkeys(a for cat in categories for a in gallery_by_category[cat]))
    names = set(gallery) | {q.reference for q in queries} | {q.target for q in queries if q.target}
    source = FileImageSource({a: _image_path(root, a, referrers[a]) for a in names}, referrers)
    queries, gallery, skipped = resolve_missing(queries, gallery, source, check_images, on_missing, FASHIONIQ_LAYOUT)
    if skipped["images"]:
        kept = set(gallery)
        gallery_by_category = {c: [a for a in g if a in kept] for c, g in gallery_by_category.items()}
    return CIRBenchmark(
        name="fashioniq",
        split=split,
        queries=queries,
        gallery=gallery,
        images=source,
        exclude_reference=False,
        extra={
            "categories": categories,
            "gallery_by_category": gallery_by_category,
            "skipped": skipped,
            "root": str(root),
        },
    )


def split_fashioniq_by_category(benchmark: CIRBenchmark) -> dict[str, CIRBenchmark]:
    """One benchmark per category, each with that category's own gallery (how the paper scores).

    Args:
        benchmark: a benchmark from :func:`load_fashioniq`.
    """
    galleries = benchmark.extra["gallery_by_category"]
    out = {}
    for cat, gallery in galleries.items():
        extra = dict(benchmark.extra, categories=[cat], gallery_by_category={cat: gallery})
        out[cat] = replace(
            benchmark,
            queries=[q for q in benchmark.queries if q.category == cat],
            gallery=list(gallery),
            extra=extra,
        )
    return out
