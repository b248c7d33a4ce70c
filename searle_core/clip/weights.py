"""Local CLIP weight files, and whether they need QuickGELU.

OpenAI trained CLIP with QuickGELU; open_clip builds ``ViT-B-32``/``ViT-L-14`` with GELU, which loads
OpenAI's weights silently and gives other features, so a file that is recognisably OpenAI's (or named
``openai:FILE``) is built with QuickGELU. A TorchScript archive is a program: ``torch.jit.load`` runs
only on the one whose SHA-256 OpenAI published for the model; state dicts load with ``weights_only``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import torch
from open_clip.factory import load_state_dict

from searle_core.infra.errors import InputError
from searle_core.infra.files import sha256_of

#: Entries of OpenAI's TorchScript state dict that are not open_clip parameters.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass
class InMemoryWeights:
    """Weights trained where the cache could not be written: ``label`` names them in messages and cache
    keys, ``state`` is the open_clip state dict, ``log`` what the trainer reported."""

    label: str
    state: dict[str, torch.Tensor]
    log: dict = field(default_factory=dict)


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
    """``(state_dict, openai)`` of a TorchScript release, a ``torch.save`` state dict or a safetensors
    file: OpenAI's extra entries removed, and whether the file is laid out as OpenAI's release."""
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
# Only a timm "<model>.openai" repository counts for folders: one that merely mentions openai says nothing.
_OPENAI_REPO = re.compile(r"\.openai$")


def named_or_configured_openai(path: str | os.PathLike) -> bool:
    """Whether an open_clip-format file is recognisably OpenAI's weights: the ``open_clip_config.json`` beside
    it says ``quick_gelu``, a near folder is a timm ``….openai`` repository, or its name has the word
    ``openai``/``quickgelu``."""
    path = Path(path).resolve()
    config = path.parent / "open_clip_config.json"
    if config.is_file():
        try:
            model_cfg = json.loads(config.read_text()).get("model_cfg") or {}
        except (OSError, ValueError, AttributeError) as err:
            raise InputError(f"{config}: not an open_clip config (a JSON object with model_cfg): {err}") from err
        if model_cfg.get("quick_gelu"):
            return True
    folders = [p.name.lower() for p in list(path.parents)[:3]]
    return bool(_OPENAI_WORD.search(path.name.lower())) or any(_OPENAI_REPO.search(f) for f in folders)


def tag_uses_quick_gelu(name: str, tag: str) -> bool:
    """The activation a pretrained tag was trained with (its open_clip pretrained config)."""
    return bool((open_clip.get_pretrained_cfg(name, tag) or {}).get("quick_gelu", False))


def released_by_openai_with_quick_gelu(name: str) -> bool:
    """OpenAI released weights for ``name`` (with QuickGELU) while its open_clip config builds GELU."""
    return tag_uses_quick_gelu(name, "openai") and not open_clip.get_model_config(name).get("quick_gelu", False)
