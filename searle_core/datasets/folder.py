"""Images stored as files: a plain image folder, and the file-backed source the real loaders share.

Every real benchmark (CIRR, FashionIQ, CIRCO) maps image *names* to files. The shared pieces here
keep three promises the loaders make:

* every image comes back as decoded, in its mode on disk: the model's preprocessing pads and
  resizes in that mode and converts to RGB last, as the authors' code does (``clip.preprocess``);
* a missing or unreadable file raises :class:`ImageLoadError` naming the file *and* the
  annotation (query, split file) that references it, so a user knows which download is incomplete;
* with ``on_missing="skip"`` bad images are dropped up front and counted in
  ``benchmark.extra["skipped"]`` instead of failing hours into feature extraction.

A folder of images (ImageNet1K ``test/``, the images for phi training) needs nothing else:
:class:`ImageFolderSource` lists it recursively.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

from searle_core.datasets.base import CIRQuery, ImageSource
from searle_core.infra.errors import InputError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
OnMissing = Literal["error", "skip"]
CheckImages = Literal["none", "exists", "open"]

# How many bad files an error message lists before summarising the rest as a count.
_MAX_LISTED = 5


_HINT = "--check-images open finds every such file before work starts; --on-missing skip then drops them"


class ImageLoadError(OSError):
    """A benchmark image is missing or cannot be decoded."""


class FileImageSource(ImageSource):
    """Loads images by name from a fixed ``name -> path`` map.

    Args:
        paths: where each image name lives on disk.
        referrers: for some names, which annotation references them (used in error messages).
        default_referrer: what to say for names without an entry in ``referrers``.
        hint: what an unreadable file's error advises (the commands that check images up front).
    """

    def __init__(
        self,
        paths: Mapping[str, Path],
        referrers: Mapping[str, str] | None = None,
        default_referrer: str = "",
        hint: str = _HINT,
    ) -> None:
        self.paths: dict[str, Path] = dict(paths)
        self.referrers: dict[str, str] = dict(referrers or {})
        self.default_referrer = default_referrer
        self.hint = hint

    def __len__(self) -> int:
        return len(self.paths)

    def __contains__(self, name: object) -> bool:
        return name in self.paths

    def path(self, name: str) -> Path:
        """Return the file behind ``name`` (KeyError with context if the name is unknown)."""
        try:
            return self.paths[name]
        except KeyError:
            raise KeyError(f"unknown image name {name!r} ({self.referrer(name)})") from None

    def referrer(self, name: str) -> str:
        """Describe the annotation that references ``name``."""
        return self.referrers.get(name, self.default_referrer) or "no annotation recorded"

    def load_image(self, name: str) -> Image.Image:
        """The image ``name`` as RGB, decoded as stored.

        EXIF orientation is ignored, as in the authors' code (``PIL.Image.open`` then ``convert``,
        no ``ImageOps.exif_transpose``): a photo a viewer shows rotated by its EXIF tag reaches CLIP
        unrotated (docs/data-layouts.md).
        """
        path = self.path(name)
        try:
            image = Image.open(path)
            try:
                # Decode now, inside the try, so truncated files fail here; for single-frame files
                # opened by path, load() also closes the file handle.
                image.load()
            except BaseException:
                image.close()
                raise
            return image
        except FileNotFoundError:
            raise ImageLoadError(f"missing image file {path} (image {name!r}, {self.referrer(name)})") from None
        except Image.DecompressionBombError as exc:
            raise ImageLoadError(
                f"image file {path} is too large to decode safely (image {name!r}, {self.referrer(name)}): {exc}"
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            hint = f" ({self.hint})" if self.hint else ""
            raise ImageLoadError(
                f"unreadable image file {path} (image {name!r}, {self.referrer(name)}): {exc}{hint}"
            ) from exc


class ImageFolderSource(FileImageSource):
    """Every image file under ``root`` (recursively), named by its path relative to ``root``.

    ImageNet1K ``test/ILSVRC2012_test_*.JPEG`` is such a folder. Extensions match case-insensitively;
    hidden files and folders are ignored. ``names`` is sorted so runs are reproducible.

    Args:
        root: folder to scan.
        extensions: accepted file suffixes (lower case, with the dot).
    """

    def __init__(self, root: str | Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a folder")
        exts = {e.lower() for e in extensions}
        paths = {}
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if path.suffix.lower() in exts and path.is_file():
                paths[rel.as_posix()] = path
        if not paths:
            raise FileNotFoundError(f"no images ({', '.join(sorted(exts))}) found under {self.root}")
        self.names: list[str] = sorted(paths)
        super().__init__({n: paths[n] for n in self.names}, default_referrer=f"image folder {self.root}")


def find_bad_images(source: FileImageSource, names: Iterable[str], check: CheckImages) -> list[str]:
    """Names whose file is missing (``"exists"``) or also cannot be decoded (``"open"``).

    ``"open"`` decodes every image in full, as feature extraction will: a truncated file, a
    decompression bomb or a garbage file is found here, before any feature is computed.

    Args:
        source: the image source to check.
        names: names to check (duplicates are checked once, order kept).
        check: ``"none"``, ``"exists"`` or ``"open"``.
    """
    if check == "none":
        return []
    if check not in ("exists", "open"):
        raise InputError(f"check_images must be 'none', 'exists' or 'open', got {check!r}")
    bad = []
    for name in dict.fromkeys(names):
        path = source.paths.get(name)
        if path is None or not path.is_file():
            bad.append(name)
        elif check == "open":
            try:
                with Image.open(path) as image:
                    image.load()
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
                bad.append(name)
    return bad


def resolve_missing(
    queries: list[CIRQuery],
    gallery: list[str],
    source: FileImageSource,
    check: CheckImages,
    on_missing: OnMissing,
    layout: str,
    also_bad: Iterable[str] = (),
) -> tuple[list[CIRQuery], list[str], dict]:
    """Check every referenced image, then fail or drop the bad ones.

    Skip rules: a query is dropped when its reference or its target is bad; bad images leave the
    gallery, and are pruned from ground truths and CIRR subsets (they could never be retrieved).

    Args:
        queries: the parsed queries.
        gallery: the parsed gallery names.
        source: where the images live.
        check: how hard to check (see :func:`find_bad_images`).
        on_missing: ``"error"`` raises :class:`ImageLoadError`; ``"skip"`` drops and counts.
        layout: the expected on-disk layout, quoted in the error.
        also_bad: names known to be unusable whatever their files (e.g. a CIRCO id absent from
            the image-info file).

    Returns:
        ``(queries, gallery, skipped)`` where ``skipped`` counts ``images``, ``queries`` and
        ``gallery`` entries dropped and lists the first bad ``files``.
    """
    if on_missing not in ("error", "skip"):
        raise InputError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    needed = list(gallery)
    for q in queries:
        needed += [q.reference, *([q.target] if q.target else []), *q.ground_truths, *(q.subset or ())]
    bad = set(find_bad_images(source, needed, check)) | set(also_bad)
    skipped = {"images": len(bad), "queries": 0, "gallery": 0, "files": []}
    if not bad:
        return queries, gallery, skipped
    ordered = [n for n in dict.fromkeys(needed) if n in bad]
    described = [f"  {source.paths.get(n, n)} (image {n!r}, {source.referrer(n)})" for n in ordered]
    if on_missing == "error":
        more = f"\n  ... and {len(ordered) - _MAX_LISTED} more" if len(ordered) > _MAX_LISTED else ""
        raise ImageLoadError(
            f"{len(ordered)} image(s) missing or unreadable, first {described[0].strip()}:\n"
            + "\n".join(described[:_MAX_LISTED])
            + more
            + "\nPass --on-missing skip (on_missing='skip') to drop them and count them instead.\nExpected layout:\n"
            + layout
        )
    kept_queries = []
    for q in queries:
        if q.reference in bad or (q.target is not None and q.target in bad):
            continue
        gts = tuple(g for g in q.ground_truths if g not in bad)
        subset = None if q.subset is None else tuple(m for m in q.subset if m not in bad)
        kept_queries.append(replace(q, ground_truths=gts, subset=subset))
    kept_gallery = [g for g in gallery if g not in bad]
    skipped.update(
        queries=len(queries) - len(kept_queries),
        gallery=len(gallery) - len(kept_gallery),
        files=[str(source.paths.get(n, n)) for n in ordered[:20]],
    )
    return kept_queries, kept_gallery, skipped


def check_folder_images(source: ImageFolderSource, check: CheckImages, on_missing: OnMissing) -> tuple[list[str], dict]:
    """An image folder's names after the up-front check a benchmark gets (``--check-images``,
    ``--on-missing``): unreadable files fail naming them, or are dropped and counted.

    Args:
        source: the folder.
        check: ``"none"``, ``"exists"`` or ``"open"`` (decode every file).
        on_missing: ``"error"`` or ``"skip"``.

    Returns:
        ``(names, skipped)``, ``skipped`` as :func:`resolve_missing` counts it.
    """
    layout = f"{source.root}/ with image files ({', '.join(IMAGE_EXTENSIONS)}) in it or in sub-folders"
    _, names, skipped = resolve_missing([], list(source.names), source, check, on_missing, layout)
    return names, skipped
