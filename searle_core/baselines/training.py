"""What the trained baselines share: their unlabeled images (φ's, from the same cached CLIP features, so
the table compares objectives and not data) and a training loop."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRBenchmark, ImageSource, UnlabeledImages
from searle_core.datasets.features import image_features
from searle_core.infra.device import eval_precision, grad_scaler, scaled_step, train_autocast
from searle_core.infra.errors import InputError
from searle_core.infra.files import digest


@dataclass
class UnlabeledFeatures:
    """Unlabeled training images as (N, embed_dim) CLIP features; ``data_id`` names them in artifact keys."""

    data_id: str
    features: torch.Tensor


def unlabeled_images(
    backbone: Backbone, bench: CIRBenchmark, given, method: str, progress: bool = True, normalize: bool = True
) -> UnlabeledFeatures:
    """The unlabeled images a baseline trains on, as features: the dataset's own, else ``given``
    (``MethodContext.unlabeled``: an image source with ``names``, a ``(source, names)`` pair or images)."""
    given = bench.unlabeled if bench.unlabeled is not None else given
    if isinstance(given, UnlabeledImages):
        data_id, source, names = given.data_id, given.source, given.names
    elif given is None:
        raise InputError(
            f"method {method!r} trains its network on unlabeled images (the paper: the ImageNet1K "
            "test images φ is trained on); pass an image folder (`--unlabeled DIR` of `searle evaluate` "
            "or `searle table`, or MethodContext.unlabeled = ImageFolderSource(DIR)), or a trained "
            f"network (MethodContext.checkpoints['{method}'] = path)."
        )
    else:
        source, names = given if isinstance(given, tuple) else (given, list(given.names))
        if not isinstance(source, ImageSource):
            raise InputError(
                f"MethodContext.unlabeled must be an ImageSource (with .names) or (source, names); got {type(source)}"
            )
        data_id = "images-" + digest(type(source).__name__, str(getattr(source, "root", "")), names)
    return UnlabeledFeatures(data_id, image_features(backbone, source, names, progress=progress, normalize=normalize))


@torch.no_grad()
def network_tokens(backbone: Backbone, network: nn.Module, features: torch.Tensor, l2: bool = False) -> torch.Tensor:
    """A trained network's tokens of raw CLIP features (image or text; ``l2``: normalised first), on CPU."""
    feats = features.to(backbone.device).float()
    with eval_precision(backbone.device):
        return network(F.normalize(feats, dim=-1) if l2 else feats).float().cpu()


def reference_tokens(backbone: Backbone, bench: CIRBenchmark, network, progress=True, l2=False) -> dict:
    """``$`` of every reference image: ``network`` on its raw features, as Pic2Word's and LinCIR's code."""
    names = bench.reference_names()
    feats = image_features(backbone, bench.images, names, progress=progress, normalize=False)
    return dict(zip(names, network_tokens(backbone, network, feats, l2)))


def cosine_with_warmup(base_lr: float, warmup: int, total: int) -> Callable[[int], float]:
    """Step -> lr: a linear warm-up, then a cosine to 0 (open_clip's ``cosine_lr``, which Pic2Word uses)."""

    def lr_at(step: int) -> float:
        if step < warmup:
            return base_lr * (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))) * base_lr

    return lr_at


def fit(
    module: nn.Module,
    n: int,
    loss_fn: Callable,
    config,
    desc: str,
    progress=True,
    optimizer=None,
    schedule=None,
    width=None,
) -> list[dict]:
    """AdamW (else ``optimizer``) over shuffled mini-batches of ``n`` examples (the last, smaller one kept) with
    ``config``'s epochs, batch size, lr, weight decay, seed and ``precision`` (``auto`` read for a text tower of
    ``width``, as OTI's); ``loss_fn`` maps batch indices to
    a loss, ``schedule`` steps to lrs. Returns every epoch's mean loss."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = optimizer or torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    precision = getattr(config, "precision", "fp32")
    device = next(module.parameters()).device
    scaler = grad_scaler(device, precision)
    module.train()
    history, step = [], 0
    bar = tqdm(range(config.epochs), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        order = torch.randperm(n, generator=generator).tolist()
        losses = []
        for start in range(0, n, config.batch_size):
            if schedule is not None:
                for group in optimizer.param_groups:
                    group["lr"] = schedule(step)
            with train_autocast(device, precision, width):
                loss = loss_fn(order[start : start + config.batch_size])
            optimizer.zero_grad(set_to_none=True)
            scaled_step(loss, optimizer, scaler)
            step += 1
            losses.append(loss.detach())
        mean = float(torch.stack(losses).mean()) if losses else float("nan")
        history.append({"epoch": epoch + 1, "loss": mean})
        bar.set_postfix(loss=f"{mean:.4f}")
    module.eval()
    return history
