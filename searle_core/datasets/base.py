"""The structures every composed-retrieval dataset shares, real or synthetic.

A dataset has two views, as in the authors' code: the *relative* view yields queries
(reference image, relative caption(s), target and ground truths) and the *classic* view yields the
gallery (image names). Retrieval, metrics and submission files work on these structures only, so a
new dataset needs nothing but a class that fills them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from searle_core.clip.backbone import Backbone
from searle_core.clip.preprocess import to_rgb  # noqa: F401  (re-exported: the datasets' conversion)
from searle_core.infra.files import digest


@dataclass(frozen=True)
class CIRQuery:
    """One composed-retrieval query.

    Args:
        query_id: identifier used in submission files (CIRR ``pairid``, CIRCO ``id``).
        reference: gallery name of the reference image.
        captions: relative caption(s); FashionIQ and two-change ``shapes`` queries have two.
        target: name of the annotated target image (``None`` on test splits).
        ground_truths: every image that satisfies the query (CIRCO ``gt_img_ids``; otherwise the
            target alone; empty on test splits).
        subset: CIRR ``img_set`` members (for Recall_subset), else ``None``.
        aspect: CIRCO semantic aspect, else ``None``.
        category: FashionIQ category (``dress``, ``shirt``, ``toptee``), else ``None``.
    """

    query_id: str
    reference: str
    captions: tuple[str, ...]
    target: str | None = None
    ground_truths: tuple[str, ...] = ()
    subset: tuple[str, ...] | None = None
    aspect: str | None = None
    category: str | None = None


class ImageSource:
    """Something that turns an image name into a PIL image, in its own mode (``to_rgb`` for RGB).

    Two optional hooks let a source that is not a folder of files (the offline world) serve the
    feature pipeline directly; files need neither.
    """

    def load_image(self, name: str) -> Image.Image:  # pragma: no cover - interface
        raise NotImplementedError

    def content_id(self) -> str | None:
        """A key naming every image this source can give (feature caches use it instead of file
        stamps); ``None``: the images are files, keyed by their stamps."""
        return None

    def model_input(
        self, names: list[str], size: tuple[int, int], mean, std, device: torch.device
    ) -> torch.Tensor | None:
        """The images as the model's normalised input of ``size``, when the source can give them
        without PIL (images made at that size, so padding, resize and crop are identities); else
        ``None``, and the images go through the PIL preprocessing."""
        return None


@dataclass(frozen=True)
class UnlabeledImages:
    """Unlabeled images that networks train on (φ, Pic2Word's mapper, PALAVRA's inverter; the paper:
    ImageNet1K test; ``shapes``: the world's pre-training images).

    Args:
        source: where they are read.
        names: which of them, in order.
        source_id: names the source in cache keys (a world's cache key, a folder's path).
    """

    source: ImageSource
    names: list[str]
    source_id: str

    @property
    def data_id(self) -> str:
        """Names the images in the keys of what is trained on them."""
        return "unlabeled-" + digest(self.source_id, self.names)


@dataclass
class CaptionCorpus:
    """A text corpus for networks trained on text alone (LinCIR), made when first needed.

    Args:
        source_id: names the captions exactly (a file's content hash, a world's key and size), for
            the keys of what is trained on them.
        make: returns the captions (called once, on first use: a trained network found in the cache
            never needs them).
        described: a known caption of some images (the offline world's reference images), by name;
            empty on real datasets.
    """

    source_id: str
    make: Callable[[], Sequence[str]]
    described: dict[str, str] = field(default_factory=dict)
    _captions: list[str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, captions: Sequence[str], source: str = "given") -> CaptionCorpus:
        """A corpus of captions already in memory."""
        captions = list(captions)
        return cls(f"{source}-" + digest(captions), lambda: captions)

    def captions(self) -> list[str]:
        if self._captions is None:
            self._captions = list(self.make())
        return self._captions

    @property
    def data_id(self) -> str:
        """Names the corpus in the keys of what is trained on it."""
        return "captions-" + digest(self.source_id)


@dataclass
class CIRBenchmark:
    """A split of a composed-retrieval dataset: its queries and its gallery.

    Args:
        name: dataset name (``cirr``, ``fashioniq``, ``circo``, ``shapes``).
        split: split name (``val``, ``test``, ...).
        queries: the relative view.
        gallery: the classic view: names of every image that can be retrieved.
        images: where the images come from.
        exclude_reference: whether a query's reference image is removed from its ranking (CIRR).
        extra: per-dataset annotations (CIRCO aspects, FashionIQ galleries by category).
        unlabeled: unlabeled images the dataset brings for training networks (the offline world's
            pre-training images); ``None``: the caller gives them (``MethodContext.unlabeled``).
        captioner: a captioner the dataset brings, ``(backbone, reference image features) -> captions``
            (the offline world's best grammar caption); ``None``: a captioning model is used.
        text_corpus: a text corpus the dataset brings (the offline world's grammar captions) for
            ``lincir``; ``None``: the caller gives one (``MethodContext.captions_corpus``).
    """

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


def check_paths(root: Path, required: Sequence[str], layout: str) -> None:
    """Raise a clear error listing the expected layout if any required path is missing."""
    missing = [p for p in required if not (root / p).exists()]
    if missing:
        raise FileNotFoundError(
            f"dataset folder {root} is incomplete: missing {', '.join(missing)}.\nExpected layout:\n{layout}"
        )
