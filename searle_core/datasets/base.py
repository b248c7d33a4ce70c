"""The structures every composed-retrieval dataset fills, real or synthetic: as in the authors' code, a
*relative* view (queries) and a *classic* view (the gallery); retrieval and metrics use only these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from searle_core.clip.backbone import Backbone
from searle_core.infra.files import digest


@dataclass(frozen=True)
class CIRQuery:
    """One query; ``query_id`` is what submission files use (CIRR ``pairid``, CIRCO ``id``), ``ground_truths``
    every image that satisfies it (CIRCO's ``gt_img_ids``, else the target; empty on test splits)."""

    query_id: str
    reference: str
    captions: tuple[str, ...]
    target: str | None = None
    ground_truths: tuple[str, ...] = ()
    subset: tuple[str, ...] | None = None
    aspect: str | None = None
    category: str | None = None


class ImageSource:
    """Turns an image name into a PIL image in its own mode; the hooks serve the feature pipeline directly."""

    def load_image(self, name: str) -> Image.Image:  # pragma: no cover - interface
        raise NotImplementedError

    def content_id(self) -> str | None:
        """A key naming every image the source gives, for feature caches; ``None``: files, keyed by stamps."""
        return None

    def model_input(
        self, names: list[str], size: tuple[int, int], mean, std, device: torch.device
    ) -> torch.Tensor | None:
        """The images as the model's normalised input if the source makes them at that size; ``None``: use PIL."""
        return None


@dataclass(frozen=True)
class UnlabeledImages:
    """Unlabeled images networks train on (φ, Pic2Word, PALAVRA); ``source_id`` names them in cache keys."""

    source: ImageSource
    names: list[str]
    source_id: str

    @property
    def data_id(self) -> str:
        return "unlabeled-" + digest(self.source_id, self.names)


@dataclass
class CaptionCorpus:
    """A text corpus for networks trained on text alone (LinCIR): ``make`` is called on first use only (a cached
    network never needs the captions); ``described``: known captions of some images, by name."""

    source_id: str
    make: Callable[[], Sequence[str]]
    described: dict[str, str] = field(default_factory=dict)
    _captions: list[str] | None = field(default=None, repr=False, compare=False)

    def captions(self) -> list[str]:
        if self._captions is None:
            self._captions = list(self.make())
        return self._captions

    @property
    def data_id(self) -> str:
        return "captions-" + digest(self.source_id)


@dataclass
class CIRBenchmark:
    """A split of a composed-retrieval dataset: queries, gallery (every retrievable image name) and where the
    images come from; ``unlabeled``, ``captioner`` and ``text_corpus``: what the dataset brings itself, if any."""

    name: str
    split: str
    queries: list[CIRQuery]
    gallery: list[str]
    images: ImageSource
    exclude_reference: bool = False
    extra: dict = field(default_factory=dict)
    unlabeled: UnlabeledImages | None = None
    captioner: Callable[[Backbone, torch.Tensor], list[str]] | None = None
    text_corpus: CaptionCorpus | None = None

    def reference_names(self) -> list[str]:
        return sorted({q.reference for q in self.queries})
