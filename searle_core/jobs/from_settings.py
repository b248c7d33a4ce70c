"""A run's inputs opened from its settings (the benchmark, the backbone, the regulariser's vocabulary): the CLI's
commands and the notebooks' studies both open them here, so a setting means the same in both. ``note`` receives
what the CLI tells its user on stderr (the notebooks pass none: their cells stay quiet)."""

from __future__ import annotations

from collections.abc import Callable

from searle_core.clip.backbone import Backbone, open_backbone
from searle_core.datasets import load_benchmark
from searle_core.datasets.base import CIRBenchmark
from searle_core.datasets.features import configure_for_dataset
from searle_core.infra.errors import InputError
from searle_core.inversion.concepts import Vocabulary, is_image_concepts_file, read_concepts_csv
from searle_core.inversion.phrases import filter_phrase_bank, load_concepts_csv, load_phrase_pickle, template_phrases
from searle_core.settings import RunSettings
from searle_core.world.setup import world_vocabulary

Note = Callable[[str], None] | None


def open_benchmark(
    s: RunSettings, on_missing: str = "error", check_images: str = "exists", note: Note = None
) -> CIRBenchmark:
    """The benchmark the settings name (a generated one needs no folder); images are checked up front."""
    if s.dataset == "shapes":
        return load_benchmark("shapes", split=s.split, quick=s.quick)
    if not s.dataset_path:
        raise InputError(f"--dataset {s.dataset} needs --dataset-path (the folder with its annotations and images)")
    kw = {"on_missing": on_missing, "check_images": check_images}
    if s.category:
        if s.dataset != "fashioniq":
            raise InputError("--category applies to --dataset fashioniq only")
        kw["category"] = [c.strip() for c in s.category.split(",") if c.strip()]
    bench = load_benchmark(s.dataset, s.dataset_path, s.split, **kw)
    skipped = bench.extra.get("skipped") or {}
    if skipped.get("images") and note:
        note(
            f"skipped {skipped['images']} missing or unreadable image(s): {skipped['queries']} queries and "
            f"{skipped['gallery']} gallery images dropped (first: {', '.join(skipped['files'][:3])})"
        )
    if not bench.queries:
        raise InputError(f"{s.dataset} {s.split} in {s.dataset_path} has no queries left")
    return bench


def open_model(s: RunSettings) -> Backbone:
    """The backbone the settings name, with its dataset's image pipeline (``configure_for_dataset``)."""
    backbone = open_backbone(s.backbone, s.pretrained, s.device, s.seed, s.quick)
    return configure_for_dataset(backbone, s.dataset, s.preprocess or None, s.num_workers)


def open_vocabulary(s: RunSettings, note: Note = None) -> Vocabulary | None:
    """OTI's and φ's regulariser inputs: ``concepts`` (Open Images' class descriptions, or each image's concepts in
    the authors' ``*_top_250_ensembling_image_texts.csv``) and ``phrases`` (else offline templates), else the
    world's on ``shapes``, else none. Images are associated over every concept; those without usable phrases are
    skipped afterwards, as the authors do."""
    if not s.concepts and not s.phrases:
        return world_vocabulary() if s.dataset == "shapes" else None
    bank = load_phrase_pickle(s.phrases) if s.phrases else None
    associations = read_concepts_csv(s.concepts) if s.concepts and is_image_concepts_file(s.concepts) else None
    if associations is not None:
        concepts = list(dict.fromkeys(c for cs in associations.values() for c in cs))
    else:
        concepts = load_concepts_csv(s.concepts) if s.concepts else list(bank)
    kept = filter_phrase_bank(bank if bank is not None else template_phrases(concepts))
    names = [c for c in concepts if c in kept]
    source = s.phrases or "offline template phrases"
    if note:
        where = f"{len(associations)} images' concepts from {s.concepts}" if associations is not None else None
        note(
            f"concepts: {where or f'images are associated over all {len(concepts)}'}; {len(names)} of "
            f"{len(concepts)} have usable phrases ({len(concepts) - len(names)} without phrases, or with phrases "
            f"that do not all contain the concept, are skipped afterwards, as the authors do); phrases from {source}"
        )
    if not names:
        raise InputError(f"no concept of {s.concepts or s.phrases} has usable phrases in {source}")
    return Vocabulary(
        list(concepts),
        {c: kept[c] for c in names},
        phrases="given" if s.phrases else "templates",
        associations=associations,
        source=str(s.concepts or ""),
    )
