"""Image and text features in batches, cached on disk and reused across methods."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..backbone import Backbone
from ..datasets.base import ImageSource
from ..device import autocast
from ..paths import cache_dir
from ..text_encoding import encode_text
from ..world_clip import images_to_tensor


class _ImageDataset(Dataset):
    def __init__(self, source: ImageSource, names: list[str], preprocess):
        self.source, self.names, self.preprocess = source, names, preprocess

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.preprocess(self.source.load_image(self.names[i]))


def feature_cache_key(backbone: Backbone, source_id: str, names: list[str], preprocess_id: str) -> str:
    """Key naming everything features depend on: backbone, weights, preprocessing, the file list."""
    names_hash = hashlib.sha256("\n".join(map(str, names)).encode()).hexdigest()
    payload = json.dumps([backbone.name, backbone.weights_id, preprocess_id, source_id, names_hash])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _source_id(source: ImageSource, names: list[str]) -> str:
    """Where the images come from: a world's config hash, or the folder of the first file."""
    world = getattr(source, "world", None)
    if world is not None:
        return f"shapes-{world.config.cache_key()}"
    if hasattr(source, "path") and names:
        return str(Path(source.path(names[0])).resolve().parent)
    return type(source).__name__


@torch.no_grad()
def image_features(backbone: Backbone, source: ImageSource, names: list[str], batch_size: int = 256,
                   preprocess=None, preprocess_id: str = "clip", num_workers: int = 0, progress: bool = True,
                   cache: bool | str | Path = True) -> torch.Tensor:
    """Normalised (N, embed_dim) float32 CPU features of the named images.

    Args:
        backbone: the frozen CLIP.
        source: where images come from (any :class:`ImageSource`).
        names: image names, in the order wanted.
        batch_size: images per forward pass.
        preprocess: PIL -> tensor transform (default: the backbone's); e.g. a targetpad transform.
        preprocess_id: a name for ``preprocess`` in the cache key.
        num_workers: data-loader workers for decoding images from disk.
        progress: progress bar.
        cache: ``True`` for the project cache, a folder, or ``False``.
    """
    path = None
    if cache:
        folder = cache_dir("features") if cache is True else Path(cache)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"image-{feature_cache_key(backbone, _source_id(source, names), names, preprocess_id)}.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
    model = backbone.model
    out = []
    fast = preprocess is None and hasattr(source, "array") and preprocess_id == "clip"
    if fast:  # synthetic images are already arrays at the model's size: skip PIL entirely
        cfg = model.visual.preprocess_cfg
        batches = (images_to_tensor(source.array(names[i:i + batch_size]), cfg["mean"], cfg["std"], backbone.device)
                   for i in range(0, len(names), batch_size))
    else:
        loader = DataLoader(_ImageDataset(source, names, preprocess or backbone.preprocess), batch_size=batch_size,
                            num_workers=num_workers, pin_memory=backbone.device.type == "cuda")
        batches = (b.to(backbone.device, non_blocking=True) for b in loader)
    total = (len(names) + batch_size - 1) // batch_size
    for batch in tqdm(batches, total=total, desc="image features", disable=not progress, leave=False):
        with autocast(backbone.device):
            out.append(F.normalize(model.encode_image(batch).float(), dim=-1).cpu())
    feats = torch.cat(out) if out else torch.empty(0, backbone.embed_dim)
    if path is not None:
        tmp = path.with_suffix(".tmp")
        torch.save(feats, tmp)
        tmp.replace(path)
    return feats


@torch.no_grad()
def text_features(backbone: Backbone, texts: list[str], batch_size: int = 512) -> torch.Tensor:
    """Normalised (N, embed_dim) float32 CPU features of plain texts."""
    out = []
    for i in range(0, len(texts), batch_size):
        with autocast(backbone.device):
            feats = encode_text(backbone.model, backbone.tokenize(texts[i:i + batch_size]))
        out.append(F.normalize(feats.float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.empty(0, backbone.embed_dim)
