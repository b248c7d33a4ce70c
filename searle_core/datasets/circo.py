"""CIRCO (Baldrati et al., ICCV 2023) in the authors' release layout.

The gallery is every image of the COCO 2017 *unlabeled* set listed in the image-info file, in file
order, named ``str(id)`` (the ids the test server expects). Queries keep all ground truths
(``gt_img_ids``, the first of which is ``target_img_id``). ``shared_concept`` is kept in
``extra["shared_concept"]`` for inspection only: SEARLE does not use it.

Aspect decision: ``CIRQuery.aspect`` is a string, so a query's semantic aspects are stored there
joined with ``","`` (e.g. ``"cardinality,addition"``; ``None`` on test). Use :func:`query_aspects`
to get the list back, or ``extra["semantic_aspects"]`` (query id -> list) directly; metrics need
the list because one query counts towards several aspects.
"""

from __future__ import annotations

from pathlib import Path

from searle_core.datasets.base import CIRBenchmark, CIRQuery, check_paths
from searle_core.datasets.containment import (
    check_caption,
    check_int_id,
    contained_path,
    read_dataset_json,
    refuse_repeats,
)
from searle_core.datasets.folder import CheckImages, FileImageSource, OnMissing, resolve_missing
from searle_core.infra.errors import InputError, check_annotations, check_unique

CIRCO_SPLITS = ("val", "test")
CIRCO_ASPECTS: tuple[str, ...] = (
    "cardinality",
    "addition",
    "negation",
    "direct_addressing",
    "compare_change",
    "comparative_statement",
    "statement_with_conjunction",
    "spatial_relations_background",
    "viewpoint",
)
"""The nine semantic aspects of CIRCO's annotations, in the order the official evaluator reports them."""
IMAGE_INFO = "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
CIRCO_LAYOUT = """\
<root>/
  annotations/{val,test}.json
  COCO2017_unlabeled/
    annotations/image_info_unlabeled2017.json   ({"images": [{"id", "file_name", ...}]})
    unlabeled2017/000000271520.jpg ...   (12-digit zero-padded ids)"""


def query_aspects(query: CIRQuery) -> list[str]:
    """The semantic aspects of a CIRCO query as a list (empty when unannotated).

    Args:
        query: a query from :func:`load_circo`.
    """
    return [a for a in (query.aspect or "").split(",") if a]


def load_circo(
    root: str | Path,
    split: str = "val",
    on_missing: OnMissing = "error",
    check_images: CheckImages = "exists",
) -> CIRBenchmark:
    """Load one CIRCO split.

    Args:
        root: the CIRCO folder (see ``CIRCO_LAYOUT``).
        split: ``val`` (220 queries) or ``test`` (800 queries, no ground truths).
        on_missing: ``"error"`` or ``"skip"`` (count in ``extra["skipped"]``).
        check_images: ``"exists"`` (default; stats ~123k files on the full set), ``"open"`` or
            ``"none"``.

    Returns:
        A :class:`CIRBenchmark` named ``circo`` with ``query_id = str(id)`` and image names
        ``str(image id)``; ``extra`` holds ``semantic_aspects``, ``shared_concept`` and ``skipped``.
    """
    root = Path(root)
    if split not in CIRCO_SPLITS:
        raise InputError(f"unknown CIRCO split {split!r}; expected one of {', '.join(CIRCO_SPLITS)}")
    ann_rel = f"annotations/{split}.json"
    check_paths(root, [ann_rel, IMAGE_INFO], CIRCO_LAYOUT)
    images_dir = root / "COCO2017_unlabeled" / "unlabeled2017"

    info_file = root / IMAGE_INFO
    info = read_dataset_json(info_file, "COCO image-info file")
    if not isinstance(info, dict) or not isinstance(info.get("images"), list):
        raise InputError(f"{info_file}: expected COCO image-info JSON with an 'images' list")
    images = check_annotations(info["images"], info_file, ("id", "file_name"))
    ids = [check_int_id(img["id"], info_file, f"image #{i}", "id") for i, img in enumerate(images)]
    refuse_repeats(ids, info_file, "image id")  # a repeat would silently point an id at another file
    # file_name is annotation text: it must name a file inside unlabeled2017/ (checked before opening).
    paths = {
        i: contained_path(images_dir, img["file_name"], info_file, f"image id {i} file_name")
        for i, img in zip(ids, images)
    }
    gallery = list(paths)
    listed = set(gallery)

    ann_file = root / ann_rel
    annotations = check_annotations(
        read_dataset_json(ann_file, "CIRCO annotation file"),
        ann_file,
        ("id", "reference_img_id", "relative_caption"),
        "id",
    )
    qids = [check_int_id(ann["id"], ann_file, f"annotation #{i}", "id") for i, ann in enumerate(annotations)]
    check_unique(qids, ann_file, "id")
    queries: list[CIRQuery] = []
    referrers: dict[str, str] = {}
    aspects: dict[str, list[str]] = {}
    shared: dict[str, str] = {}
    for ann, qid in zip(annotations, qids):
        entry = f"query id {qid}"
        reference = check_int_id(ann["reference_img_id"], ann_file, entry, "reference_img_id")
        target = (
            check_int_id(ann["target_img_id"], ann_file, entry, "target_img_id") if "target_img_id" in ann else None
        )
        gt_list = ann.get("gt_img_ids", [])
        if not isinstance(gt_list, list):
            raise InputError(f"{ann_file}: {entry} has gt_img_ids {gt_list!r}; expected a list of image ids")
        gts = tuple(check_int_id(g, ann_file, entry, "gt_img_ids entry") for g in gt_list)
        refuse_repeats(gts, f"{ann_file}: {entry}", "gt_img_ids entry")
        if target is not None and target not in gts:
            gts = (target, *gts)  # the target is always a ground truth
        query_aspect_list = list(ann.get("semantic_aspects", ()))
        queries.append(
            CIRQuery(
                query_id=qid,
                reference=reference,
                captions=(check_caption(ann["relative_caption"], ann_file, entry, "relative_caption"),),
                target=target,
                ground_truths=gts,
                aspect=",".join(query_aspect_list) or None,
            )
        )
        aspects[qid] = query_aspect_list
        shared[qid] = ann.get("shared_concept", "")
        where = f"{ann_rel} query id {qid}"
        referrers.setdefault(reference, f"reference_img_id of {where}")
        for g in gts:
            referrers.setdefault(g, f"gt_img_ids of {where}")
        # An id missing from the image-info file is an incomplete download: guess the COCO file
        # name so the error names it, and say the listing lacks it.
        for name in (reference, *gts):
            if name not in paths:
                paths[name] = images_dir / f"{int(name):012d}.jpg"
                referrers[name] += f" (id not listed in {IMAGE_INFO})"

    source = FileImageSource(paths, referrers, default_referrer=f"image listed in {IMAGE_INFO}")
    # Ids not in the image-info file cannot be retrieved even if their file exists: treat them as
    # missing (an error naming the query, or skipped and counted).
    unlisted = [n for n in paths if n not in listed]
    queries, gallery, skipped = resolve_missing(
        queries, gallery, source, check_images, on_missing, CIRCO_LAYOUT, also_bad=unlisted
    )
    return CIRBenchmark(
        name="circo",
        split=split,
        queries=queries,
        gallery=gallery,
        images=source,
        exclude_reference=False,
        extra={
            "semantic_aspects": {q.query_id: aspects[q.query_id] for q in queries},
            "shared_concept": {q.query_id: shared[q.query_id] for q in queries},
            "skipped": skipped,
            "root": str(root),
            "aspect_names": list(CIRCO_ASPECTS),
        },
    )
