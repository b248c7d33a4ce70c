"""CIRR (Liu et al., ICCV 2021) in the authors' release layout.

Queries come from ``cirr/captions/cap.rc2.<split>.json``; the gallery is every name in
``cirr/image_splits/split.rc2.<split>.json`` (in file order, as the authors' "classic" dataset),
whose paths (``./dev/dev-244-0-img0.png``) are relative to the CIRR folder itself. The reference
image is removed from its own ranking (``exclude_reference=True``). ``subset`` keeps the six
``img_set.members`` as released, reference included: Recall_subset must drop it itself.

Layouts accepted (:func:`cirr_layout`): the release's, ``CIRR/cirr/{captions,image_splits}`` beside
``CIRR/{train,dev,test1}`` (what SEARLE's and CIRR's own code read); the same tree given by its inner
``cirr/`` folder; and a flat tree with ``captions/`` and ``image_splits/`` beside the image folders.
"""

from __future__ import annotations

from pathlib import Path

from searle_core.datasets.base import CIRBenchmark, CIRQuery, check_paths
from searle_core.datasets.containment import check_caption, check_int_id, contained_path, read_dataset_json
from searle_core.datasets.folder import CheckImages, FileImageSource, OnMissing, resolve_missing
from searle_core.infra.errors import InputError, check_annotations, check_unique

CIRR_LAYOUT = """\
<root>/   (the CIRR folder, as released and as the SEARLE authors' README shows it)
  cirr/
    captions/cap.rc2.{train,val,test1}.json
    image_splits/split.rc2.{train,val,test1}.json   (name -> "./dev/dev-244-0-img0.png", relative to <root>)
  train/<0..99>/*.png
  dev/*.png
  test1/*.png
(also accepted: --dataset-path <root>/cirr, or captions/ and image_splits/ directly in <root>)"""
_ANNOTATIONS = "cirr"
_IMAGE_FOLDERS = ("train", "dev", "test1")

# Users say "test"; the release calls the public test split "test1".
_SPLIT_ALIASES = {"test": "test1", "dev": "val"}
CIRR_SPLITS = ("train", "val", "test1")


def _read_json(path: Path) -> object:
    return read_dataset_json(path, "CIRR annotation file")


def cirr_layout(root: str | Path) -> tuple[Path, Path]:
    """Where a CIRR folder keeps its annotations and what its split files' paths are relative to.

    Args:
        root: the CIRR folder (``CIRR/``), its inner ``cirr/`` folder, or a flat folder with
            ``captions/`` and ``image_splits/`` beside the image folders.

    Returns:
        ``(annotations, images)``: the folder holding ``captions/`` and ``image_splits/``, and the
        folder the split files' ``./dev/...`` paths start from. Where neither layout is present,
        ``(root / "cirr", root)``, so that the missing-file error names the release's layout.
    """
    root = Path(root)
    if (root / _ANNOTATIONS / "captions").is_dir() or (root / _ANNOTATIONS / "image_splits").is_dir():
        return root / _ANNOTATIONS, root
    if (root / "captions").is_dir() or (root / "image_splits").is_dir():
        # The inner cirr/ folder given by itself: the images are beside it, in its parent.
        has_images = lambda folder: any((folder / d).is_dir() for d in _IMAGE_FOLDERS)  # noqa: E731
        if root.name == _ANNOTATIONS and not has_images(root) and has_images(root.parent):
            return root, root.parent
        return root, root
    return root / _ANNOTATIONS, root


def load_cirr(
    root: str | Path,
    split: str = "val",
    on_missing: OnMissing = "error",
    check_images: CheckImages = "exists",
) -> CIRBenchmark:
    """Load one CIRR split.

    Args:
        root: the CIRR folder (see ``CIRR_LAYOUT`` and :func:`cirr_layout`).
        split: ``train``, ``val`` or ``test1`` (``test`` and ``dev`` are accepted aliases).
        on_missing: ``"error"`` fails on a missing/unreadable image naming the query that needs
            it; ``"skip"`` drops it and counts it in ``extra["skipped"]``.
        check_images: ``"exists"`` (stat every file, default), ``"open"`` (also decode every image) or
            ``"none"`` (trust the layout; errors then surface when an image is loaded).

    Returns:
        A :class:`CIRBenchmark` named ``cirr`` with ``query_id = str(pairid)``; on ``test1``
        targets are ``None`` and ground truths empty. ``extra["target_soft"]`` keeps the released
        soft labels per pairid (validation only).
    """
    root = Path(root)
    annotations_dir, image_root = cirr_layout(root)
    split = _SPLIT_ALIASES.get(split, split)
    if split not in CIRR_SPLITS:
        raise InputError(f"unknown CIRR split {split!r}; expected one of {', '.join(CIRR_SPLITS)} (or 'test')")
    cap_rel = f"captions/cap.rc2.{split}.json"
    split_rel = f"image_splits/split.rc2.{split}.json"
    # Named from the folder the user gave, so the error says "cirr/captions/..." where that is missing.
    check_paths(
        root, [(annotations_dir / rel).relative_to(root).as_posix() for rel in (cap_rel, split_rel)], CIRR_LAYOUT
    )

    name_to_relpath = _read_json(annotations_dir / split_rel)
    if not isinstance(name_to_relpath, dict):
        raise InputError(f"{annotations_dir / split_rel}: expected a JSON object name -> relative path")
    # Every path the split file names must stay inside the CIRR folder (checked before any is opened).
    split_file = annotations_dir / split_rel
    paths = {
        name: contained_path(image_root, rel, split_file, f"entry {name!r}") for name, rel in name_to_relpath.items()
    }
    gallery = list(name_to_relpath)

    cap_file = annotations_dir / cap_rel
    annotations = check_annotations(_read_json(cap_file), cap_file, ("pairid", "reference", "caption"), "pairid")
    pairids = [check_int_id(ann["pairid"], cap_file, f"annotation #{i}", "pairid") for i, ann in enumerate(annotations)]
    check_unique(pairids, cap_file, "pairid")  # again: "12" and 12 are one id
    queries: list[CIRQuery] = []
    referrers: dict[str, str] = {}
    target_soft: dict[str, dict] = {}
    for ann, pairid in zip(annotations, pairids):
        entry = f"pairid {pairid}"
        target = ann.get("target_hard")
        img_set = ann.get("img_set", {})
        if not isinstance(img_set, dict) or not isinstance(img_set.get("members", []), list):
            raise InputError(f"{cap_file}: {entry} has img_set {img_set!r}; expected an object with a 'members' list")
        members = tuple(img_set.get("members", ())) or None
        for field, value in (
            ("reference", ann["reference"]),
            ("target_hard", target),
            *(("img_set member", m) for m in members or ()),
        ):
            if value is not None and not isinstance(value, str):
                raise InputError(f"{cap_file}: {entry} has {field} {value!r}; expected an image name (a string)")
        queries.append(
            CIRQuery(
                query_id=pairid,
                reference=ann["reference"],
                captions=(check_caption(ann["caption"], cap_file, entry, "caption"),),
                target=target,
                ground_truths=(target,) if target else (),
                subset=members,
            )
        )
        where = f"{cap_rel} pairid {pairid}"
        referrers.setdefault(ann["reference"], f"reference of {where}")
        if target:
            referrers.setdefault(target, f"target of {where}")
        for member in members or ():
            referrers.setdefault(member, f"img_set member of {where}")
        if "target_soft" in ann:
            target_soft[pairid] = dict(ann["target_soft"])

    # The release's split file lists every image its captions use; one that does not is another
    # split's (cap.rc2.val.json beside split.rc2.test1.json): the targets and img_set members could
    # never be ranked, and Recall_subset would fail only at scoring.
    unlisted = [n for q in queries for n in (q.reference, q.target, *(q.subset or ())) if n and n not in paths]
    if unlisted:
        raise InputError(
            f"{cap_file}: {len(set(unlisted))} image name(s) its captions use are not in {split_file} "
            f"(first: {unlisted[0]!r}, {referrers[unlisted[0]]}); expected the captions and the split file of "
            f"the same split (cap.rc2.{split}.json with split.rc2.{split}.json, as released)"
        )

    source = FileImageSource(paths, referrers, default_referrer=f"gallery entry of {split_rel}")
    queries, gallery, skipped = resolve_missing(queries, gallery, source, check_images, on_missing, CIRR_LAYOUT)
    return CIRBenchmark(
        name="cirr",
        split=split,
        queries=queries,
        gallery=gallery,
        images=source,
        exclude_reference=True,
        extra={"skipped": skipped, "target_soft": target_soft, "root": str(root)},
    )
