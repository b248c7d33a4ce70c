"""What a method may use besides the benchmark and the backbone, and what getting its network cost.

:class:`MethodContext` holds a method's inputs, each as a typed field: the vocabulary and OTI
settings, trained networks or their checkpoints, the baselines' settings, the captioner, the
unlabeled images networks train on, and pseudo-word tokens computed elsewhere (given with
:meth:`MethodContext.give_tokens`). Tokens and captions a method computes are kept in it for the next
method that needs them. What preparing a method cost comes back as a :class:`NetworkSetup` in the
result (:class:`~searle_core.methods.pipeline.MethodResult`), never written into the context.
"""

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

#: What ``MethodContext.unlabeled`` takes: an image source with ``names``, a (source, names) pair, or
#: :class:`UnlabeledImages`.
Unlabeled = ImageSource | tuple[ImageSource, list[str]] | UnlabeledImages


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
    """What getting a method's network cost (:func:`searle_core.jobs.prepare.prepare`).

    Args:
        method: the method.
        setup_seconds: wall time spent getting it here (training or loading), kept out of query time.
        train_seconds: the network's training time (now or when its cached file was made).
        trained_now: whether it was trained in this call.
    """

    method: str
    setup_seconds: float
    train_seconds: float
    trained_now: bool


@dataclass
class MethodContext:
    """What a method may use besides the benchmark and the backbone.

    Args:
        vocabulary: concepts and phrases (needed by ``searle-oti``, PALAVRA and the φ training path).
        oti_config: OTI hyper-parameters.
        oti_batch_size: images per OTI batch.
        phi: a trained φ (``searle``).
        phi_epochs: φ's epochs when it is trained here (``searle`` on ``shapes``; default: the world's
            recipe, :class:`PhiRecipe`).
        phi_images: the unlabeled images it trains on (0: all; default: the world's recipe).
        networks: the baselines' trained networks by method (``"pic2word"``: the mapper,
            ``"palavra"``: the pre-trained inverter, ``"lincir"``: its φ), filled by
            :func:`searle_core.jobs.prepare.prepare`.
        checkpoints: files of the baselines' networks by method, loaded instead of training them.
        pic2word_config: Pic2Word's mapper and its training (``None``: the official recipe).
        palavra_config: PALAVRA's inverter, its pre-training and its optimisation (``None``: defaults).
        lincir_config: LinCIR's φ and its training (``None``: the official recipe; on ``shapes`` the
            world's, :meth:`~searle_core.baselines.lincir.LincirConfig.for_world`).
        captions_corpus: the text corpus LinCIR trains on, on datasets that bring none (``--captions``).
        captioner: the captioning baseline's captioner on real images: a Hugging Face model name or a
            callable ``list[PIL.Image] -> list[str]`` (``None``: BLIP base).
        unlabeled: the unlabeled images the networks train on, on datasets that bring none.
        seed: run seed.
        progress: progress bars.
        tokens: pseudo-word tokens by method and reference image name: given
            (:meth:`give_tokens`) or computed so far, reused by later methods.
        token_seconds: the compute time of tokens given with :meth:`give_tokens`, by method.
        captions: captions of reference images made so far (the captioning baseline), reused.
        given_setups: what the networks given to the context cost when they were made, by method
            (:meth:`give_network`), for the tables' training-time column.
    """

    vocabulary: Vocabulary | None = None
    oti_config: OTIConfig = OTIConfig()
    oti_batch_size: int = 32
    phi: Phi | None = None
    phi_epochs: int | None = None
    phi_images: int | None = None
    networks: dict[str, torch.nn.Module] = field(default_factory=dict)
    checkpoints: dict[str, str | Path] = field(default_factory=dict)
    pic2word_config: Pic2WordConfig | None = None
    palavra_config: PalavraConfig | None = None
    lincir_config: LincirConfig | None = None
    captions_corpus: CaptionCorpus | None = None
    captioner: str | Callable | None = None
    unlabeled: Unlabeled | None = None
    seed: int = 42
    progress: bool = True
    tokens: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    token_seconds: dict[str, float] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    given_setups: dict[str, NetworkSetup] = field(default_factory=dict)

    def give_tokens(self, method: str, tokens: dict[str, torch.Tensor], seconds: float | None = None) -> None:
        """Use ``tokens`` (reference image name -> token) for ``method`` instead of computing them.

        Args:
            method: ``searle-oti``, ``palavra`` or ``pic2word``.
            tokens: one token per reference image.
            seconds: what computing them cost, counted as the method's query time in tables.
        """
        self.tokens[method] = dict(tokens)
        if seconds is not None:
            self.token_seconds[method] = float(seconds)

    def give_network(self, method: str, network: torch.nn.Module, setup: NetworkSetup | None = None) -> None:
        """Use ``network`` for ``method`` (``searle``: φ; ``pic2word``, ``palavra``: their networks).

        Args:
            method: the method it serves.
            network: the trained network.
            setup: what making it cost (shown in tables; ``None``: unknown, e.g. a checkpoint).
        """
        if method == "searle":
            self.phi = network
        else:
            self.networks[method] = network
        if setup is not None:
            self.given_setups[method] = setup
