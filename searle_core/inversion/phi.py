"""φ: the textual inversion network distilled from OTI tokens (SEARLE, Sec. 4.2).

The module layout (``layers.0/3/6``) and the checkpoint layout (a dict whose key ``Phi`` holds the
state dict) are those of the authors' released ``SEARLE_ViT-B32.pt`` / ``SEARLE_ViT-L14.pt``, so
their files load unchanged.
"""

from __future__ import annotations

import os
import random
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from searle_core.clip.backbone import Backbone
from searle_core.clip.text_encoding import encode_with_pseudo_tokens
from searle_core.infra.downloads import cached_download
from searle_core.infra.errors import InputError, first_line, load_torch_file
from searle_core.infra.files import atomic_save
from searle_core.inversion.losses import cosine_loss, nt_xent_loss
from searle_core.inversion.regulariser import PhraseFeatureCache, PhraseSampler, TokenCache
from searle_core.inversion.released_phi import RELEASED, released_phi_file


class Phi(nn.Module):
    """MLP image features -> pseudo-word token: Linear-GELU-Dropout ×2, then Linear.

    Its input is the *raw* ``encode_image`` output (not L2-normalised), in training and at
    inference, as in the authors' ``train_phi.py`` and ``extract_pseudo_tokens_with_phi``.

    Args:
        input_dim: CLIP feature width (512 for ViT-B/32, 768 for ViT-L/14).
        hidden_dim: hidden width (4 × input_dim in the paper).
        output_dim: token-embedding width of the text tower.
        dropout: dropout probability (0.5 in the paper).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, dropout: float = 0.5):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, output_dim),
        )

    @classmethod
    def for_backbone(cls, backbone: Backbone, dropout: float = 0.5) -> Phi:
        """The paper's φ for a backbone: feature width → 4× → token width."""
        return cls(backbone.embed_dim, 4 * backbone.embed_dim, backbone.token_dim, dropout)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.layers(image_features)

    @property
    def input_dim(self) -> int:
        return self.layers[0].in_features

    @property
    def output_dim(self) -> int:
        return self.layers[6].out_features


def save_phi(phi: Phi, path: str | os.PathLike, **extra) -> None:
    """Save in the authors' layout (``{"epoch": n, "Phi": state_dict, ...}``: pass ``epoch``), atomically."""
    atomic_save({"Phi": phi.state_dict(), **extra}, path)


PHI_LAST = "phi_last.pt"


def epoch_file(folder: str | os.PathLike, epoch: int) -> Path:
    """``phi_{epoch}.pt`` of a φ run folder (the authors' name)."""
    return Path(folder) / f"phi_{epoch}.pt"


def resolve_phi_path(path: str, backbone: Backbone | None = None) -> str:
    """A φ run folder and epoch to its file: ``RUN:10`` -> ``RUN/phi_10.pt``, ``RUN:last`` ->
    ``RUN/phi_last.pt``, ``RUN`` -> ``RUN/phi.pt`` (the finished run's); ``searle`` / ``searle-xl`` to
    the authors' released file for ``backbone`` (:mod:`~searle_core.inversion.released_phi`).
    Files and URLs pass unchanged.

    Raises:
        FileNotFoundError: the run has no file for that epoch (the message lists those it has).
    """
    if path in RELEASED and not os.path.exists(path):
        return str(released_phi_file(path, backbone.name if backbone is not None else None))
    if path.startswith(("http://", "https://")) or os.path.isfile(path):
        return path
    folder, sep, epoch = path.rpartition(":")
    if not (sep and os.path.isdir(folder)):
        folder, epoch = path, ""
        if not os.path.isdir(folder):
            return path
    name = "phi.pt" if epoch == "" else PHI_LAST if epoch == "last" else f"phi_{epoch}.pt"
    if epoch not in ("", "last") and not epoch.isdigit():
        raise InputError(f"--phi-checkpoint {path}: the epoch after ':' must be a number or 'last', got {epoch!r}")
    if not (Path(folder) / name).is_file():
        saved = sorted(p.name for p in Path(folder).glob("phi*.pt"))
        raise FileNotFoundError(
            f"--phi-checkpoint {path}: the φ run {folder} has no {name} (it has: {', '.join(saved) or 'none'}; "
            "phi_{n}.pt is written every 5 epochs, phi_last.pt every epoch, phi.pt at the end)"
        )
    return str(Path(folder) / name)


def load_phi(path: str | os.PathLike, backbone: Backbone | None = None, map_location="cpu") -> Phi:
    """Load φ from a file in the authors' layout, a plain state dict, an ``http(s)`` URL, a φ run
    folder (``RUN``, ``RUN:EPOCH``, ``RUN:last``) or the authors' release by name (``searle``,
    ``searle-xl``): :func:`resolve_phi_path`.

    Args:
        path: local file or URL of e.g. ``SEARLE_ViT-B32.pt``, or a run folder and epoch.
        backbone: if given, φ's widths are checked against it.

    The returned φ carries ``epoch`` (the checkpoint's ``"epoch"``, ``None`` if absent) and
    ``source`` (the path), which results files record.
    """
    given, path = str(path), resolve_phi_path(str(path), backbone)
    # A URL is cached under a key of the whole URL (never answered by another host's file of the same name).
    local = cached_download(path, "phi") if path.startswith(("http://", "https://")) else path
    if path.startswith("file:"):
        raise InputError(
            f"φ checkpoint {path!r}: file: URLs are not read; give the file's path "
            f"({urllib.parse.unquote(urllib.parse.urlparse(path).path)})"
        )
    if os.path.isdir(local):
        inside = sorted(p.name for p in Path(local).glob("*.pt"))[:3]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise InputError(f"φ checkpoint {path!r} is a folder{hint}; give the checkpoint file in it, e.g. {path}/phi.pt")
    if not os.path.isfile(local):
        raise FileNotFoundError(
            f"φ checkpoint {path!r} not found. The authors' checkpoints are "
            "SEARLE_ViT-B32.pt and SEARLE_ViT-L14.pt (SEARLE repository, release "
            "'weights'); or train one with `searle train-phi`."
        )
    state = load_torch_file(local, "φ checkpoint", map_location)
    epoch = state.get("epoch") if isinstance(state, dict) and "Phi" in state else None
    state = state.get("Phi", state) if isinstance(state, dict) else state
    try:
        w0, w6 = state["layers.0.weight"], state["layers.6.weight"]
        phi = Phi(w0.shape[1], w0.shape[0], w6.shape[0])
        phi.load_state_dict(state)
    except (KeyError, TypeError, AttributeError, IndexError, RuntimeError) as err:
        raise InputError(
            f"{path}: not a φ checkpoint: expected a dict with key 'Phi' holding "
            f"layers.0/3/6.weight|bias ({first_line(err)})"
        ) from None
    bad = [k for k, v in phi.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InputError(f"{path}: φ's weights {bad[0]} hold NaN or infinite values; the checkpoint is damaged")
    # Recorded in results files: which φ, trained for how many epochs (the authors' key "epoch").
    phi.epoch = int(epoch) if isinstance(epoch, (int, float)) or torch.is_tensor(epoch) else None
    phi.source = RELEASED[given][1] if given in RELEASED and path != given else path  # the release's URL
    if backbone is not None and (phi.input_dim, phi.output_dim) != (backbone.embed_dim, backbone.token_dim):
        raise InputError(
            f"{path}: φ maps {phi.input_dim}-d features to {phi.output_dim}-d tokens, but backbone "
            f"{backbone.name} has {backbone.embed_dim}-d features and {backbone.token_dim}-d tokens "
            "(SEARLE_ViT-B32.pt goes with ViT-B-32, SEARLE_ViT-L14.pt with ViT-L-14)."
        )
    return phi.eval()


@dataclass(frozen=True)
class PhiLossConfig:
    """φ's loss: λ_distil · NT-Xent(φ(x), OTI tokens) + λ_gpt · phrase regulariser.

    Args:
        lambda_distil: weight of the distillation loss (0 disables it).
        lambda_gpt: weight of the phrase regulariser with the predicted token (0 disables it).
        temperature: NT-Xent temperature.
        distil_to_image: ablation "no distillation": replace the distillation by a cosine loss
            between "a photo of $" with the predicted token and the image features.
        top_concepts: how many of each image's concepts the regulariser draws from.
    """

    lambda_distil: float = 1.0
    lambda_gpt: float = 0.75
    temperature: float = 0.25
    distil_to_image: bool = False
    top_concepts: int = 150


def phi_loss(
    phi: Phi,
    backbone: Backbone,
    image_features: torch.Tensor,
    oti_tokens: torch.Tensor | None,
    batch_indices: list[int],
    sampler: PhraseSampler | None,
    cache: PhraseFeatureCache | None,
    tokenize: TokenCache,
    config: PhiLossConfig = PhiLossConfig(),
) -> dict[str, torch.Tensor]:
    """One batch of φ's training loss (the training-step kernel).

    Args:
        phi: the network being trained.
        backbone: frozen CLIP (for the regulariser and the image-cosine ablation).
        image_features: (N, embed_dim) raw CLIP features of the batch (``encode_image`` output, not
            normalised: φ's input in the authors' code).
        oti_tokens: (N, token_dim) OTI tokens of the same images (distillation targets).
        batch_indices: dataset indices of the batch's images (the sampler's rows).
        sampler: draws one phrase per image of the dataset (``None``: no regulariser).
        cache: features of plain phrases.
        tokenize: memoised tokenizer.
        config: loss weights.

    Returns:
        dict with ``distil``, ``gpt`` and ``total`` (the latter carries the gradient).
    """
    predicted = phi(image_features.float())
    zero = torch.zeros((), device=predicted.device)
    if config.distil_to_image:
        prompts = tokenize(["a photo of $"] * len(predicted))
        feats = encode_with_pseudo_tokens(backbone.model, prompts, predicted, backbone.dollar_token_id)
        distil = cosine_loss(feats, image_features)
    elif config.lambda_distil > 0:
        distil = nt_xent_loss(predicted, oti_tokens.to(predicted), config.temperature)
    else:
        distil = zero
    gpt = zero
    if config.lambda_gpt > 0 and sampler is not None:
        draw = sampler.draw(batch_indices)
        if draw.rows:
            feats = encode_with_pseudo_tokens(
                backbone.model, tokenize(draw.pseudo_phrases), predicted[draw.rows], backbone.dollar_token_id
            )
            gpt = cosine_loss(feats, cache.features(draw.phrases))
    total = config.lambda_distil * distil + config.lambda_gpt * gpt
    return {"distil": distil, "gpt": gpt, "total": total}


def make_sampler(
    concepts: list[list[str]], bank, top_concepts: int, seed: int, replace_all: bool = False
) -> PhraseSampler:
    """A phrase sampler over each image's top concepts (``replace_all``: every occurrence of the
    concept becomes ``$``, as φ's regulariser in the authors' code)."""
    return PhraseSampler(
        [c[:top_concepts] for c in concepts], bank, random.Random(seed), draw="concept", replace_all=replace_all
    )
