"""What the trained baselines share: their unlabeled images and a training loop.

Pic2Word's mapper and PALAVRA's inverter are trained on the *same* unlabeled images as φ (the
paper's ImageNet1K test images; on ``shapes`` the world's pretrain images), from the same cached
CLIP features, so the table compares objectives and not data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRBenchmark, ImageSource, UnlabeledImages
from searle_core.datasets.features import image_features
from searle_core.infra.device import grad_scaler, scaled_step, train_autocast
from searle_core.infra.errors import InputError
from searle_core.infra.files import digest


@dataclass
class UnlabeledFeatures:
    """Unlabeled training images as features.

    Args:
        data_id: names the images in artifact keys.
        names: the image names.
        features: (N, embed_dim) CLIP features (normalised unless asked raw), row i for ``names[i]``.
    """

    data_id: str
    names: list[str]
    features: torch.Tensor


#: Image presentations of the world's trained baselines (Pic2Word's mapper, PALAVRA's inverter), about
#: φ's there (70 epochs over 256 images): 10 epochs over the default world's 2,000 unlabeled images, 40
#: over the quick world's 500, so a world of any size trains them about as long as φ.
WORLD_BASELINE_PRESENTATIONS = 20_000


def world_epochs(images: int) -> int:
    """Epochs of a world baseline over ``images`` unlabeled images (:data:`WORLD_BASELINE_PRESENTATIONS`)."""
    return max(1, round(WORLD_BASELINE_PRESENTATIONS / max(1, images)))


def unlabeled_images(
    backbone: Backbone,
    bench: CIRBenchmark,
    given: UnlabeledImages | ImageSource | tuple[ImageSource, list[str]] | None,
    method: str,
    progress: bool = True,
    normalize: bool = True,
) -> UnlabeledFeatures:
    """The unlabeled images a baseline trains on, as features.

    A dataset that brings its own (``bench.unlabeled``: the offline world's pre-training images) uses
    them. Real datasets: ``given`` (``MethodContext.unlabeled``), an image source with a ``names``
    list (e.g. ``ImageFolderSource`` of ImageNet1K ``test/``), a ``(source, names)`` pair or an
    :class:`UnlabeledImages`. ``normalize=False`` gives raw ``encode_image`` features (Pic2Word's
    mapper input, as in its official code).

    Raises:
        ValueError: on a real dataset without unlabeled images, saying how to provide them.
    """
    if bench.unlabeled is not None:
        given = bench.unlabeled
    if isinstance(given, UnlabeledImages):
        return UnlabeledFeatures(
            given.data_id,
            given.names,
            image_features(backbone, given.source, given.names, progress=progress, normalize=normalize),
        )
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
    return UnlabeledFeatures(
        data_id, names, image_features(backbone, source, names, progress=progress, normalize=normalize)
    )


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
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    desc: str,
    progress: bool = True,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    decay_biases_and_gains: bool = True,
    warmup_steps: int | None = None,
    precision: str = "fp32",
) -> list[dict]:
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
        betas: AdamW betas.
        eps: AdamW epsilon.
        decay_biases_and_gains: ``False``: biases and norm gains get no weight decay.
        warmup_steps: ``None``: constant ``lr``; else linear warm-up over this many steps, then a
            cosine decay to 0 at the last step.
        precision: training precision (:mod:`searle_core.infra.device`); ``loss_fn`` runs under its
            autocast and fp16 on CUDA uses a loss scaler.

    Returns:
        Per epoch ``{"epoch", "loss"}`` (mean over the epoch's batches).
    """

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
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)
    steps_per_epoch = (n + batch_size - 1) // batch_size
    schedule = cosine_with_warmup(lr, warmup_steps, epochs * steps_per_epoch) if warmup_steps is not None else None
    device = next(module.parameters()).device
    scaler = grad_scaler(device, precision)
    module.train()
    history = []
    step = 0
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
