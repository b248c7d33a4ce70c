"""Frozen CLIP backbones through open_clip, with the pseudo-word token ``$`` located.

open_clip builds ``ViT-B-32``/``ViT-L-14`` with GELU, which silently loads OpenAI's QuickGELU weights and gives
other features: a file recognisably OpenAI's (or named ``openai:FILE``) is built with QuickGELU. A TorchScript
archive is a program: only the one whose SHA-256 OpenAI published is ``torch.jit.load``-ed."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import warnings
import weakref
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.factory import load_state_dict

from searle_core.infra.device import resolve_device
from searle_core.infra.errors import InputError
from searle_core.infra.files import content_sha256, sha256_of
from searle_core.infra.providers import open_provider

PSEUDO_WORD = "$"
#: ``pretrained`` values that mean random weights drawn under the run's seed.
RANDOM_WEIGHTS = ("none", "random")
#: Entries of OpenAI's TorchScript state dict that are not open_clip parameters.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass
class InMemoryWeights:
    """Weights trained where the cache could not be written: ``label`` names them in messages and cache keys."""

    label: str
    state: dict[str, torch.Tensor]


@dataclass
class Backbone:
    """A frozen, eval-mode open_clip model with its preprocessing, tokenizer and the token id of ``$``.
    ``pretrained`` is the weights' tag or file (``None``: random); ``quick_gelu``: built with QuickGELU."""

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
        return self.model.token_embedding.weight.shape[1]

    @property
    def embed_dim(self) -> int:
        return self.model.text_projection.shape[1]

    @property
    def weights_id(self) -> str:
        if self.pretrained and os.path.isfile(self.pretrained):
            key = f"{Path(self.pretrained).name}-sha256-{content_sha256(self.pretrained)[:16]}"  # by content
        else:
            key = str(self.pretrained)
        return key + ("+quickgelu" if self.quick_gelu and "quickgelu" not in self.name else "")

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.device)


def find_pseudo_token_id(tokenizer: Callable, word: str = PSEUDO_WORD) -> int:
    """The id of the pseudo-word, read from the tokenizer (259 for CLIP's BPE) rather than assumed."""
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
    """Set a random image tower's BatchNorm statistics from noise images (at the initial ones all features match)."""
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
    # One thread: the statistics name feature caches (weights fingerprint), so they must not depend on threads.
    torch.set_num_threads(1)
    try:
        model.visual(noise.to(next(model.visual.parameters()).device))
    finally:
        torch.set_num_threads(threads)
        model.visual.train(was_training)
    return model


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """A zip with ``code/`` or ``constants.pkl`` (a ``torch.save`` zip has neither)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.split("/", 1)[-1].startswith("code/") or n.endswith("/constants.pkl") for n in archive.namelist())


def openai_sha256(name: str) -> str | None:
    """The SHA-256 OpenAI published for its release of ``name`` (from the URL open_clip records)."""
    url = (open_clip.get_pretrained_cfg(name, "openai") or {}).get("url", "")
    return url.split("/")[-2] if "openaipublic" in url else None


def read_weights_file(path: str, name: str) -> tuple[dict[str, torch.Tensor], bool]:
    """``(state_dict, laid out as OpenAI's)`` of a TorchScript release, a state dict or a safetensors file."""
    if is_torchscript_archive(path):
        expected, actual = openai_sha256(name), sha256_of(path)
        if actual != expected:
            convert = (
                f"python -c \"import torch; torch.save(torch.jit.load('{path}', map_location='cpu').state_dict(), "
                f"'{Path(path).stem}-state-dict.pt')\""
            )
            raise InputError(
                f"--pretrained {path} is a TorchScript archive but not OpenAI's release of {name} "
                f"(sha256 {actual[:12]}…, expected {(expected or 'none published')[:12]}…). TorchScript archives are "
                f"programs, so only that release is loaded as one. If you trust this file, convert it once into a "
                f"plain state dict and pass that instead:\n  {convert}"
            )
        with warnings.catch_warnings():  # torch 2.x deprecates TorchScript; OpenAI's files exist only in it
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
            module = torch.jit.load(path, map_location="cpu")
        state, openai = {k: v.detach().clone() for k, v in module.state_dict().items()}, True
    else:
        try:
            state = load_state_dict(path, device="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch/safetensors raise many types; name the file
            raise InputError(
                f"--pretrained {path}: not a readable weights file (a state dict saved with "
                f"torch.save, a .safetensors file, or OpenAI's TorchScript release): {err}"
            ) from err
        openai = any(k in state for k in OPENAI_EXTRA_KEYS)
    return {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}, openai


@contextlib.contextmanager
def quiet_log(marker: str):
    """Drop the root logger's records containing ``marker`` (open_clip's warnings of weights it did not load)."""
    quiet = lambda record: marker not in record.getMessage()
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(quiet)


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full CLIP state dict the way open_clip's ``load_checkpoint`` does, from memory."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import resize_pos_embed, resize_text_pos_embed

    state = convert_state_dict(model, dict(state))
    if "logit_scale" in state and model.logit_scale.ndim != state["logit_scale"].ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    if getattr(model, "logit_bias", None) is not None and "logit_bias" not in state:
        state["logit_bias"] = torch.zeros_like(state["logit_scale"])
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    model.load_state_dict(state, strict=True)


_OPENAI_WORD = re.compile(r"(?<![a-z0-9])(openai|quickgelu)(?![a-z0-9])")


def named_or_configured_openai(path: str | os.PathLike) -> bool:
    """Whether a weights file is OpenAI's by the ``open_clip_config.json`` beside it, an ``….openai`` folder or name."""
    path = Path(path).resolve()
    config = path.parent / "open_clip_config.json"
    if config.is_file():
        try:
            model_cfg = json.loads(config.read_text()).get("model_cfg") or {}
        except (OSError, ValueError, AttributeError) as err:
            raise InputError(f"{config}: not an open_clip config (a JSON object with model_cfg): {err}") from err
        if model_cfg.get("quick_gelu"):
            return True
    # Only a timm "<model>.openai" repository counts for folders: one that merely mentions openai says nothing.
    folders = [p.name.lower() for p in list(path.parents)[:3]]
    return bool(_OPENAI_WORD.search(path.name.lower())) or any(f.endswith(".openai") for f in folders)


def tag_uses_quick_gelu(name: str, tag: str) -> bool:
    """The activation a pretrained tag was trained with (its open_clip pretrained config)."""
    return bool((open_clip.get_pretrained_cfg(name, tag) or {}).get("quick_gelu", False))


def released_by_openai_with_quick_gelu(name: str) -> bool:
    """OpenAI released weights for ``name`` (with QuickGELU) while its open_clip config builds GELU."""
    return tag_uses_quick_gelu(name, "openai") and not open_clip.get_model_config(name).get("quick_gelu", False)


# name -> provider(cache_dir=..., **provider_kwargs): a weights file or InMemoryWeights
_DEFAULT_WEIGHTS_PROVIDERS: dict[str, Callable[..., os.PathLike | str | InMemoryWeights]] = {}


def register_default_weights(name: str, provider: Callable[..., os.PathLike | str | InMemoryWeights]) -> None:
    """Say where the ``"default"`` weights of the open_clip model ``name`` come from."""
    _DEFAULT_WEIGHTS_PROVIDERS[name] = provider


def load_backbone(
    name: str,
    pretrained: str | InMemoryWeights | None = "default",
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    **provider_kwargs,
) -> Backbone:
    """A frozen CLIP. ``pretrained``: an open_clip tag, a local file (``openai:FILE``: OpenAI's weights),
    ``"default"`` (a registered provider's weights, else ``openai``), ``None`` (random) or :class:`InMemoryWeights`."""
    dev = resolve_device(device)
    open_provider(name)
    if name not in open_clip.list_models():
        raise InputError(
            f"unknown backbone {name!r}: expected shapes-clip or an open_clip model name "
            f"such as ViT-B-32 or ViT-L-14 (see open_clip.list_models())."
        )
    if pretrained == "default":
        provider = _DEFAULT_WEIGHTS_PROVIDERS.get(name)
        pretrained = provider(cache_dir=cache_dir, **provider_kwargs) if provider else "openai"
    memory = pretrained if isinstance(pretrained, InMemoryWeights) else None
    pretrained = memory.label if memory else pretrained and str(pretrained)
    said_openai = not memory and bool(pretrained) and pretrained.startswith("openai:") and pretrained != "openai:"
    pretrained = pretrained[len("openai:") :] if said_openai else pretrained
    is_file = bool(pretrained) and not memory and os.path.isfile(pretrained)
    known_tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained and not memory and not is_file and (said_openai or pretrained not in known_tags):
        path_like = said_openai or os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors", ".pth"))
        raise FileNotFoundError(
            f"--pretrained {pretrained!r}: {'no such file' if path_like else 'not a known tag for this model'}. "
            f"Known tags for {name}: {known_tags or 'none'}; or pass a weights file."
        )
    quick_gelu = bool(open_clip.get_model_config(name).get("quick_gelu", False))
    if memory or is_file:
        # Read here: open_clip cannot read OpenAI's TorchScript with weights_only, and the file says if it is OpenAI's.
        state, openai_layout = (memory.state, False) if memory else read_weights_file(pretrained, name)
        quick_gelu = (
            quick_gelu or openai_layout or said_openai or (not memory and named_or_configured_openai(pretrained))
        )
        if not quick_gelu and released_by_openai_with_quick_gelu(name):
            print(
                f"note: --pretrained {pretrained} builds {name} with GELU (the file does not show it holds OpenAI's "
                f"weights); if it does (as open_clip/timm copies on model hubs do), get QuickGELU with "
                f"--pretrained openai:{pretrained} or the model name {name}-quickgelu",
                file=sys.stderr,
            )
        with quiet_log("initialized randomly"):  # open_clip's warning: the weights are loaded right after
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=None, device="cpu", force_quick_gelu=quick_gelu
            )
        load_state_into(model, state)
        model = model.to(dev)
    else:
        # A tag gets the activation it was trained with, so open_clip never builds a mismatched model.
        quick_gelu = quick_gelu or (bool(pretrained) and tag_uses_quick_gelu(name, pretrained))
        cache = None if cache_dir is None else str(cache_dir)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=dev, force_quick_gelu=quick_gelu, cache_dir=cache
            )
        except (OSError, RuntimeError, ValueError) as err:
            if not pretrained:
                raise
            raise RuntimeError(
                f"could not obtain the pretrained weights {pretrained!r} for open_clip model {name!r}: {err}\n"
                "open_clip downloads them on first use (network needed; cached after). Offline, download the "
                f"checkpoint yourself (see `open_clip.list_pretrained()`) and pass --pretrained /path/to/{name}.pt"
            ) from err
        if not pretrained:
            calibrate_batch_norm(model)
    model.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(name)
    return Backbone(name, pretrained, model, preprocess, tokenizer, find_pseudo_token_id(tokenizer), dev, quick_gelu)


def open_backbone(
    name: str, pretrained: str | None = "default", device: str = "auto", seed: int = 0, quick: bool = False
) -> Backbone:
    """:func:`load_backbone` as commands and notebooks open it: ``none``/``random`` weights drawn under ``seed``
    in a forked RNG (the global RNG untouched); ``quick`` goes to a default-weights provider (the CI world CLIP)."""
    if pretrained is None or str(pretrained).lower() in RANDOM_WEIGHTS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return load_backbone(name, None, device=device)
    return load_backbone(name, pretrained, device=device, quick=quick)


_FINGERPRINTS: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()


def weights_key(backbone: Backbone) -> str:
    """Names the backbone's exact weights: the tag or file, or a parameter hash for random weights."""
    if backbone.pretrained is not None:
        return backbone.weights_id
    key = _FINGERPRINTS.get(backbone.model)
    if key is None:
        key = _FINGERPRINTS[backbone.model] = f"random-{state_digest(backbone.model.state_dict())}"
    return key


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """16 hex digits of the SHA-256 of a state dict's names and bytes: weights known only in memory, by content."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode() + tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
