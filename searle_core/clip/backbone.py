"""Frozen CLIP backbones through open_clip, with the pseudo-word token ``$`` located.

``load_backbone("ViT-B-32", "openai")`` and ``load_backbone("shapes-clip")`` return the same
:class:`Backbone`: model (frozen, eval), preprocessing, tokenizer and the token id of ``$``.
This module only loads weights (a tag or a file); it never trains. ``shapes-clip``, the offline
world's own small CLIP, is registered from above by :mod:`searle_core.world`: its model config with
open_clip's factory, and its default weights with :func:`register_default_weights`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from searle_core.clip.weights import (
    InMemoryWeights,
    gelu_file_notice,
    load_state_into,
    named_or_configured_openai,
    read_weights_file,
    released_by_openai_with_quick_gelu,
    split_openai_prefix,
    tag_uses_quick_gelu,
)
from searle_core.infra.device import resolve_device
from searle_core.infra.errors import InputError
from searle_core.infra.providers import open_provider

PSEUDO_WORD = "$"


@dataclass
class Backbone:
    """A frozen CLIP with everything textual inversion needs.

    Args:
        name: open_clip model name (e.g. ``ViT-B-32``, ``shapes-clip``).
        pretrained: the weights' tag or file (``None`` for random initialisation).
        model: the open_clip ``CLIP`` module, frozen and in eval mode.
        preprocess: PIL image -> tensor transform of the model.
        tokenizer: open_clip tokenizer (list of str -> LongTensor of shape (N, context_length)).
        dollar_token_id: token id of ``$``, read from the tokenizer (259 for CLIP's BPE).
        device: where the model lives.
        quick_gelu: whether the model was built with QuickGELU (OpenAI's weights need it).
    """

    name: str
    pretrained: str | None
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    dollar_token_id: int
    device: torch.device
    quick_gelu: bool = False

    @property
    def token_dim(self) -> int:
        """Width of the token-embedding space where pseudo-words live."""
        return self.model.token_embedding.weight.shape[1]

    @property
    def embed_dim(self) -> int:
        """Width of the joint image-text feature space."""
        return self.model.text_projection.shape[1]

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return size[0] if isinstance(size, (tuple, list)) else int(size)

    @property
    def weights_id(self) -> str:
        """A string naming the exact weights and activation, for cache keys."""
        if self.pretrained and os.path.isfile(self.pretrained):
            stat = os.stat(self.pretrained)
            key = f"{Path(self.pretrained).name}-{stat.st_size}-{int(stat.st_mtime)}"
        else:
            key = str(self.pretrained)
        # The same weights under the other activation give other features (caches made before
        # OpenAI weights were built with QuickGELU must not be reused).
        return key + ("+quickgelu" if self.quick_gelu and "quickgelu" not in self.name else "")

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.device)


def find_pseudo_token_id(tokenizer: Callable, word: str = PSEUDO_WORD) -> int:
    """Read the id of the pseudo-word from the tokenizer instead of assuming 259.

    Raises:
        ValueError: if the tokenizer splits the word into several tokens.
    """
    ids = tokenizer([word])[0].tolist()
    sot, eot = ids[0], max(ids)
    inner = [t for t in ids[1:] if t not in (0, sot, eot)]
    if len(inner) != 1:
        raise InputError(
            f"the tokenizer encodes the pseudo-word {word!r} as {len(inner)} tokens ({inner}); "
            "textual inversion needs exactly one token."
        )
    return inner[0]


@torch.no_grad()
def calibrate_batch_norm(model: torch.nn.Module, n_images: int = 64, seed: int = 0) -> torch.nn.Module:
    """Set the BatchNorm running statistics of a randomly initialised image tower from noise images.

    At their initial statistics (mean 0, variance 1) the BatchNorm layers of a random ResNet tower
    normalise nothing, and every image gets nearly the same feature (cosine 0.99999 between two
    images), which makes random weights useless as a stand-in. Statistics measured on noise
    images give distinct features, as a random ViT has. A private generator leaves the global
    random state untouched. Models without BatchNorm are returned unchanged.
    """
    norms = [m for m in model.visual.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    size = model.visual.image_size
    size = size if isinstance(size, (tuple, list)) else (size, size)
    noise = torch.randn(n_images, 3, *size, generator=torch.Generator().manual_seed(seed))
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass gives the batch's statistics
    was_training, threads = model.visual.training, torch.get_num_threads()
    model.visual.train()
    # One thread: the statistics (and so the weights' fingerprint, which names feature caches) must
    # not depend on how many threads the caller happens to run with.
    torch.set_num_threads(1)
    try:
        model.visual(noise.to(next(model.visual.parameters()).device))
    finally:
        torch.set_num_threads(threads)
        model.visual.train(was_training)
    return model


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _missing_weights_error(name: str, pretrained: str, err: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not obtain the pretrained weights {pretrained!r} for open_clip model {name!r}: {err}\n"
        f"These weights are downloaded by open_clip on first use, which needs network access. Either run "
        f"once where the network is reachable (they are then cached), or download the checkpoint file "
        f"yourself (for 'openai' weights: the OpenAI CLIP release of {name}; see "
        f"`open_clip.list_pretrained()`), and pass its path instead of the tag: "
        f"--pretrained /path/to/{name}.pt (OpenAI's TorchScript release is read as it is)."
    )


DEFAULT_WEIGHTS = "default"
#: Models whose ``"default"`` weights are not a tag: name -> a function returning the weights file
#: (keyword arguments: ``cache_dir`` and those given to :func:`load_backbone`).
_DEFAULT_WEIGHTS_PROVIDERS: dict[str, Callable[..., os.PathLike | str | InMemoryWeights]] = {}


def register_default_weights(name: str, provider: Callable[..., os.PathLike | str | InMemoryWeights]) -> None:
    """Say where the ``"default"`` weights of the open_clip model ``name`` come from (a file path, or
    :class:`InMemoryWeights` when they could not be cached)."""
    _DEFAULT_WEIGHTS_PROVIDERS[name] = provider


def load_backbone(
    name: str,
    pretrained: str | InMemoryWeights | None = DEFAULT_WEIGHTS,
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    **provider_kwargs,
) -> Backbone:
    """Load a frozen CLIP and its tokenizer, preprocessing and ``$`` id.

    Args:
        name: any open_clip model name, or ``shapes-clip`` (the synthetic world's CLIP).
        pretrained: open_clip tag (``openai``, ``laion2b_s34b_b79k``, ...) or a local weights file
            (:mod:`searle_core.clip.weights`: OpenAI's TorchScript release, a state dict, safetensors;
            ``openai:FILE`` says the file holds OpenAI weights); ``"default"``: the project-trained
            weights of a model registered with :func:`register_default_weights` (``shapes-clip``:
            the world CLIP, trained on first use and cached under ``data/``) and ``openai`` for other
            models; ``None``: random weights; :class:`InMemoryWeights`: a state dict already in memory.
            A tag is built with the activation its pretrained config names, OpenAI weights (tag or
            file) with QuickGELU.
        device: ``auto``, ``cpu`` or ``cuda[:i]``.
        cache_dir: open_clip download cache, or the registered provider's cache (``shapes-clip``).
        **provider_kwargs: passed to the registered default-weights provider (``shapes-clip``: e.g.
            ``quick=True``).

    Returns:
        A :class:`Backbone`.
    """
    dev = resolve_device(device)
    open_provider(name)
    if name not in open_clip.list_models():
        raise InputError(
            f"unknown backbone {name!r}: expected shapes-clip or an open_clip model name "
            f"such as ViT-B-32 or ViT-L-14 (see open_clip.list_models())."
        )
    if pretrained == DEFAULT_WEIGHTS and name in _DEFAULT_WEIGHTS_PROVIDERS:
        pretrained = _DEFAULT_WEIGHTS_PROVIDERS[name](cache_dir=cache_dir, **provider_kwargs)
        pretrained = pretrained if isinstance(pretrained, InMemoryWeights) else str(pretrained)
    elif pretrained == DEFAULT_WEIGHTS:
        pretrained = "openai"
    # Weights trained where the cache could not be written: loaded from memory, named by their label.
    memory = pretrained if isinstance(pretrained, InMemoryWeights) else None
    pretrained = memory.label if memory else pretrained
    said_openai = False
    if pretrained and not memory:
        pretrained, said_openai = split_openai_prefix(pretrained)
    if (
        pretrained
        and not memory
        and not os.path.isfile(pretrained)
        and (said_openai or pretrained not in open_clip.list_pretrained_tags_by_model(name))
    ):
        looks_like_path = (
            said_openai or os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors", ".pth"))
        )
        what = "no such file" if looks_like_path else "not a known tag for this model"
        raise FileNotFoundError(
            f"--pretrained {pretrained!r}: {what}. Known tags for {name}: "
            f"{open_clip.list_pretrained_tags_by_model(name) or 'none'}; or pass a weights file."
        )
    quick_gelu = bool(open_clip.get_model_config(name).get("quick_gelu", False))
    if memory or (pretrained and os.path.isfile(pretrained)):
        # Read here, not by open_clip: it cannot read OpenAI's TorchScript release with
        # weights_only=True, and only the file says whether it needs QuickGELU.
        state, openai_layout = (memory.state, False) if memory else read_weights_file(pretrained, name)
        quick_gelu = (
            quick_gelu or openai_layout or said_openai or (not memory and named_or_configured_openai(pretrained))
        )
        if not quick_gelu and released_by_openai_with_quick_gelu(name):
            # Silent otherwise: GELU loads OpenAI's weights without complaint and gives other features.
            print(gelu_file_notice(name, pretrained), file=sys.stderr)
        # open_clip would log "Model initialized randomly": the weights are loaded right after.
        quiet = logging.Filter()
        quiet.filter = lambda record: "initialized randomly" not in record.getMessage()
        logging.getLogger().addFilter(quiet)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=None, device="cpu", force_quick_gelu=quick_gelu
            )
        finally:
            logging.getLogger().removeFilter(quiet)
        load_state_into(model, state)
        model = model.to(dev)
    else:
        # A tag gets the activation it was trained with (QuickGELU for openai), so open_clip never
        # builds a mismatched model and its "QuickGELU mismatch" warning cannot fire.
        quick_gelu = quick_gelu or (bool(pretrained) and tag_uses_quick_gelu(name, pretrained))
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name,
                pretrained=pretrained,
                device=dev,
                force_quick_gelu=quick_gelu,
                cache_dir=None if cache_dir is None else str(cache_dir),
            )
        except (OSError, RuntimeError, ValueError) as err:
            if pretrained:
                raise _missing_weights_error(name, pretrained, err) from err
            raise
        if not pretrained:
            calibrate_batch_norm(model)
    tokenizer = open_clip.get_tokenizer(name)
    return Backbone(
        name=name,
        pretrained=pretrained,
        model=freeze(model),
        preprocess=preprocess,
        tokenizer=tokenizer,
        dollar_token_id=find_pseudo_token_id(tokenizer),
        device=dev,
        quick_gelu=quick_gelu,
    )


_FINGERPRINTS: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()


def weights_key(backbone: Backbone) -> str:
    """Names the backbone's exact weights: the tag or file, or a parameter hash for random weights."""
    if backbone.pretrained is not None:
        return backbone.weights_id
    key = _FINGERPRINTS.get(backbone.model)
    if key is None:
        digest = hashlib.sha256()
        for name, tensor in backbone.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        key = _FINGERPRINTS[backbone.model] = f"random-{digest.hexdigest()[:16]}"
    return key
