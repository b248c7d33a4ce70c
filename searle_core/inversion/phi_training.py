"""Training φ from OTI tokens (SEARLE, Sec. 4.2): resumable, on one process or under DDP.

Every random choice of an epoch (the shuffle, the phrase draws, the dropout masks) is seeded from
``(seed, epoch, batch)``, so a run resumed from the checkpoint of epoch ``e`` gives the same φ as an
uninterrupted one, without depending on where the random streams stood.

Under ``torchrun`` the batch stays the paper's global batch of 256: every rank runs φ (a small MLP)
on the whole batch with the same dropout masks and computes the NT-Xent distillation over all 256
pairs, as a single process does, while the expensive part, the text tower of the phrase
regulariser, is split: each rank encodes its share of the batch's phrases. Rank ``r``'s loss is
``λ_distil·L_distil + W·λ_gpt·(its phrases' summed loss)/(phrases in the batch)``; DDP averages the
gradients over the W ranks, which gives exactly the single-process gradient (up to rounding).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from searle_core.clip.backbone import Backbone
from searle_core.clip.prefix_encoding import PrefixCachedEncoder
from searle_core.infra import distributed as dist
from searle_core.infra.device import grad_scaler, scaled_step, train_autocast
from searle_core.infra.distributed import split_evenly
from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_write_text
from searle_core.inversion.losses import nt_xent_loss
from searle_core.inversion.phi import Phi, PhiLossConfig
from searle_core.inversion.regulariser import PhraseBank, PhraseSampler, StablePhraseFeatures, TokenCache


@dataclass(frozen=True)
class PhiTrainConfig:
    """φ's training hyper-parameters; the defaults are the paper's.

    Args:
        epochs: passes over the images.
        batch_size: images per step (global, over all processes).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        loss: loss weights, temperature and regulariser concepts.
        dropout: φ's dropout probability.
        seed: seeds φ's initialisation and every epoch's random choices.
        precision: ``auto`` (fp16 autocast + GradScaler on CUDA, as the authors; fp32 on CPU),
            ``fp32``, ``fp16`` or ``bf16``. φ's forward runs under it too.
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.01
    loss: PhiLossConfig = PhiLossConfig()
    dropout: float = 0.5
    seed: int = 42
    precision: str = "auto"


#: Concepts φ's regulariser draws from on the world. The paper's top-150 of 20,931 concepts is
#: 0.7% of its vocabulary; top-150 of the world's 135 would be every concept, true or not, so the
#: world uses OTI's top-15 (which holds an image's 6 true concepts and their nearest neighbours).
WORLD_PHI_TOP_CONCEPTS = 15
#: φ's batch on the shapes world: its hundreds of unlabeled images would be one or two batches of the
#: paper's 256 per epoch, so a small batch gives φ optimiser steps (the contrastive loss still sees
#: 63 negatives per image).
WORLD_PHI_BATCH = 64
#: φ's epochs and unlabeled images on the world by default, for ``searle evaluate``/``table`` and the
#: ``shapes`` profile alike (a test holds them equal), so the CLI and notebook 4 train the same φ.
#: 70 epochs of 4 batches of 64 (280 optimiser steps, as 40 epochs of 500 images gave): notebook 5's
#: data ablation showed φ saturated in images on the world (10 % of 500 images, at equal steps, within a
#: point of all of them), so 256 images keep φ's level and halve its targets' OTI, the largest single
#: cost of ``make run``. 256 is a whole number of batches (φ drops a last partial batch).
WORLD_PHI_EPOCHS = 70
WORLD_PHI_IMAGES = 256


@dataclass(frozen=True)
class PhiRecipe:
    """How φ is trained from unlabeled images: the same for the CLI, the tables and every notebook.

    Args:
        epochs: φ's epochs (the paper: 100).
        images: train on the first this many unlabeled images (0: all of them).
        world: the ``shapes`` world's sizes (:data:`WORLD_PHI_BATCH`, :data:`WORLD_PHI_TOP_CONCEPTS`)
            instead of the paper's batch of 256 and top-150 concepts.
    """

    epochs: int = 100
    images: int = 0
    world: bool = False

    @classmethod
    def for_world(cls, epochs: int | None = None, images: int | None = None) -> PhiRecipe:
        """The ``shapes`` world's recipe (defaults :data:`WORLD_PHI_EPOCHS`, :data:`WORLD_PHI_IMAGES`)."""
        return cls(
            WORLD_PHI_EPOCHS if epochs is None else epochs, WORLD_PHI_IMAGES if images is None else images, world=True
        )

    def train_config(self, loss_overrides: dict | None = None) -> PhiTrainConfig:
        """φ's training config: the paper's with these epochs (and the world's sizes), plus ablation changes."""
        if not self.world:
            return PhiTrainConfig(
                epochs=self.epochs, loss=dataclasses.replace(PhiLossConfig(), **(loss_overrides or {}))
            )
        loss = PhiLossConfig(top_concepts=WORLD_PHI_TOP_CONCEPTS)
        return PhiTrainConfig(
            epochs=self.epochs, batch_size=WORLD_PHI_BATCH, loss=dataclasses.replace(loss, **(loss_overrides or {}))
        )


@dataclass
class PhiTrainingResult:
    """The trained φ (eval mode) and one history row per epoch.

    Rows hold ``epoch``, ``distil``, ``gpt``, ``total`` (batch means), ``seconds`` and whatever
    ``validate`` returned that epoch.
    """

    phi: Phi
    history: list[dict] = field(default_factory=list)


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the run seed and a position (epoch, batch, purpose), stable across runs."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def write_history_csv(history: list[dict], path: Path) -> None:
    """One row per epoch, one column per key that any epoch has (validation may start late)."""
    import csv
    import io

    text = io.StringIO()
    keys = list(dict.fromkeys(k for row in history for k in row))
    writer = csv.DictWriter(text, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(text.getvalue(), path)


def _flatten(metrics: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}/"))
        else:
            out[name] = float(value) if isinstance(value, (int, float, torch.Tensor)) else value
    return out


class Checkpointer(Protocol):
    """Where φ's training is saved every epoch and restored from (a run folder, in ``searle_core.jobs``)."""

    def restore(self, phi: Phi, optimizer: torch.optim.Optimizer) -> tuple[int, list[dict]]: ...

    def save(self, phi: Phi, optimizer: torch.optim.Optimizer, epochs_done: int, history: list[dict]) -> None: ...

    def finish(self, phi: Phi, history: list[dict]) -> None: ...


def train_phi(
    backbone: Backbone,
    image_features: torch.Tensor,
    oti_tokens: torch.Tensor,
    concepts: list[list[str]] | None,
    phrase_bank: PhraseBank | None,
    config: PhiTrainConfig = PhiTrainConfig(),
    validate: Callable[[Phi], dict] | None = None,
    checkpointer: Checkpointer | None = None,
    progress: bool = True,
) -> PhiTrainingResult:
    """Train φ to map image features to their OTI tokens (distillation + phrase regulariser).

    Args:
        backbone: the frozen CLIP.
        image_features: (N, embed_dim) raw ``encode_image`` features of the training images (ImageNet1K
            test in the paper): φ's input, not normalised, as in the authors' ``train_phi.py``.
        oti_tokens: (N, token_dim) their OTI tokens.
        concepts: per image, its concepts best first (the first ``config.loss.top_concepts`` are
            drawn from); ``None`` disables the regulariser.
        phrase_bank: concept -> phrases; ``None`` disables the regulariser.
        config: hyper-parameters.
        validate: called with φ (eval mode) after every epoch on rank 0; its dict (nested dicts are
            flattened with ``/``) joins the epoch's history row.
        checkpointer: restores φ and the optimiser at the start and saves them every epoch (a run
            folder: :class:`searle_core.jobs.phi_run.PhiCheckpointer`, or
            :func:`searle_core.jobs.phi_run.train_phi_in_folder`); ``None``: nothing is written.
        progress: progress bar with images/s and ETA (rank 0).

    Returns:
        A :class:`PhiTrainingResult` (the same on every rank).
    """
    n = image_features.shape[0]
    if oti_tokens.shape[0] != n:
        raise InputError(f"{n} image feature rows but {oti_tokens.shape[0]} OTI tokens")
    if concepts is not None and len(concepts) != n:
        raise InputError(f"concepts for {len(concepts)} images but features for {n}")
    device = backbone.device
    feats = image_features.detach().to(device, torch.float32)
    targets = oti_tokens.detach().to(device, torch.float32)
    loss_cfg = config.loss
    regularise = loss_cfg.lambda_gpt > 0 and concepts is not None and phrase_bank is not None
    world, rank = dist.world_size(), dist.rank()

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        phi = Phi.for_backbone(backbone, config.dropout).to(device)
    optimizer = torch.optim.AdamW(phi.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict] = []
    start_epoch = 0
    if checkpointer is not None:
        start_epoch, history = checkpointer.restore(phi, optimizer)
    model = phi
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(phi, device_ids=[device] if device.type == "cuda" else None)
    scaler = grad_scaler(device, config.precision)

    sampler = phrases = None
    if regularise:
        top = [c[: loss_cfg.top_concepts] for c in concepts]
        # φ draws a concept, then a phrase, and replaces every occurrence of the concept (the
        # authors' train_phi.py); OTI draws from the flat phrase list and replaces the first.
        sampler = PhraseSampler(top, phrase_bank, random.Random(0), draw="concept", replace_all=True)
        phrases = StablePhraseFeatures(backbone, top, phrase_bank, precision=config.precision)
    tokenize, encoder = TokenCache(backbone), PrefixCachedEncoder(backbone.model, backbone.dollar_token_id)
    # The last partial batch is dropped (the authors' DataLoader(drop_last=True)); with fewer images
    # than one batch, the one batch is all of them.
    steps = max(1, n // config.batch_size)
    per_epoch = min(n, steps * config.batch_size)
    bar = tqdm(
        total=(config.epochs - start_epoch) * per_epoch,
        desc="φ training",
        unit="img",
        disable=not progress or rank != 0,
        dynamic_ncols=True,
    )

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for epoch in range(start_epoch, config.epochs):
            began = time.perf_counter()
            phi.train()
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(config.seed, epoch, "order")))
            sums = torch.zeros(2, device=device)  # this rank's distil and gpt, summed over steps
            for b in range(steps):
                idx = perm[b * config.batch_size : (b + 1) * config.batch_size]
                # Same dropout masks on every rank: all of them run φ on the whole batch.
                torch.manual_seed(derive_seed(config.seed, epoch, b, "dropout"))
                with train_autocast(device, config.precision):  # φ's forward too, as the authors
                    predicted = model(feats[idx.to(device)])
                    distil, gpt = _losses(
                        predicted,
                        feats,
                        targets,
                        idx,
                        backbone,
                        loss_cfg,
                        sampler,
                        phrases,
                        tokenize,
                        encoder,
                        derive_seed(config.seed, epoch, b, "phrases"),
                        world,
                        rank,
                    )
                total = loss_cfg.lambda_distil * distil + loss_cfg.lambda_gpt * world * gpt
                optimizer.zero_grad(set_to_none=True)
                scaled_step(total, optimizer, scaler)
                sums += torch.stack([distil.detach().float(), gpt.detach().float()])  # no sync per step
                bar.update(len(idx))
            # Epoch means of the batch losses: gpt shares add up over ranks, distil is W x a rank's.
            means = dist.all_reduce_sum(sums).double().cpu() / steps / torch.tensor([world, 1])
            distil_mean, gpt_mean = means.tolist()
            row = {
                "epoch": epoch + 1,
                "distil": distil_mean,
                "gpt": gpt_mean,
                "total": loss_cfg.lambda_distil * distil_mean + loss_cfg.lambda_gpt * gpt_mean,
                "seconds": time.perf_counter() - began,
            }
            if validate is not None:
                metrics = None
                if rank == 0:
                    began = time.perf_counter()
                    phi.eval()
                    with torch.no_grad():
                        metrics = _flatten(validate(phi) or {})
                    phi.train()
                    metrics["val_seconds"] = time.perf_counter() - began
                row.update(dist.broadcast_object(metrics))
            history.append(row)
            bar.set_postfix(epoch=epoch + 1, loss=f"{row['total']:.4f}")
            if checkpointer is not None:
                checkpointer.save(phi, optimizer, epoch + 1, history)
    bar.close()
    phi.eval()
    if checkpointer is not None:
        checkpointer.finish(phi, history)
    return PhiTrainingResult(phi=phi, history=history)


def _losses(
    predicted: torch.Tensor,
    feats: torch.Tensor,
    targets: torch.Tensor,
    idx: torch.Tensor,
    backbone: Backbone,
    cfg: PhiLossConfig,
    sampler: PhraseSampler | None,
    phrases: StablePhraseFeatures | None,
    tokenize: TokenCache,
    encoder: PrefixCachedEncoder,
    phrase_seed: int,
    world: int,
    rank: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(distillation loss over the whole batch, this rank's share of the batch's phrase loss)."""

    device = predicted.device
    zero = predicted.sum() * 0  # keeps every parameter in the graph (DDP needs it)
    if cfg.distil_to_image:
        # Ablation: "a photo of $" vs the image, split across ranks like the regulariser.
        # Each rank returns W x its share, so that DDP's mean over ranks is the batch mean.
        rows = split_evenly(list(range(len(idx))), rank, world)
        distil = zero
        if rows:
            text = encoder(tokenize(["a photo of $"] * len(rows)), predicted[rows])
            image = feats[idx[rows].to(device)]
            distil = distil + (1 - F.cosine_similarity(text.float(), image.float(), dim=-1)).sum() / len(idx) * world
    elif cfg.lambda_distil > 0:
        distil = nt_xent_loss(predicted, targets[idx.to(device)], cfg.temperature)
    else:
        distil = zero
    gpt = zero
    if sampler is not None and phrases is not None:
        sampler.rng = random.Random(phrase_seed)
        draw = sampler.draw(idx.tolist())
        mine = split_evenly(list(range(len(draw.rows))), rank, world)
        if mine:
            pseudo = [draw.pseudo_phrases[i] for i in mine]
            rows = [draw.rows[i] for i in mine]
            text = encoder(tokenize(pseudo), predicted[rows])
            plain = phrases.cache().features([draw.phrases[i] for i in mine])
            gpt = gpt + (1 - F.cosine_similarity(text.float(), plain.float(), dim=-1)).sum() / len(draw.rows)
    return distil, gpt
