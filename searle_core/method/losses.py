"""Losses of textual inversion, written once and tested against plain formulas."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(x_i, y_i) (``nn.CosineEmbeddingLoss`` with all targets 1)."""
    return (1 - F.cosine_similarity(x.float(), y.float(), dim=-1)).mean()


def nt_xent_loss(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.25) -> torch.Tensor:
    """Symmetric contrastive (NT-Xent) loss between two aligned batches (φ's distillation): each of the 2N
    vectors has one positive (its partner) and 2N - 2 negatives; log-sum-exp, so low temperatures do not overflow."""
    z = F.normalize(torch.cat([a, b]).float(), dim=-1)
    n = a.shape[0]
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, partner)
