"""The authors' SEARLE code (miccunifi/SEARLE ``src/``), restated without any of the project's code.

The equivalence tests (``test_authors_equivalence*.py``) compare the project against these pieces:
``data_utils.TargetPad`` / ``targetpad_transform``, ``phi.Phi`` and ``encode_with_pseudo_tokens.py``.
They live in one place so that every test compares against the same restatement.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torchvision.transforms.functional as FT
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
DOLLAR = 259  # CLIP's token id of "$", the pseudo-word's placeholder


class TheirPhi(nn.Module):
    """``src/phi.py``."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(p=dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(p=dropout),
            nn.Linear(hidden_dim, output_dim),
        )

    def forward(self, x):
        return self.layers(x)


def their_pad(image, target_ratio: float = 1.25):
    """``data_utils.TargetPad``: pad the short side with black up to ``long / target_ratio``."""
    w, h = image.size
    if max(w, h) / min(w, h) < target_ratio:
        return image
    scaled = max(w, h) / target_ratio
    hp, vp = max(int((scaled - w) / 2), 0), max(int((scaled - h) / 2), 0)
    return FT.pad(image, [hp, vp, hp, vp], 0, "constant")


def their_preprocess(dim: int, convert_first: bool = False):
    """``data_utils.targetpad_transform(1.25, dim)`` (``convert_first``: the control that converts to
    RGB before padding)."""
    head = [lambda im: im.convert("RGB")] if convert_first else []
    return Compose(
        head
        + [
            their_pad,
            Resize(dim, interpolation=InterpolationMode.BICUBIC),
            CenterCrop(dim),
            lambda im: im.convert("RGB"),
            ToTensor(),
            Normalize(MEAN, STD),
        ]
    )


def their_encode(model, text: torch.Tensor, pseudo_tokens: torch.Tensor) -> torch.Tensor:
    """``encode_with_pseudo_tokens.py`` (one token) on an open_clip model (batch-first transformer):
    the *first* ``$`` of each prompt replaced, EOT pooling, projection."""
    x = model.token_embedding(text)
    _, counts = torch.unique((text == DOLLAR).nonzero(as_tuple=True)[0], return_counts=True)
    cum_sum = torch.cat((torch.zeros(1).int(), torch.cumsum(counts, dim=0)[:-1]))
    first = (text == DOLLAR).nonzero()[cum_sum][:, 1]
    x[torch.arange(x.shape[0]), first] = pseudo_tokens.to(x.dtype)
    x = x + model.positional_embedding
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ model.text_projection


def their_contrastive_loss(v1: torch.Tensor, v2: torch.Tensor, temperature: float) -> torch.Tensor:
    """``utils.contrastive_loss`` (PALAVRA's NT-Xent)."""
    v1, v2 = nn.functional.normalize(v1, dim=1), nn.functional.normalize(v2, dim=1)
    numerator = torch.exp(torch.diag(torch.inner(v1, v2)) / temperature)
    numerator = torch.cat((numerator, numerator), 0)
    joint_vector = torch.cat((v1, v2), 0)
    pairs_product = torch.exp(torch.mm(joint_vector, joint_vector.t()) / temperature)
    denominator = torch.sum(pairs_product - pairs_product * torch.eye(joint_vector.shape[0]), 0)
    return -torch.mean(torch.log(numerator / denominator))


def their_phi_step(phi, optimizer, features, oti_tokens, lambda_distil, lambda_gpt, temperature) -> list:
    """One step of ``train_phi.py``'s ``train_one_epoch`` without the phrase regulariser (its ``gpt_loss`` a zero
    MSE): φ on the raw image features, ``λ_distil · contrastive + λ_gpt · gpt``, backward, AdamW; the gradients."""
    optimizer.zero_grad()
    estimated_tokens = phi(features)
    distillation_loss = their_contrastive_loss(oti_tokens, estimated_tokens, temperature)
    gpt_loss = torch.nn.MSELoss()(torch.zeros(1), torch.zeros(1))
    total_loss = lambda_distil * distillation_loss + lambda_gpt * gpt_loss
    total_loss.backward()
    grads = [p.grad.clone() for p in phi.parameters()]
    optimizer.step()
    return grads
