"""Training φ from OTI tokens (SEARLE, Sec. 4.2), on one process or under DDP.

Every random choice of an epoch (the shuffle, the phrase draws, the dropout masks) is seeded from
``(seed, epoch, batch)``, so a run resumed after epoch ``e`` gives the same φ as an uninterrupted one.
Under ``torchrun`` the batch stays the global batch: every rank runs φ on the whole batch with the same
dropout masks and only the text tower of the phrase regulariser is sharded (see :func:`phi_loss`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from tqdm.auto import tqdm

from searle_core.infra import distributed as dist
from searle_core.infra.device import grad_scaler, scaled_step, train_autocast
from searle_core.infra.errors import InputError
from searle_core.method.phi import Phi, PhiLossConfig, phi_loss, phi_sampler
from searle_core.method.prefix_cache import PrefixCachedEncoder
from searle_core.method.regulariser import PhraseBank, StablePhraseFeatures, TokenCache


@dataclass(frozen=True)
class PhiTrainConfig:
    """φ's training hyper-parameters; the defaults are the paper's. ``batch_size`` is global (over all
    processes); ``precision``: as ``OTIConfig``'s; ``prefix_cache``: encode prompts with the prefix cache (same
    numbers up to rounding, faster)."""

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.01
    loss: PhiLossConfig = PhiLossConfig()
    dropout: float = 0.5
    seed: int = 42
    precision: str = "auto"
    prefix_cache: bool = True


@dataclass
class PhiTrainingResult:
    """The trained φ (eval mode) and one row per epoch: ``epoch``, ``distil``, ``gpt``, ``total`` (batch
    means), ``seconds`` and whatever ``validate`` returned."""

    phi: Phi
    history: list[dict] = field(default_factory=list)


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the run seed and a position (epoch, batch, purpose), stable across runs."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class Checkpointer(Protocol):
    """Where training is restored from at the start and saved to every epoch (a run folder)."""

    def restore(self, phi: Phi, optimizer: torch.optim.Optimizer) -> tuple[int, list[dict]]: ...

    def save(self, phi: Phi, optimizer: torch.optim.Optimizer, epochs_done: int, history: list[dict]) -> None: ...

    def finish(self, phi: Phi, history: list[dict]) -> None: ...


def _flatten(metrics: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = float(value) if isinstance(value, (int, float, torch.Tensor)) else value
    return out


def train_phi(
    backbone,
    image_features: torch.Tensor,
    oti_tokens: torch.Tensor,
    concepts: list[list[str]] | None,
    phrase_bank: PhraseBank | None,
    config: PhiTrainConfig = PhiTrainConfig(),
    validate: Callable[[Phi], dict] | None = None,
    checkpointer: Checkpointer | None = None,
    progress: bool = True,
) -> PhiTrainingResult:
    """Train φ to map raw image features (N, embed_dim) to their OTI tokens (N, token_dim); ``concepts`` and
    ``phrase_bank`` as :func:`oti`'s. ``validate(φ)`` runs after every epoch on rank 0; its dict (nested keys
    joined with ``/``) joins the epoch's row. The result is the same on every rank."""
    n = image_features.shape[0]
    if oti_tokens.shape[0] != n:
        raise InputError(f"{n} image feature rows but {oti_tokens.shape[0]} OTI tokens")
    if concepts is not None and len(concepts) != n:
        raise InputError(f"concepts for {len(concepts)} images but features for {n}")
    device = backbone.device
    feats = image_features.detach().to(device, torch.float32)
    targets = oti_tokens.detach().to(device, torch.float32)
    cfg = config.loss
    world_size, rank = dist.world_size(), dist.rank()

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        phi = Phi.for_backbone(backbone, config.dropout).to(device)
    optimizer = torch.optim.AdamW(phi.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start_epoch, history = checkpointer.restore(phi, optimizer) if checkpointer is not None else (0, [])
    model = phi
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(phi, device_ids=[device] if device.type == "cuda" else None)
    scaler = grad_scaler(device, config.precision)

    sampler = phrases = None
    if cfg.lambda_gpt > 0 and concepts is not None and phrase_bank is not None:
        sampler = phi_sampler(concepts, phrase_bank, cfg.top_concepts, seed=0)
        phrases = StablePhraseFeatures(backbone, sampler.usable, phrase_bank, precision=config.precision)
    tokenize = TokenCache(backbone)
    encode = PrefixCachedEncoder(backbone.model, backbone.dollar_token_id, enabled=config.prefix_cache)
    # The last partial batch is dropped (the authors' drop_last=True); fewer images than a batch: one batch.
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
                rows = idx.to(device)
                torch.manual_seed(derive_seed(config.seed, epoch, b, "dropout"))  # same masks on every rank
                draw = None
                if sampler is not None:
                    sampler.reseed(derive_seed(config.seed, epoch, b, "phrases"))
                    draw = sampler.draw(idx.tolist())
                with train_autocast(device, config.precision, backbone.token_dim):  # φ's forward too, as the authors
                    predicted = model(feats[rows])
                    distil, gpt = phi_loss(
                        predicted,
                        feats[rows],
                        targets[rows],
                        draw,
                        phrases.cache() if phrases is not None else None,
                        encode,
                        tokenize,
                        cfg,
                        world_size,
                        rank,
                    )
                total = cfg.lambda_distil * distil + cfg.lambda_gpt * world_size * gpt
                optimizer.zero_grad(set_to_none=True)
                scaled_step(total, optimizer, scaler)
                sums += torch.stack([distil.detach().float(), gpt.detach().float()])  # no sync per step
                bar.update(len(idx))
            # Epoch means of the batch losses: gpt shares add up over ranks, distil is W x a rank's.
            distil_mean, gpt_mean = (
                dist.all_reduce_sum(sums).double().cpu() / steps / torch.tensor([world_size, 1])
            ).tolist()
            row = {
                "epoch": epoch + 1,
                "distil": distil_mean,
                "gpt": gpt_mean,
                "total": cfg.lambda_distil * distil_mean + cfg.lambda_gpt * gpt_mean,
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
