"""What a notebook works on: one backbone, one benchmark, its vocabulary and its images, opened once,
from the offline world or a real dataset alike, so one notebook runs on both by changing its parameters."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

import torch
from PIL import Image

from searle_core.clip.backbone import RANDOM_WEIGHTS, Backbone, open_backbone
from searle_core.clip.preprocess import to_rgb
from searle_core.datasets import ImageFolderSource
from searle_core.datasets.base import CIRBenchmark, CIRQuery, ImageSource
from searle_core.datasets.features import configure_for_dataset, image_features
from searle_core.infra.device import set_threads
from searle_core.infra.errors import InputError
from searle_core.inversion.concepts import Vocabulary
from searle_core.inversion.nearest import word_token_ids
from searle_core.jobs.from_settings import open_benchmark, open_model, open_vocabulary
from searle_core.method.phi import Phi
from searle_core.methods.context import MethodContext
from searle_core.methods.pipeline import gallery_features
from searle_core.plotting import RetrievalExample
from searle_core.settings import RunSettings, check_parameters, from_parameters
from searle_core.world import ShapesWorld, WorldConfig, caption_for, training_vocabulary, unknown_words
from searle_core.world.setup import resolved_oti_batch_size, world_setup


@dataclass
class Study:
    """A backbone, a benchmark and what inversion needs: ``vocabulary`` (``None``: no regulariser), the token
    ids nearest-word searches may return (the world CLIP's words), the world (``shapes`` only), the (source,
    names) φ trains on, and the run settings it was opened with."""

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

    def __post_init__(self) -> None:  # a study built field by field (tests) carries its seed in its settings too
        self.settings = dataclasses.replace(self.settings, dataset=self.dataset, seed=self.seed, progress=self.progress)

    @property
    def oti_batch_size(self) -> int:
        return resolved_oti_batch_size(self.settings)

    @property
    def phrase_bank(self) -> dict | None:
        return self.vocabulary.phrase_bank if self.vocabulary else None

    def features(self, names: list[str], source: ImageSource | None = None, normalize: bool = True) -> torch.Tensor:
        """(N, embed_dim) image features of named images, cached on disk (``normalize=False``: φ's input)."""
        return image_features(
            self.backbone, source or self.bench.images, list(names), progress=self.progress, normalize=normalize
        )

    def raw_features(self, names: list[str], source: ImageSource | None = None) -> torch.Tensor:  # φ's input
        return self.features(names, source, normalize=False)

    def images(self, names: list[str], source: ImageSource | None = None) -> list[Image.Image]:
        return [to_rgb((source or self.bench.images).load_image(n)) for n in names]

    def concepts(self, features: torch.Tensor, top_k: int = 15) -> list[list[str]] | None:
        """Each image's ``top_k`` concepts, or ``None`` without a vocabulary."""
        return None if self.vocabulary is None else self.vocabulary.associate(self.backbone, features, top_k)

    def caption(self, name: str) -> str:
        """A readable description of an image: the world's canonical caption, else its name."""
        return caption_for(self.world.attributes(name)) if self.world is not None else name

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` the world CLIP never learned (a real CLIP read the web: none)."""
        return unknown_words(text) if self.world is not None else []

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
        gallery, by_category = self.gallery(), self.bench.extra.get("gallery_by_category")
        if not by_category:
            return gallery["all"], list(self.bench.gallery)
        return torch.cat([gallery[c] for c in by_category]), [n for c in by_category for n in by_category[c]]

    def context(self, phi: Phi | None = None, **oti_changes) -> MethodContext:
        """A ``MethodContext`` with this study's vocabulary, seed and OTI config (``settings.oti_config``;
        ``oti_changes``: ``OTIConfig`` fields a notebook sets, such as ``steps`` or ``lambda_gpt``)."""
        config = self.settings.oti_config(self.vocabulary is not None, **oti_changes)
        ctx = MethodContext(self.vocabulary, config, self.oti_batch_size, phi, seed=self.seed, progress=self.progress)
        if self.unlabeled is not None and self.world is None:  # the world's baselines train on its own images
            ctx.unlabeled = self.unlabeled
        return ctx

    def pick_queries(self, n: int, pool: int = 60, indices: list[int] | None = None) -> list[int]:
        """Indices of ``n`` varied example queries, the same in every run, or the ``indices`` given (checked):
        greedy over the first ``pool``, each maximising (a change type not shown yet, then its reference's
        caption words not shown yet), ties going to the earlier query."""
        if indices:
            return [self.query_index(i, "query_indices") for i in indices]
        queries, candidates = self.bench.queries, range(min(pool, len(self.bench.queries)))
        picked, aspects, words = [], set(), set()
        for _ in range(min(n, len(candidates))):
            novelty = {
                i: (queries[i].aspect not in aspects, len(set(self.caption(queries[i].reference).split()) - words), -i)
                for i in candidates
                if i not in picked
            }
            picked.append(best := max(novelty, key=novelty.get))
            aspects.add(queries[best].aspect)
            words |= set(self.caption(queries[best].reference).split())
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

    def examples(
        self, query_indices: list[int], rankings: list, k: int = 5, label: str = "", captions=None, truths=None
    ) -> list[RetrievalExample]:
        """Rows of a retrieval grid for benchmark queries; ``rankings`` has one per listed query or one per
        benchmark query; ``captions``/``truths`` replace the queries' relative captions and ground truths."""
        full = len(rankings) == len(self.bench.queries) and len(query_indices) != len(rankings)
        rows = []
        for n, i in enumerate(query_indices):
            q = self.bench.queries[i]
            ranking = (rankings[i] if full else rankings[n])[:k]
            hits = truths[n] if truths is not None else set(q.ground_truths or ([q.target] if q.target else []))
            caption = captions[n] if captions is not None else " and ".join(q.captions)
            shown = self.images([q.reference]) + self.images(ranking)
            rows.append(RetrievalExample(shown[0], caption, shown[1:], [r in hits for r in ranking], label))
        return rows


def open_study(
    dataset: str | None = None, *, settings: RunSettings | None = None, progress: bool = False, **given
) -> Study:
    """Open a backbone and a benchmark; every keyword is a run setting (``RunSettings``) named as the CLI
    names it, one left out (``None``) keeping ``settings``' value, else the quick world's. They stay in
    ``study.settings``, where ``study.context()`` and the cached inversions read them."""
    check_parameters({**sys._getframe(1).f_globals, **given})  # the notebook's parameters (its globals), bounded
    s = from_parameters({**given, "dataset": dataset, "progress": progress}, base=settings or RunSettings(quick=True))
    set_threads(s.threads)  # deliberately (``threads``): torch's all-cores default collapses beside another process
    if s.dataset == "shapes":
        if s.backbone != "shapes-clip":
            raise InputError("the shapes world is studied with its own CLIP: backbone 'shapes-clip'")
        if str(s.pretrained).lower() in RANDOM_WEIGHTS:  # the world CLIP's architecture, seeded random weights
            world = ShapesWorld(WorldConfig.quick() if s.quick else WorldConfig())
            model = open_backbone(s.backbone, s.pretrained, s.device, s.seed)
        else:  # the first use trains the world CLIP for minutes: its bar shows whatever ``progress`` says
            world, model = world_setup(quick=s.quick, device=s.device, progress=True)
        model = configure_for_dataset(model, s.dataset, s.preprocess or None, s.num_workers)
        vocabulary, allowed = open_vocabulary(s), word_token_ids(model, training_vocabulary())
        bench, unlabeled = world.benchmark(s.split), (world.images, world.pretrain_names())
    else:
        bench = open_benchmark(s)  # first: a wrong folder fails before a large model loads
        model, vocabulary, world, allowed = open_model(s), open_vocabulary(s), None, None
        folder = ImageFolderSource(s.unlabeled) if s.unlabeled else None
        unlabeled = (folder, folder.names) if folder else None
    return Study(s.dataset, model, bench, vocabulary, allowed, world, unlabeled, s.seed, s.progress, s)
