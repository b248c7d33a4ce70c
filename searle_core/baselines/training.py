"""What the trained baselines share: their unlabeled images and a training loop.

Pic2Word's mapper and PALAVRA's inverter train on the *same* unlabeled images as φ (the paper's
ImageNet1K test images, or a dataset's own), from the same cached CLIP features, so the table compares
objectives and not data.
"""

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
    """Unlabeled training images as (N, embed_dim) CLIP features, row i for ``names[i]``; ``data_id`` names
    the images in artifact keys."""

    data_id: str
    names: list[str]
    features: torch.Tensor


def unlabeled_images(
    backbone: Backbone, bench: CIRBenchmark, given, method: str, progress: bool = True, normalize: bool = True
) -> UnlabeledFeatures:
    """The unlabeled images a baseline trains on, as features (``normalize=False``: raw ``encode_image``
    features, Pic2Word's mapper input). A dataset's own (``bench.unlabeled``) come first; else ``given``
    (``MethodContext.unlabeled``): an image source with ``names`` (e.g. ``ImageFolderSource`` of ImageNet1K
    ``test/``), a ``(source, names)`` pair or :class:`UnlabeledImages`."""
    if bench.unlabeled is not None:
        given = bench.unlabeled
    if isinstance(given, UnlabeledImages):
        feats = image_features(backbone, given.source, given.names, progress=progress, normalize=normalize)
        return UnlabeledFeatures(given.data_id, given.names, feats)
    if given is None:
        raise InputError(
            f"method {method!r} trains its network on unlabeled images (the paper: the ImageNet1K "
            "test images φ is trained on); pass an image folder (`--unlabeled DIR` of `searle evaluate` "
            "or `searle table`, or MethodContext.unlabeled = ImageFolderSource(DIR)), or a trained "
            f"network (MethodContext.checkpoints['{method}'] = path)."
        )
    source, names = given if isinstance(given, tuple) else (given, list(given.names))
    if not isinstance(source, ImageSource):
        raise InputError(
            f"MethodContext.unlabeled must be an ImageSource (with .names) or (source, names); got {type(source)}"
        )
    data_id = "images-" + digest(type(source).__name__, str(getattr(source, "root", "")), names)
    feats = image_features(backbone, source, names, progress=progress, normalize=normalize)
    return UnlabeledFeatures(data_id, names, feats)


@torch.no_grad()
def network_tokens(backbone: Backbone, network: nn.Module, features: torch.Tensor, l2: bool = False) -> torch.Tensor:
    """A trained network's tokens of raw CLIP features (image or text; ``l2``: normalised first), on CPU."""
    feats = features.to(backbone.device).float()
    with eval_precision(backbone.device):
        return network(F.normalize(feats, dim=-1) if l2 else feats).float().cpu()


def reference_tokens(backbone: Backbone, bench: CIRBenchmark, network, progress=True, l2=False) -> dict:
    """``$`` of every reference image: ``network`` (Pic2Word's mapper, LinCIR's φ) on its raw
    ``encode_image`` features, as their official code does."""
    names = bench.reference_names()
    feats = image_features(backbone, bench.images, names, progress=progress, normalize=False)
    return dict(zip(names, network_tokens(backbone, network, feats, l2)))


def cosine_with_warmup(base_lr: float, warmup: int, total: int) -> Callable[[int], float]:
    """Learning rate at step ``s``: linear warm-up ``base_lr * (s + 1) / warmup``, then a cosine to 0
    over the remaining steps (open_clip's ``cosine_lr``, which Pic2Word uses)."""

    def lr_at(step: int) -> float:
        if step < warmup:
            return base_lr * (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))) * base_lr

    return lr_at


def _no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases and norm gains (1-d parameters): open_clip's and Pic2Word's ``gain_or_bias`` group."""
    return param.ndim < 2 or "bias" in name


def fit(
    module: nn.Module,
    n: int,
    loss_fn: Callable[[list[int]], torch.Tensor],
    config,
    desc: str,
    progress: bool = True,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    decay_biases_and_gains: bool = True,
    warmup_steps: int | None = None,
    precision: str = "fp32",
) -> list[dict]:
    """AdamW over shuffled mini-batches of ``n`` examples (the last, smaller batch kept) with ``config``'s
    epochs, batch size, lr, weight decay and seed (shuffling and, through the global generator, dropout);
    ``loss_fn`` maps batch indices to a loss, run under ``precision``'s autocast (fp16 on CUDA with a loss
    scaler). ``warmup_steps``: a linear warm-up then a cosine decay to 0 (``None``: a constant lr).
    Returns the mean loss of every epoch."""
    epochs, batch_size, lr, seed = config.epochs, config.batch_size, config.lr, config.seed
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if decay_biases_and_gains:
        groups = [{"params": list(module.parameters())}]
    else:
        named = list(module.named_parameters())
        groups = [
            {"params": [p for k, p in named if _no_decay(k, p)], "weight_decay": 0.0},
            {"params": [p for k, p in named if not _no_decay(k, p)]},
        ]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=config.weight_decay, betas=betas, eps=eps)
    total = epochs * ((n + batch_size - 1) // batch_size)
    schedule = cosine_with_warmup(lr, warmup_steps, total) if warmup_steps is not None else None
    device = next(module.parameters()).device
    scaler = grad_scaler(device, precision)
    module.train()
    history, step = [], 0
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        order = torch.randperm(n, generator=generator).tolist()
        losses = []
        for start in range(0, n, batch_size):
            if schedule is not None:
                for group in optimizer.param_groups:
                    group["lr"] = schedule(step)
            with train_autocast(device, precision):
                loss = loss_fn(order[start : start + batch_size])
            optimizer.zero_grad(set_to_none=True)
            scaled_step(loss, optimizer, scaler)
            step += 1
            losses.append(loss.detach())
        mean = float(torch.stack(losses).mean()) if losses else float("nan")
        history.append({"epoch": epoch + 1, "loss": mean})
        bar.set_postfix(loss=f"{mean:.4f}")
    module.eval()
    return history
