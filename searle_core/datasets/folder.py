"""Images stored as files (the real loaders' name -> file source, a plain image folder). A bad file is an
:class:`ImageLoadError` naming it and its annotation; ``on_missing="skip"`` drops such images up front."""

from __future__ import annotations

import os
import warnings
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

_MAX_LISTED = 5  # bad files an error lists before counting the rest
CHECK_IMAGES_HINT = "--check-images open finds every such file before work starts; --on-missing skip then drops them"
_REPLACE = "remove or replace that file and run again"  # where no flag checks the images (train-phi, --unlabeled)


class ImageLoadError(OSError):
    """A benchmark image is missing or cannot be decoded."""


def open_image(path: Path) -> Image.Image:
    """``Image.open`` with Pillow's decompression-bomb warning (over 89 M pixels: gigabytes to decode) an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


class FileImageSource(ImageSource):
    """Images by name from a ``name -> path`` map; errors name a name's ``referrers`` and give ``hint``."""

    def __init__(
        self,
        paths: Mapping[str, Path],
        referrers: Mapping[str, str] | None = None,
        default_referrer: str = "",
        hint: str = CHECK_IMAGES_HINT,
    ) -> None:
        self.paths: dict[str, Path] = dict(paths)
        self.referrers: dict[str, str] = dict(referrers or {})
        self.default_referrer, self.hint = default_referrer, hint

    def path(self, name: str) -> Path:
        try:
            return self.paths[name]
        except KeyError:
            raise KeyError(f"unknown image name {name!r} ({self.referrer(name)})") from None

    def referrer(self, name: str) -> str:
        return self.referrers.get(name, self.default_referrer) or "no annotation recorded"

    def load_image(self, name: str) -> Image.Image:
        """The image as decoded, EXIF orientation ignored as in the authors' code (no ``exif_transpose``)."""
        path = self.path(name)
        try:
            image = open_image(path)
            try:
                # Decode now, so truncated files fail here (load() also closes a single-frame file).
                image.load()
            except BaseException:
                image.close()
                raise
            return image
        except FileNotFoundError:
            raise ImageLoadError(f"missing image file {path} (image {name!r}, {self.referrer(name)})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageLoadError(
                f"image file {path} is too large to decode safely (image {name!r}, {self.referrer(name)}): {exc}"
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            hint = f" ({self.hint})" if self.hint else ""
            raise ImageLoadError(
                f"unreadable image file {path} (image {name!r}, {self.referrer(name)}): {exc}{hint}"
            ) from exc


class ImageFolderSource(FileImageSource):
    """Every image file under ``root`` (recursively, hidden ones skipped, extensions in any case), named by
    its path relative to ``root``, in sorted order (ImageNet1K ``test/`` is such a folder)."""

    def __init__(self, root: str | Path, extensions: Sequence[str] = IMAGE_EXTENSIONS, hint: str = _REPLACE) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a folder")
        exts = {e.lower() for e in extensions}
        paths, seen = {}, set()
        # Linked sub-folders are followed, each real folder once (a link back up is a cycle, not more images).
        for folder, dirs, files in os.walk(self.root, onerror=self._unreadable, followlinks=True):
            fresh = (real := os.path.realpath(folder)) not in seen
            seen.add(real)
            dirs[:] = [d for d in dirs if fresh and not d.startswith(".")]
            found = (
                Path(folder, f) for f in files if fresh and not f.startswith(".") and Path(f).suffix.lower() in exts
            )
            paths.update((p.relative_to(self.root).as_posix(), p) for p in found if p.is_file())
        if not paths:
            raise FileNotFoundError(f"no images ({', '.join(sorted(exts))}) found under {self.root}")
        self.names: list[str] = sorted(paths)
        super().__init__({n: paths[n] for n in self.names}, default_referrer=f"image folder {self.root}", hint=hint)

    def _unreadable(self, err: OSError) -> None:
        raise InputError(f"image folder {self.root}: cannot read {err.filename} ({err.strerror}); make it readable")


def resolve_missing(
    queries: list[CIRQuery],
    gallery: list[str],
    source: FileImageSource,
    check: CheckImages,
    on_missing: OnMissing,
    layout: str,
    also_bad: Iterable[str] = (),
) -> tuple[list[CIRQuery], list[str], dict]:
    """``(queries, gallery, skipped)`` once every referenced image is checked (``open``: decoded): bad ones and
    ``also_bad`` fail (quoting ``layout``) or are dropped, with the queries whose reference or target they are."""
    if on_missing not in ("error", "skip"):
        raise InputError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    if check not in ("none", "exists", "open"):
        raise InputError(f"check_images must be 'none', 'exists' or 'open', got {check!r}")
    needed = list(gallery)
    for q in queries:
        needed += [q.reference, *([q.target] if q.target else []), *q.ground_truths, *(q.subset or ())]
    bad = set(also_bad)
    for name in dict.fromkeys(needed) if check != "none" else ():
        path = source.paths.get(name)
        if path is None or not os.path.isfile(path):  # False, not Errno 36, for a name too long
            bad.add(name)
        elif check == "open":  # decode in full, as feature extraction will: truncated files, bombs, garbage
            try:
                with open_image(path) as image:
                    image.load()
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning):
                bad.add(name)
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
            + f"{more}\nPass --on-missing skip (on_missing='skip') to drop them and count them instead."
            + f"\nExpected layout:\n{layout}"
        )
    kept = []
    for q in queries:
        if q.reference not in bad and (q.target is None or q.target not in bad):
            subset = None if q.subset is None else tuple(m for m in q.subset if m not in bad)
            kept.append(replace(q, ground_truths=tuple(g for g in q.ground_truths if g not in bad), subset=subset))
    kept_gallery = [g for g in gallery if g not in bad]
    files = [str(source.paths.get(n, n)) for n in ordered[:20]]
    skipped.update(queries=len(queries) - len(kept), gallery=len(gallery) - len(kept_gallery), files=files)
    return kept, kept_gallery, skipped


def check_folder_images(source: ImageFolderSource, check: CheckImages, on_missing: OnMissing) -> tuple[list[str], dict]:
    """An image folder's names after the check a benchmark gets (``--check-images``, ``--on-missing``)."""
    layout = f"{source.root}/ with image files ({', '.join(IMAGE_EXTENSIONS)}) in it or in sub-folders"
    _, names, skipped = resolve_missing([], list(source.names), source, check, on_missing, layout)
    return names, skipped
