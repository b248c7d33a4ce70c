"""What a notebook works on: one backbone, one benchmark, its vocabulary and its images, opened once.

``open_study(dataset="shapes", quick=True)`` gives the offline world (its CLIP trained and cached on
first use); ``open_study(dataset="circo", dataset_path="/data/CIRCO", backbone="ViT-B-32")`` the same
structure over a real dataset. Its keywords are the run settings (:class:`searle_core.infra.settings.RunSettings`),
named as the notebooks' parameters, the profiles' keys and the CLI's flags. Notebooks call only this
and the analysis functions, so the same notebook runs on the world and on the paper's data by
changing its parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from PIL import Image

from searle_core.clip.backbone import Backbone
from searle_core.clip.preprocess import to_rgb
from searle_core.datasets import ImageFolderSource, load_benchmark
from searle_core.datasets.backbone_setup import RANDOM_WEIGHTS, configure_for_dataset, open_backbone
from searle_core.datasets.base import CIRBenchmark, CIRQuery, ImageSource
from searle_core.datasets.features import image_features
from searle_core.infra.errors import InputError
from searle_core.infra.settings import RunSettings, from_parameters
from searle_core.inversion.concepts import Vocabulary
from searle_core.inversion.nearest import word_token_ids
from searle_core.inversion.phrases import filter_phrase_bank, load_concepts_csv, load_phrase_pickle, template_phrases
from searle_core.method.oti import OTIConfig
from searle_core.method.phi import Phi
from searle_core.methods.context import MethodContext
from searle_core.methods.pipeline import gallery_features
from searle_core.plotting import RetrievalExample
from searle_core.world import ShapesWorld, WorldConfig, caption_for, training_vocabulary, unknown_words
from searle_core.world.recipes import resolved_oti_batch_size
from searle_core.world.setup import world_setup, world_vocabulary


@dataclass
class Study:
    """A backbone, a benchmark and what inversion needs, with feature look-ups.

    Args:
        dataset: ``shapes``, ``cirr``, ``fashioniq`` or ``circo``.
        backbone: the frozen CLIP.
        bench: the benchmark split studied.
        vocabulary: concepts and phrases for the regulariser (``None``: regulariser off).
        allowed_word_ids: token ids nearest-word searches are restricted to (the world CLIP's
            trained words; ``None``: every whole word of the vocabulary).
        world: the ``ShapesWorld`` (``shapes`` only).
        unlabeled: images φ trains on (world pretrain images, or an image folder), with names.
        seed: run seed.
        progress: progress bars.
        settings: the run settings it was opened with (OTI steps, φ's epochs and images, ...).
    """

    dataset: str
    backbone: Backbone
    bench: CIRBenchmark
    vocabulary: Vocabulary | None
    allowed_word_ids: list[int] | None = None
    world: ShapesWorld | None = None
    unlabeled: tuple[ImageSource, list[str]] | None = None
    seed: int = 42
    progress: bool = False
    settings: RunSettings = field(default_factory=RunSettings)
    _gallery: dict | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # One value each: a study built field by field (tests) carries its seed in its settings too.
        self.settings = dataclasses.replace(self.settings, dataset=self.dataset, seed=self.seed, progress=self.progress)

    @property
    def oti_batch_size(self) -> int:
        """Images per OTI batch: the ``oti_batch_size`` setting, else the dataset's (128 on the world, the
        paper's 32 elsewhere: :func:`~searle_core.infra.settings.default_oti_batch_size`)."""
        return resolved_oti_batch_size(self.settings)

    def features(self, names: list[str], source: ImageSource | None = None) -> torch.Tensor:
        """Normalised (N, embed_dim) image features of named images (cached on disk)."""
        return image_features(self.backbone, source or self.bench.images, list(names), progress=self.progress)

    def raw_features(self, names: list[str], source: ImageSource | None = None) -> torch.Tensor:
        """Raw (N, embed_dim) ``encode_image`` features of named images: φ's input, as in the authors' code."""
        return image_features(
            self.backbone, source or self.bench.images, list(names), progress=self.progress, normalize=False
        )

    def images(self, names: list[str], source: ImageSource | None = None) -> list[Image.Image]:
        source = source or self.bench.images
        return [to_rgb(source.load_image(n)) for n in names]

    def concepts(self, features: torch.Tensor, top_k: int = 15) -> list[list[str]] | None:
        """Each image's ``top_k`` concepts, or ``None`` without a vocabulary."""
        if self.vocabulary is None:
            return None
        return self.vocabulary.associate(self.backbone, features, top_k)

    @property
    def phrase_bank(self) -> dict | None:
        return self.vocabulary.phrase_bank if self.vocabulary else None

    def caption(self, name: str) -> str:
        """A readable description of an image: the world's canonical caption, else its name."""
        if self.world is not None:
            return caption_for(self.world.attributes(name))
        return name

    def gallery(self) -> dict[str, torch.Tensor]:
        """Gallery features as ``pipeline.gallery_features`` returns them (computed once)."""
        if self._gallery is None:
            self._gallery = gallery_features(self.backbone, self.bench, self.progress)
        return self._gallery

    def subset(self, max_queries: int | None) -> Study:
        """The same study on the first ``max_queries`` queries (same gallery); all if ``None``/0."""
        if not max_queries or max_queries >= len(self.bench.queries):
            return self
        bench = dataclasses.replace(self.bench, queries=self.bench.queries[:max_queries])
        return dataclasses.replace(self, bench=bench, _gallery=self._gallery)

    def search_set(self) -> tuple[torch.Tensor, list[str]]:
        """The whole gallery as one (features, names) pair (FashionIQ's categories concatenated)."""
        gallery = self.gallery()
        by_category = self.bench.extra.get("gallery_by_category")
        if not by_category:
            return gallery["all"], list(self.bench.gallery)
        return torch.cat([gallery[c] for c in by_category]), [n for c in by_category for n in by_category[c]]

    def context(
        self,
        oti_steps: int | None = None,
        phi: Phi | None = None,
        lambda_gpt: float = 0.5,
        oti_batch_size: int | None = None,
        **oti_overrides,
    ) -> MethodContext:
        """A ``MethodContext`` for ``retrieval.evaluate`` with this study's vocabulary, seed and settings.

        Args:
            oti_steps: OTI steps (default: the study's ``oti_steps`` setting).
            phi: a trained φ for ``searle`` (on ``shapes`` it is trained and cached if omitted).
            lambda_gpt: regulariser weight (forced to 0 without a vocabulary).
            oti_batch_size: images per OTI batch (default: :attr:`oti_batch_size`).
            **oti_overrides: other ``OTIConfig`` fields.
        """
        oti_steps = self.settings.oti_steps if oti_steps is None else oti_steps
        oti_batch_size = self.oti_batch_size if oti_batch_size is None else oti_batch_size
        oti_overrides.setdefault("precision", self.settings.precision)
        config = OTIConfig(steps=oti_steps, lambda_gpt=lambda_gpt if self.vocabulary else 0.0, **oti_overrides)
        ctx = MethodContext(
            vocabulary=self.vocabulary,
            oti_config=config,
            oti_batch_size=oti_batch_size,
            phi=phi,
            seed=self.seed,
            progress=self.progress,
        )
        if self.unlabeled is not None and self.world is None:
            ctx.unlabeled = self.unlabeled
        return ctx

    def pick_queries(self, n: int, pool: int = 60, indices: list[int] | None = None) -> list[int]:
        """Indices of ``n`` varied example queries, the same in every run, or the ``indices`` given.

        Greedy over the first ``pool`` queries: each pick maximises (a change type not shown yet,
        then the number of words of its reference's description not shown yet), ties going to the
        earlier query. On ``shapes`` this shows different changes on different-looking images.

        Raises:
            InputError: an index that is not one of the benchmark's queries.
        """
        if indices:
            return [self.query_index(i, "query_indices") for i in indices]
        candidates = list(range(min(pool, len(self.bench.queries))))
        picked, aspects, words = [], set(), set()
        for _ in range(min(n, len(candidates))):

            def novelty(i: int) -> tuple[int, int]:
                q = self.bench.queries[i]
                # The sets grow in place between picks; each pick reads them as they are now.
                return (q.aspect not in aspects, len(set(self.caption(q.reference).split()) - words))  # noqa: B023

            best = max((i for i in candidates if i not in picked), key=lambda i: (novelty(i), -i))
            picked.append(best)
            aspects.add(self.bench.queries[best].aspect)
            words |= set(self.caption(self.bench.queries[best].reference).split())
        return picked

    def query(self, index: int) -> CIRQuery:
        return self.bench.queries[index]

    def query_index(self, index, name: str = "query") -> int:
        """``index`` checked as an index into the benchmark's queries; ``name`` is how errors call it."""
        count = len(self.bench.queries)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise InputError(
                f"{name}: {index!r} is not a query of {self.bench.name} {self.bench.split}: "
                f"expected an index from 0 to {count - 1}"
            )
        return index

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` the backbone never learned: on ``shapes``, those outside the world
        CLIP's grammar; a real CLIP read the web, so none."""
        return unknown_words(text) if self.world is not None else []

    def reference_sample(self, n: int, first: list[str] | None = None) -> list[str]:
        """``n`` reference images: ``first`` (e.g. the shown examples), then others in name order."""
        first = list(dict.fromkeys(first or []))
        rest = [r for r in self.bench.reference_names() if r not in set(first)]
        return (first + rest)[: max(n, len(first))]

    def examples(
        self,
        query_indices: list[int],
        rankings: list[list[str]],
        k: int = 5,
        label: str = "",
        captions: list[str] | None = None,
        truths: list[set[str]] | None = None,
    ) -> list:
        """Rows of a retrieval grid (``plotting.retrieval_grid``) for benchmark queries.

        Args:
            query_indices: which queries (indices into ``bench.queries``).
            rankings: one ranking per listed query (or per benchmark query: indexed by query index).
            k: results shown.
            label: row label (e.g. the method).
            captions: override the captions shown (default: the queries' relative captions).
            truths: override what counts as a hit (default: the queries' ground truths).
        """

        full = len(rankings) == len(self.bench.queries) and len(query_indices) != len(rankings)
        rows = []
        for n, i in enumerate(query_indices):
            q = self.bench.queries[i]
            ranking = rankings[i] if full else rankings[n]
            hits = truths[n] if truths is not None else set(q.ground_truths or ([q.target] if q.target else []))
            caption = captions[n] if captions is not None else " and ".join(q.captions)
            rows.append(
                RetrievalExample(
                    to_rgb(self.bench.images.load_image(q.reference)),
                    caption,
                    self.images(ranking[:k]),
                    [r in hits for r in ranking[:k]],
                    label,
                )
            )
        return rows


def load_vocabulary(dataset: str, backbone: str, concepts: str = "", phrases: str = "") -> Vocabulary | None:
    """The regulariser's vocabulary: the world's for ``shapes``; for real data the Open Images CSV
    ``concepts`` with the authors' phrases ``phrases`` (or offline template phrases without them);
    ``None`` without a CSV."""
    if dataset == "shapes":  # the world's own concepts; a real dataset needs its CSV, whatever the backbone
        return world_vocabulary()
    if not concepts:
        return None
    names = load_concepts_csv(concepts)
    bank = filter_phrase_bank(load_phrase_pickle(phrases) if phrases else template_phrases(names))
    # Association runs over the whole vocabulary; concepts without usable phrases are skipped afterwards.
    return Vocabulary(
        list(names), {c: bank[c] for c in names if c in bank}, phrases="given" if phrases else "templates"
    )


def open_study(
    dataset: str | None = None,
    quick: bool | None = None,
    backbone: str | None = None,
    pretrained: str | None = None,
    device: str | None = None,
    dataset_path: str | None = None,
    split: str | None = None,
    concepts: str | None = None,
    phrases: str | None = None,
    unlabeled: str | None = None,
    seed: int | None = None,
    progress: bool = False,
    preprocess: str | None = None,
    *,
    settings: RunSettings | None = None,
    **more,
) -> Study:
    """Open a backbone and a benchmark for a notebook.

    Every argument is a run setting (:class:`~searle_core.infra.settings.RunSettings`, where each is
    described), named as the notebooks' parameters, the profiles' keys and the CLI's flags; one left
    out (``None``) keeps ``settings``' value, else the default of the quick world (``quick=True``).
    The settings are kept as ``study.settings``: ``study.context()`` takes its OTI settings from them.

    Args:
        dataset: ``shapes`` (offline world) or ``cirr``, ``fashioniq``, ``circo``.
        quick: ``shapes``: the CI-sized world and CLIP.
        backbone: ``shapes-clip`` or an open_clip model (``ViT-B-32``, ``ViT-L-14``).
        pretrained: weights tag or file (``default``: the world CLIP, or ``openai``); ``none``:
            random weights drawn under ``seed``, as ``--pretrained none`` on the command line.
        device: ``auto``, ``cpu``, ``cuda``.
        dataset_path: real datasets: the folder in the authors' layout.
        split: benchmark split (``val`` has ground truths).
        concepts: real datasets: Open Images V7 class-descriptions CSV.
        phrases: real datasets: the authors' phrases (``GPTNeo27B.zip`` or a pickle).
        unlabeled: real datasets: the image folder φ trains on (ImageNet1K test).
        seed: run seed.
        progress: progress bars.
        preprocess: empty/``None`` for the dataset's default (:mod:`searle_core.datasets.backbone_setup`, as the CLI:
            targetpad 1.25), or ``clip``/``targetpad``.
        settings: settings to start from (e.g. a profile's or the CLI's).
        **more: other settings by name: ``oti_steps``, ``oti_batch_size``, ``precision``,
            ``phi_checkpoint``, ``phi_epochs``, ``phi_images``, ...

    Raises:
        TypeError: an argument that is not a setting (a renamed one is named with its new name).
    """

    given = dict(
        dataset=dataset,
        quick=quick,
        backbone=backbone,
        pretrained=pretrained,
        device=device,
        dataset_path=dataset_path,
        split=split,
        concepts=concepts,
        phrases=phrases,
        unlabeled=unlabeled,
        seed=seed,
        preprocess=preprocess,
        **more,
    )
    s = from_parameters({**given, "progress": progress}, base=settings or RunSettings(quick=True))
    random_weights = str(s.pretrained).lower() in RANDOM_WEIGHTS
    if s.dataset == "shapes":
        if s.backbone != "shapes-clip":
            raise InputError("the shapes world is studied with its own CLIP: backbone 'shapes-clip'")
        if random_weights:  # the world CLIP's architecture with seeded random weights (smoke runs): no training
            world = ShapesWorld(WorldConfig.quick() if s.quick else WorldConfig())
            model = open_backbone(s.backbone, s.pretrained, s.device, s.seed)
        else:
            # The first use trains the world CLIP for minutes: its bar shows whatever ``progress`` says.
            world, model = world_setup(quick=s.quick, device=s.device, progress=True)
        model = configure_for_dataset(model, s.dataset, s.preprocess or None, s.num_workers)
        bench = world.benchmark(s.split)
        return Study(
            s.dataset,
            model,
            bench,
            load_vocabulary(s.dataset, s.backbone),
            word_token_ids(model, training_vocabulary()),
            world,
            (world.images, world.pretrain_names()),
            s.seed,
            s.progress,
            s,
        )

    if not s.dataset_path:
        raise InputError(f"dataset {s.dataset!r} needs dataset_path: its folder in the authors' layout")
    # First: a wrong folder fails before a large model loads.
    bench = load_benchmark(
        s.dataset,
        s.dataset_path,
        s.split,
        **({"category": [c.strip() for c in s.category.split(",") if c.strip()]} if s.category else {}),
    )
    model = configure_for_dataset(
        open_backbone(s.backbone, s.pretrained, s.device, s.seed), s.dataset, s.preprocess or None, s.num_workers
    )
    unlabeled_images = None
    if s.unlabeled:
        folder = ImageFolderSource(s.unlabeled)
        unlabeled_images = (folder, folder.names)
    return Study(
        s.dataset,
        model,
        bench,
        load_vocabulary(s.dataset, s.backbone, s.concepts, s.phrases),
        None,
        None,
        unlabeled_images,
        s.seed,
        s.progress,
        s,
    )
