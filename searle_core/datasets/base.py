"""The structures every composed-retrieval dataset shares, real or synthetic.

A dataset has two views, as in the authors' code: the *relative* view yields queries
(reference image, relative caption(s), target and ground truths) and the *classic* view yields the
gallery (image names). Retrieval, metrics and submission files work on these structures only, so a
new dataset needs nothing but a class that fills them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image


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
    """Something that turns an image name into an RGB PIL image."""

    def load_image(self, name: str) -> Image.Image:  # pragma: no cover - interface
        raise NotImplementedError


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
    """

    name: str
    split: str
    queries: list[CIRQuery]
    gallery: list[str]
    images: ImageSource
    exclude_reference: bool = False
    extra: dict = field(default_factory=dict)

    def reference_names(self) -> list[str]:
        return sorted({q.reference for q in self.queries})


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (palette, CMYK, RGBA, greyscale, 16-bit) to RGB.

    Transparent pixels are composited on white so an RGBA logo does not turn black.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.split()[-1])
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    return image.convert("RGB")


def check_paths(root: Path, required: Sequence[str], layout: str) -> None:
    """Raise a clear error listing the expected layout if any required path is missing."""
    missing = [p for p in required if not (root / p).exists()]
    if missing:
        raise FileNotFoundError(
            f"dataset folder {root} is incomplete: missing {', '.join(missing)}.\n"
            f"Expected layout:\n{layout}"
        )
