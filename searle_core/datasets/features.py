"""Image and text features in batches, cached on disk under keys naming all they depend on (backbone, exact
weights, preprocessing, files' stamps). The preprocessing belongs to the backbone, so all images share it."""

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
from searle_core.datasets import generated_benchmark
from searle_core.datasets.base import CIRBenchmark, ImageSource
from searle_core.datasets.folder import ImageLoadError
from searle_core.infra.device import eval_precision
from searle_core.infra.files import cache_file, load_cached_tensor, save_tensor_atomic
from searle_core.method.encoding import encode_text


@dataclasses.dataclass
class ImagePipeline:
    """A PIL -> tensor transform, its name in cache keys (``clip``, ``targetpad``) and its loader workers."""

    transform: Callable = dataclasses.field(repr=False)
    preprocess_id: str = "clip"
    num_workers: int = 0

    def __call__(self, image):
        return self.transform(image)


def configure_images(
    backbone: Backbone, preprocess: PreprocessKind = "clip", num_workers: int = 0, target_ratio: float = TARGET_RATIO
) -> Backbone:
    """A copy of ``backbone`` (same model) whose images go through ``preprocess`` (``clip`` or ``targetpad``)."""
    transform = make_preprocess_from_open_clip(backbone.model, preprocess, target_ratio)
    name = preprocess if preprocess == "clip" or target_ratio == TARGET_RATIO else f"{preprocess}-{target_ratio}"
    return dataclasses.replace(backbone, preprocess=ImagePipeline(transform, name, num_workers))


def configure_for_dataset(
    backbone: Backbone, dataset: str, preprocess: PreprocessKind | None = None, num_workers: int | None = None
) -> Backbone:
    """The backbone with ``dataset``'s image pipeline: ``targetpad`` unless asked otherwise (the authors' default);
    0 loader workers for a generated benchmark, made in memory."""
    if num_workers is None:
        num_workers = 0 if generated_benchmark(dataset) else min(8, os.cpu_count() or 1)
    return configure_images(backbone, preprocess or "targetpad", num_workers)


def preprocess_name(backbone: Backbone) -> str:
    return getattr(backbone.preprocess, "preprocess_id", None) or "clip"


class _ImageDataset(Dataset):
    def __init__(self, source: ImageSource, names: list[str], preprocess):
        self.source, self.names, self.preprocess = source, names, preprocess

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.preprocess(self.source.load_image(self.names[i]))


#: Bumped when the pipeline computes otherwise for the same settings, so older caches are not served.
PIPELINE_VERSION = 2


def _sha(lines) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def file_stamps(source: ImageSource, names: list[str]) -> list[str] | None:
    """Per name, the file's absolute path, size, mtime and ctime (``None``: not a file source). The ctime
    catches other pixels of the same size under a restored mtime (``cp -p``, ``rsync -a``, ``tar x``)."""
    paths = getattr(source, "paths", None)
    if not isinstance(paths, dict):
        return None

    def stamp(path: str) -> str:
        try:
            st = os.stat(path)
        except OSError:
            return f"{path}\t-"
        return f"{path}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}"

    # abspath, not resolve(): one syscall per file (the stat), not one per part
    return [stamp(os.path.abspath(paths[n])) if n in paths else f"?{n}" for n in names]


# Features computed in this process: source -> settings -> name -> (tensor, row, file stamp).
_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def image_features(
    backbone: Backbone,
    source: ImageSource,
    names: list[str],
    batch_size: int = 256,
    progress: bool = True,
    cache: bool | str | Path = True,
    normalize: bool = True,
) -> torch.Tensor:
    """(N, embed_dim) float32 CPU features through the backbone's image pipeline, L2-normalised unless ``normalize``
    is off (raw: φ's input); ``cache``: ``True`` for the project cache, a folder, or ``False``."""
    preprocess_id, names = preprocess_name(backbone), list(names)
    content = source.content_id()
    stamps = None if content is not None else file_stamps(source, names)
    if content is None:
        content = type(source).__name__ if stamps is None else "files-" + _sha(stamps)[:16]
    payload = [PIPELINE_VERSION, backbone.name, weights_key(backbone), preprocess_id, content, _sha(map(str, names))]
    key = _sha([json.dumps(payload)])[:16]
    stamp_of = dict(zip(names, stamps)) if stamps is not None else {}
    try:
        memo = _MEMO.setdefault(source, {}).setdefault(json.dumps(payload[1:4]), {})
    except TypeError:  # an unhashable or non-weakrefable source: no in-memory reuse
        memo = None
    # An in-memory entry is reused only for the same file state (a file replaced since is encoded anew).
    if memo is not None and names and all(n in memo and memo[n][2] == stamp_of.get(n) for n in names):
        feats = torch.stack([memo[n][0][memo[n][1]] for n in names])
    else:
        path = cache_file("image-raw", cache, key)
        feats = load_cached_tensor(path, (len(names), backbone.embed_dim))
        if feats is None:
            feats = _compute_image_features(backbone, source, names, batch_size, preprocess_id, progress)
            save_tensor_atomic(path, feats)
        if memo is not None:
            memo.update((n, (feats, i, stamp_of.get(n))) for i, n in enumerate(names))
    return F.normalize(feats, dim=-1) if normalize else feats.clone()


def _compute_image_features(
    backbone: Backbone, source: ImageSource, names: list[str], batch_size: int, preprocess_id: str, progress: bool
) -> torch.Tensor:
    model = backbone.model
    cfg, size = model.visual.preprocess_cfg, getattr(model.visual, "image_size", None)
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)

    def direct(chunk: list[str]) -> torch.Tensor | None:
        return source.model_input(chunk, size, cfg["mean"], cfg["std"], backbone.device)

    if preprocess_id in ("clip", "targetpad") and names and direct(names[:1]) is not None:
        # Images made at the model's size (the offline world): padding, resize and crop are identities.
        batches = (direct(names[i : i + batch_size]) for i in range(0, len(names), batch_size))
    else:
        loader = DataLoader(
            _ImageDataset(source, names, backbone.preprocess),
            batch_size=batch_size,
            num_workers=getattr(backbone.preprocess, "num_workers", 0),
            pin_memory=backbone.device.type == "cuda",
        )
        batches = (b.to(backbone.device, non_blocking=True) for b in loader)
    out, total = [], (len(names) + batch_size - 1) // batch_size
    try:
        for batch in tqdm(batches, total=total, desc="image features", disable=not progress, leave=False):
            with eval_precision(backbone.device):
                out.append(model.encode_image(batch).float().cpu())  # raw: φ's input; normalised on use
    except ImageLoadError as err:
        # A worker's error arrives wrapped in its traceback text: keep the loader's message (file, annotation).
        message = str(err)
        if message.startswith("Caught ") and "ImageLoadError: " in message:
            raise ImageLoadError(message.rsplit("ImageLoadError: ", 1)[1].strip()) from None
        raise
    return torch.cat(out) if out else torch.empty(0, backbone.embed_dim)


@torch.no_grad()
def text_features(backbone: Backbone, texts: list[str], cache: bool | str | Path = False) -> torch.Tensor:
    """Normalised (N, embed_dim) float32 CPU features of plain texts, 512 a pass (not cached unless ``cache``)."""
    texts, path = list(texts), None
    if cache and texts:
        digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()
        path = cache_file("text", cache, _sha([json.dumps([backbone.name, weights_key(backbone), digest])])[:16])
    if (feats := load_cached_tensor(path, (len(texts), backbone.embed_dim))) is not None:
        return feats
    out = []
    for i in range(0, len(texts), 512):
        with eval_precision(backbone.device):
            feats = encode_text(backbone.model, backbone.tokenize(texts[i : i + 512]))
        out.append(F.normalize(feats.float(), dim=-1).cpu())
    feats = torch.cat(out) if out else torch.empty(0, backbone.embed_dim)
    save_tensor_atomic(path, feats)
    return feats


def reference_features(
    backbone: Backbone, bench: CIRBenchmark, progress: bool = True
) -> tuple[list[str], torch.Tensor]:
    """The benchmark's reference image names and their normalised features."""
    names = bench.reference_names()
    return names, image_features(backbone, bench.images, names, progress=progress)
