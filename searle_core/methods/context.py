"""What a method may use besides the benchmark and the backbone (:class:`MethodContext`), and what
getting its network cost (:class:`NetworkSetup`, returned in the result, not written into the context)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from searle_core.baselines.lincir import LincirConfig
from searle_core.baselines.palavra import PalavraConfig
from searle_core.baselines.pic2word import Pic2WordConfig
from searle_core.datasets.base import CaptionCorpus, ImageSource, UnlabeledImages
from searle_core.inversion.concepts import Vocabulary
from searle_core.method.oti import OTIConfig
from searle_core.method.phi import Phi, PhiLossConfig
from searle_core.method.phi_training import PhiTrainConfig


@dataclass(frozen=True)
class PhiRecipe:
    """How φ is trained from unlabeled images: its epochs, the first ``images`` of them (0: all), its
    batch and the concepts its regulariser draws from (the paper's unless a dataset says otherwise)."""

    epochs: int = 100
    images: int = 0
    batch_size: int = 256
    top_concepts: int = 150

    def train_config(self, loss_overrides: dict | None = None) -> PhiTrainConfig:
        """φ's training config with this recipe's sizes, plus an ablation's loss changes."""
        loss = dataclasses.replace(PhiLossConfig(top_concepts=self.top_concepts), **(loss_overrides or {}))
        return PhiTrainConfig(epochs=self.epochs, batch_size=self.batch_size, loss=loss)


@dataclass(frozen=True)
class NetworkSetup:
    """What getting a method's network cost: the wall time here (training or loading, kept out of query
    time), its training time (now or when its cached file was made) and whether it was trained now."""

    method: str
    setup_seconds: float
    train_seconds: float
    trained_now: bool


@dataclass
class Computed:
    """What methods computed (or were given) during a run: tokens by method and image, captions by image."""

    tokens: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)


@dataclass
class MethodContext:
    """What a method may use besides the benchmark and the backbone. Networks and settings left empty
    are the paper's, or the dataset's own recipes where it brings its training data."""

    vocabulary: Vocabulary | None = None  # concepts and phrases: searle-oti, PALAVRA and φ's training
    oti_config: OTIConfig = OTIConfig()
    oti_batch_size: int = 32
    phi: Phi | None = None  # a trained φ (searle)
    phi_epochs: int | None = None  # φ's epochs and unlabeled images (0: all) when it is trained here
    phi_images: int | None = None
    networks: dict[str, torch.nn.Module] = field(default_factory=dict)  # the baselines' trained networks
    checkpoints: dict[str, str | Path] = field(default_factory=dict)  # their files, loaded instead of training
    pic2word_config: Pic2WordConfig | None = None
    palavra_config: PalavraConfig | None = None
    lincir_config: LincirConfig | None = None
    captions_corpus: CaptionCorpus | None = None  # LinCIR's text corpus (--captions) where a dataset has none
    captioner: str | Callable | None = None  # a Hugging Face model name or list[PIL.Image] -> list[str]
    # The images networks train on where a dataset brings none: an image source with names, or (source, names).
    unlabeled: ImageSource | tuple[ImageSource, list[str]] | UnlabeledImages | None = None
    seed: int = 42
    progress: bool = True
    token_seconds: dict[str, float] = field(default_factory=dict)  # what given tokens cost, by method
    given_setups: dict[str, NetworkSetup] = field(default_factory=dict)  # what given networks cost
    computed: Computed = field(default_factory=Computed)

    def give_tokens(self, method: str, tokens: dict[str, torch.Tensor], seconds: float | None = None) -> None:
        """Use ``tokens`` (reference image name -> token) for ``method`` (``searle-oti``, ``palavra`` or
        ``pic2word``) instead of computing them; ``seconds``: what they cost, counted as its query time."""
        self.computed.tokens[method] = dict(tokens)
        if seconds is not None:
            self.token_seconds[method] = float(seconds)

    def give_network(self, method: str, network: torch.nn.Module, setup: NetworkSetup | None = None) -> None:
        """Use ``network`` for ``method`` (``searle``: φ), and ``setup``, what making it cost, in tables."""
        if method == "searle":
            self.phi = network
        else:
            self.networks[method] = network
        if setup is not None:
            self.given_setups[method] = setup
