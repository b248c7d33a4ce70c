"""Image and text features in batches, cached on disk and reused across methods.

Every feature depends on four things, and the cache key names all of them: the backbone, its exact
weights (a fingerprint of the parameters for random weights, whose tag says nothing), the image
preprocessing (``clip`` or ``targetpad``) and the files: their paths, sizes and modification times,
so an image replaced in place is encoded anew. A gallery computed for one method is
therefore reused by every other method, in this process and in later ones.

The preprocessing is a property of the backbone (:func:`configure_images`) rather than an argument
threaded through every call: the methods compute reference features themselves, and reference and
gallery images must go through the same transform.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from searle_core.clip.backbone import Backbone, weights_key
from searle_core.clip.preprocess import TARGET_RATIO, PreprocessKind, make_preprocess_from_open_clip
from searle_core.datasets.base import CIRBenchmark, ImageSource
from searle_core.datasets.folder import ImageLoadError
from searle_core.infra.cache import cache_file, load_cached_tensor, save_tensor_atomic
from searle_core.infra.device import eval_precision
from searle_core.method.encoding import encode_text


class ImagePipeline:
    """A PIL -> tensor transform with the name used in cache keys and its loader settings.

    Args:
        transform: the transform itself.
        preprocess_id: a name for it in cache keys (``clip``, ``targetpad``, ...).
        num_workers: data-loader worker processes decoding images.
    """

    def __init__(self, transform: Callable, preprocess_id: str, num_workers: int = 0) -> None:
        self.transform, self.preprocess_id, self.num_workers = transform, preprocess_id, num_workers

    def __call__(self, image):
        return self.transform(image)

    def __repr__(self) -> str:
        return f"ImagePipeline({self.preprocess_id!r}, num_workers={self.num_workers})"


def configure_images(
    backbone: Backbone, preprocess: PreprocessKind = "clip", num_workers: int = 0, target_ratio: float = TARGET_RATIO
) -> Backbone:
    """A copy of ``backbone`` (same model) whose images go through ``preprocess``.

    Args:
        backbone: the frozen CLIP.
        preprocess: ``"clip"`` (resize, centre crop) or ``"targetpad"`` (pad to ``target_ratio``
            first; the paper's choice for CIRR, FashionIQ and CIRCO).
        num_workers: data-loader workers for decoding image files.
        target_ratio: targetpad's largest aspect ratio.
    """
    transform = make_preprocess_from_open_clip(backbone.model, preprocess, target_ratio)
    name = preprocess if preprocess == "clip" or target_ratio == TARGET_RATIO else f"{preprocess}-{target_ratio}"
    return dataclasses.replace(backbone, preprocess=ImagePipeline(transform, name, num_workers))


def preprocess_name(backbone: Backbone) -> str:
    """The name of a backbone's image preprocessing, as cache keys and results files record it."""
    return getattr(backbone.preprocess, "preprocess_id", None) or "clip"


class _ImageDataset(Dataset):
    def __init__(self, source: ImageSource, names: list[str], preprocess):
        self.source, self.names, self.preprocess = source, names, preprocess

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.preprocess(self.source.load_image(self.names[i]))


#: Bumped when the image pipeline changes what it computes for the same settings (2: images padded in
#: their own mode and converted to RGB last, as the authors'), so caches from before are not served.
PIPELINE_VERSION = 2


def feature_cache_key(backbone: Backbone, source_id: str, names: list[str], preprocess_id: str) -> str:
    """Key naming everything features depend on: backbone, weights, preprocessing, the file list."""
    names_hash = hashlib.sha256("\n".join(map(str, names)).encode()).hexdigest()
    payload = json.dumps([PIPELINE_VERSION, backbone.name, weights_key(backbone), preprocess_id, source_id, names_hash])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def file_stamps(source: ImageSource, names: list[str]) -> list[str] | None:
    """Per name, the file's absolute path, size, modification and inode change times (``None``: not a
    file source).

    A file replaced in place (same name, new content) changes its size or mtime, so the features
    cached for the old content are never served for the new one. Copy tools that keep timestamps
    (``cp -p``, ``rsync -a``, ``tar x``) restore the mtime but cannot set the inode change time
    (``st_ctime_ns``), so that is in the stamp too: other pixels of the same size under a restored
    mtime are recomputed. (The price: a ``chmod`` or ``touch`` also recomputes.) One ``stat`` per
    file: about a second for CIRCO's 123k-image gallery, far below encoding it.
    """
    paths = getattr(source, "paths", None)
    if not isinstance(paths, dict):
        return None
    stamps = []
    for n in names:
        if n not in paths:
            stamps.append(f"?{n}")
            continue
        # abspath, not resolve(): one syscall per file (the stat), not one per path component.
        path = os.path.abspath(paths[n])
        try:
            st = os.stat(path)
            stamps.append(f"{path}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}")
        except OSError:
            stamps.append(f"{path}\t-")
    return stamps


def _source_id(source: ImageSource, names: list[str], stamps: list[str] | None = None) -> str:
    """Where the images come from: the source's own content key, or every file's stamp (path, size, times)."""
    content = source.content_id()
    if content is not None:
        return content
    stamps = file_stamps(source, names) if stamps is None else stamps
    if stamps is not None:
        return "files-" + hashlib.sha256("\n".join(stamps).encode()).hexdigest()[:16]
    return type(source).__name__


# Features computed in this process, per image source and settings: name -> (tensor, row, file stamp). The
# methods ask for their reference images separately; these are usually gallery images already.
_MEMO: weakref.WeakKeyDictionary[ImageSource, dict[str, dict[str, tuple[torch.Tensor, int, str | None]]]] = (
    weakref.WeakKeyDictionary()
)


def _memo_table(source: ImageSource, settings: str) -> dict[str, tuple[torch.Tensor, int, str | None]] | None:
    try:
        return _MEMO.setdefault(source, {}).setdefault(settings, {})
    except TypeError:  # an unhashable or non-weakrefable source: no in-memory reuse
        return None


@torch.no_grad()
def image_features(
    backbone: Backbone,
    source: ImageSource,
    names: list[str],
    batch_size: int = 256,
    preprocess=None,
    preprocess_id: str | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    cache: bool | str | Path = True,
    normalize: bool = True,
) -> torch.Tensor:
    """(N, embed_dim) float32 CPU features of the named images, L2-normalised unless ``normalize`` is off.

    Raw features (``encode_image``'s output, ``normalize=False``) are what φ takes, in training and
    at inference, as in the authors' code; normalised ones are what rankings compare. Both come from
    the same cached raw features (normalising is exact and cheap).

    Args:
        backbone: the frozen CLIP.
        source: where images come from (any :class:`ImageSource`).
        names: image names, in the order wanted.
        batch_size: images per forward pass.
        preprocess: PIL -> tensor transform (default: the backbone's, see :func:`configure_images`).
        preprocess_id: a name for the transform in the cache key (default: the transform's own
            ``preprocess_id``, ``"clip"`` for the backbone's stock transform, else its ``repr``).
        num_workers: data-loader workers (default: the backbone's image pipeline's, else 0).
        progress: progress bar.
        cache: ``True`` for the project cache, a folder, or ``False``.
        normalize: L2-normalise each row (``False``: raw ``encode_image`` features, φ's input).
    """
    transform = preprocess if preprocess is not None else backbone.preprocess
    if preprocess_id is None:
        preprocess_id = getattr(transform, "preprocess_id", None) or ("clip" if preprocess is None else repr(transform))
    if num_workers is None:
        num_workers = getattr(transform, "num_workers", 0)
    names = list(names)
    stamps = None if source.content_id() is not None else file_stamps(source, names)
    key = feature_cache_key(backbone, _source_id(source, names, stamps), names, preprocess_id)
    stamp_of = dict(zip(names, stamps)) if stamps is not None else {}
    memo = _memo_table(source, json.dumps([backbone.name, weights_key(backbone), preprocess_id]))
    # An in-memory entry is reused only for the same file state (a file replaced since is encoded anew).
    if memo is not None and names and all(n in memo and memo[n][2] == stamp_of.get(n) for n in names):
        return _finish(torch.stack([memo[n][0][memo[n][1]] for n in names]), normalize)
    path = cache_file("image-raw", cache, key)
    feats = load_cached_tensor(path, len(names))
    if feats is None:
        feats = _compute_image_features(
            backbone, source, names, batch_size, transform, preprocess_id, num_workers, progress
        )
        save_tensor_atomic(path, feats)
    if memo is not None:
        memo.update((n, (feats, i, stamp_of.get(n))) for i, n in enumerate(names))
    return _finish(feats, normalize)


def _finish(raw: torch.Tensor, normalize: bool) -> torch.Tensor:
    return F.normalize(raw, dim=-1) if normalize else raw.clone()


def _compute_image_features(
    backbone: Backbone,
    source: ImageSource,
    names: list[str],
    batch_size: int,
    transform,
    preprocess_id: str,
    num_workers: int,
    progress: bool,
) -> torch.Tensor:
    model = backbone.model
    cfg, size = model.visual.preprocess_cfg, getattr(model.visual, "image_size", None)
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    direct = (
        preprocess_id in ("clip", "targetpad")
        and names
        and source.model_input(names[:1], size, cfg["mean"], cfg["std"], backbone.device) is not None
    )
    if direct:
        # A source that makes its images at the model's size (the offline world): padding (aspect ratio
        # 1), resize and crop are identities, so PIL is skipped.
        batches = (
            source.model_input(names[i : i + batch_size], size, cfg["mean"], cfg["std"], backbone.device)
            for i in range(0, len(names), batch_size)
        )
    else:
        loader = DataLoader(
            _ImageDataset(source, names, transform),
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=backbone.device.type == "cuda",
        )
        batches = (b.to(backbone.device, non_blocking=True) for b in loader)
    out = []
    total = (len(names) + batch_size - 1) // batch_size
    try:
        for batch in tqdm(batches, total=total, desc="image features", disable=not progress, leave=False):
            with eval_precision(backbone.device):
                out.append(model.encode_image(batch).float().cpu())  # raw: φ's input; normalised on use
    except ImageLoadError as err:
        # A worker's error arrives wrapped in the worker's traceback text: keep the loader's message,
        # which names the file and the annotation that references it.
        message = str(err)
        if message.startswith("Caught ") and "ImageLoadError: " in message:
            raise ImageLoadError(message.rsplit("ImageLoadError: ", 1)[1].strip()) from None
        raise
    return torch.cat(out) if out else torch.empty(0, backbone.embed_dim)


@torch.no_grad()
def text_features(
    backbone: Backbone,
    texts: list[str],
    batch_size: int = 512,
    cache: bool | str | Path = False,
    progress: bool = False,
) -> torch.Tensor:
    """Normalised (N, embed_dim) float32 CPU features of plain texts.

    Args:
        backbone: the frozen CLIP.
        texts: the prompts.
        batch_size: prompts per text pass.
        cache: ``True`` for the project cache, a folder, or ``False`` (default: cheap to recompute).
        progress: progress bar over batches.
    """
    texts = list(texts)
    path = None
    if cache and texts:
        digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()
        payload = json.dumps([backbone.name, weights_key(backbone), digest])
        path = cache_file("text", cache, hashlib.sha256(payload.encode()).hexdigest()[:16])
        feats = load_cached_tensor(path, len(texts))
        if feats is not None:
            return feats
    out = []
    for i in tqdm(range(0, len(texts), batch_size), desc="text features", disable=not progress, leave=False):
        with eval_precision(backbone.device):
            feats = encode_text(backbone.model, backbone.tokenize(texts[i : i + batch_size]))
        out.append(F.normalize(feats.float(), dim=-1).cpu())
    feats = torch.cat(out) if out else torch.empty(0, backbone.embed_dim)
    save_tensor_atomic(path, feats)
    return feats


def reference_features(
    backbone: Backbone, bench: CIRBenchmark, progress: bool = True
) -> tuple[list[str], torch.Tensor]:
    """The benchmark's reference image names and their normalised features (cached like every image feature)."""
    names = bench.reference_names()
    return names, image_features(backbone, bench.images, names, progress=progress)
