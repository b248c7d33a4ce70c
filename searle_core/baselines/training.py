"""What the trained baselines share: their unlabeled images, a training loop and time bookkeeping.

Pic2Word's mapper and PALAVRA's inverter are trained on the *same* unlabeled images as φ (the
paper's ImageNet1K test images; on ``shapes`` the world's pretrain images), from the same cached
CLIP features, so the table compares objectives and not data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..artifacts import Artifact, digest, world_data_id
from ..backbone import Backbone
from ..datasets.base import CIRBenchmark, ImageSource
from ..retrieval.features import image_features


@dataclass
class Unlabeled:
    """Unlabeled training images as features.

    Args:
        data_id: names the images in artifact keys.
        names: the image names.
        features: (N, embed_dim) normalised CLIP features, row i for ``names[i]``.
    """

    data_id: str
    names: list[str]
    features: torch.Tensor


def world_of(bench: CIRBenchmark):
    """The ``ShapesWorld`` behind a ``shapes`` benchmark, else ``None``."""
    return getattr(bench.images, "world", None) if bench.name == "shapes" else None


def unlabeled_images(backbone: Backbone, bench: CIRBenchmark, extras: dict, method: str,
                     progress: bool = True) -> Unlabeled:
    """The unlabeled images a baseline trains on.

    ``shapes``: the world's pretrain images. Real datasets: ``extras["unlabeled"]``, an image
    source with a ``names`` list (e.g. ``ImageFolderSource`` of ImageNet1K ``test/``) or a
    ``(source, names)`` pair.

    Raises:
        ValueError: on a real dataset without unlabeled images, saying how to provide them.
    """
    world = world_of(bench)
    if world is not None:
        names = world.pretrain_names()
        return Unlabeled(world_data_id(world), names, image_features(backbone, world.images, names, progress=progress))
    given = extras.get("unlabeled")
    if given is None:
        raise ValueError(f"method {method!r} trains its network on unlabeled images (the paper: the ImageNet1K "
                         "test images φ is trained on); pass an image folder (`--unlabeled DIR` of `searle evaluate` or `searle table`, or "
                         "MethodContext.extras['unlabeled'] = ImageFolderSource(DIR)), or a trained network "
                         f"(MethodContext.extras['{method}_checkpoint'] = path).")
    source, names = given if isinstance(given, tuple) else (given, list(given.names))
    if not isinstance(source, ImageSource):
        raise ValueError(f"extras['unlabeled'] must be an ImageSource (with .names) or (source, names); got {type(source)}")
    data_id = "images-" + digest(type(source).__name__, str(getattr(source, "root", "")), names)
    return Unlabeled(data_id, names, image_features(backbone, source, names, progress=progress))


def fit(module: nn.Module, n: int, loss_fn: Callable[[list[int]], torch.Tensor], epochs: int, batch_size: int,
        lr: float, weight_decay: float, seed: int, desc: str, progress: bool = True) -> list[dict]:
    """AdamW over shuffled mini-batches of ``n`` examples, with a progress bar over epochs.

    Args:
        module: the network (its parameters are optimised; put in train mode here).
        n: dataset size.
        loss_fn: batch indices -> scalar loss.
        epochs: passes over the data.
        batch_size: examples per step (the last, smaller batch of an epoch is kept).
        lr: learning rate.
        weight_decay: AdamW weight decay.
        seed: seeds the shuffling (and dropout, through the global generator).
        desc: progress-bar label.
        progress: show the bar.

    Returns:
        Per epoch ``{"epoch", "loss"}`` (mean over the epoch's batches).
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    module.train()
    history = []
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        order = torch.randperm(n, generator=generator).tolist()
        losses = []
        for start in range(0, n, batch_size):
            loss = loss_fn(order[start:start + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        mean = float(torch.stack(losses).mean()) if losses else float("nan")
        history.append({"epoch": epoch + 1, "loss": mean})
        bar.set_postfix(loss=f"{mean:.4f}")
    module.eval()
    return history


def record_training(extras: dict, method: str, artifact: Artifact, spent: float,
                    train_seconds: float | None = None) -> None:
    """Note, for the table, what ``method``'s network cost.

    Args:
        extras: ``MethodContext.extras``.
        method: the method's name.
        artifact: its network (trained in this call or loaded).
        spent: wall time this call spent getting it (training or loading), kept out of query time.
        train_seconds: the network's training time (default: the artifact's recorded time).
    """
    total = train_seconds if train_seconds is not None else (artifact.meta.get("train_seconds") or 0.0)
    extras.setdefault("train_seconds", {})[method] = float(total)
    extras.setdefault("trained_now", {})[method] = artifact.trained_now
    extras.setdefault("setup_seconds", {})[method] = float(spent)
