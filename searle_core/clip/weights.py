"""Local CLIP weight files: OpenAI's TorchScript releases, plain state dicts, and which activation they need.

OpenAI trained its CLIP models with QuickGELU, ``x * sigmoid(1.702 x)``; open_clip 3.3 builds
``ViT-B-32`` and ``ViT-L-14`` with GELU unless told otherwise. A model built with the wrong
activation loads the weights without complaint and gives other features, so the backbone must know
when a file holds OpenAI weights. It does when:

* the file is a TorchScript archive (how OpenAI releases ``ViT-B-32.pt`` / ``ViT-L-14.pt``; open_clip
  never writes one);
* its state dict carries OpenAI's extra entries ``input_resolution``, ``context_length`` and
  ``vocab_size`` (a state dict saved from OpenAI's TorchScript model);
* it is OpenAI's weights in open_clip's own format, as the open_clip/timm copies on model hubs are
  (``timm/vit_base_patch32_clip_224.openai``: ``open_clip_pytorch_model.bin`` or
  ``open_clip_model.safetensors``): the ``open_clip_config.json`` beside it says ``quick_gelu``, one
  of its three nearest folders is a timm ``<model>.openai`` repository (a hub cache keeps the
  repository name three levels up), or its file name has ``openai`` or ``quickgelu`` as a word
  (``ViT-B-32-quickgelu.bin``);
* the user says so: ``--pretrained openai:/path/to/file``.

Any other file is loaded with the activation of the model config (``ViT-B-32-quickgelu`` for a
QuickGELU model). For a model OpenAI released (``ViT-B-32``, ``ViT-L-14``, ...) that is GELU, which
is wrong for OpenAI's weights and silent, so that build prints one line naming the two ways to get
QuickGELU (:func:`gelu_file_notice`).

Trust: plain state dicts are read with ``torch.load(weights_only=True)`` (or safetensors), which runs
no code. A TorchScript archive is a program, and ``torch.jit.load`` (what OpenAI's own ``clip.load``
uses) is the only reader; it is used only on an archive whose SHA-256 equals the one OpenAI published
for that model (the hash in the release URL, which open_clip records). Any other archive is refused
with the one line that converts it into a plain state dict, to run once where the file is trusted.
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

from searle_core.infra.downloads import sha256_of
from searle_core.infra.errors import InputError

OPENAI_PREFIX = "openai:"
#: Entries of OpenAI's TorchScript state dict that are not open_clip parameters.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def split_openai_prefix(pretrained: str) -> tuple[str, bool]:
    """``"openai:/w/ViT-B-32.pt"`` -> ``("/w/ViT-B-32.pt", True)``; anything else -> ``(pretrained, False)``."""
    if pretrained.startswith(OPENAI_PREFIX) and len(pretrained) > len(OPENAI_PREFIX):
        return pretrained[len(OPENAI_PREFIX) :], True
    return pretrained, False


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript zip (it has ``code/`` or ``constants.pkl``; a ``torch.save``
    zip has neither)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.split("/", 1)[-1].startswith("code/") or n.endswith("/constants.pkl") for n in archive.namelist())


def openai_sha256(name: str) -> str | None:
    """The SHA-256 OpenAI published for its release of ``name`` (from the URL open_clip records)."""
    cfg = open_clip.get_pretrained_cfg(name, "openai") or {}
    url = cfg.get("url", "")
    return url.split("/")[-2] if "openaipublic" in url else None


def _convert_hint(path: str) -> str:
    return (
        f"python -c \"import torch; torch.save(torch.jit.load('{path}', map_location='cpu').state_dict(), "
        f"'{Path(path).stem}-state-dict.pt')\""
    )


def read_torchscript_weights(path: str, name: str) -> dict[str, torch.Tensor]:
    """The state dict inside OpenAI's TorchScript release of ``name``.

    Raises:
        ValueError: the archive is not OpenAI's release of ``name`` (its SHA-256 differs).
    """
    expected = openai_sha256(name)
    actual = sha256_of(path)
    if actual != expected:
        raise InputError(
            f"--pretrained {path} is a TorchScript archive but not OpenAI's release of {name} "
            f"(sha256 {actual[:12]}…, expected {(expected or 'none published')[:12]}…). TorchScript archives are "
            f"programs, so only that release is loaded as one. If you trust this file, convert it once into a "
            f"plain state dict and pass that instead:\n  {_convert_hint(path)}"
        )
    with warnings.catch_warnings():
        # torch 2.x deprecates TorchScript; OpenAI's files exist only in it.
        warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
        module = torch.jit.load(path, map_location="cpu")
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@dataclass
class InMemoryWeights:
    """Weights that exist only in memory: trained on the spot when the cache could not be written.

    ``load_backbone`` takes them as its ``pretrained`` (or from a default-weights provider) and
    loads the state dict as it would a file's.

    Args:
        label: names the weights in messages and cache keys (the intended file name and a digest).
        state: the open_clip state dict.
        log: what the trainer reported (as the JSON written beside cached weights).
    """

    label: str
    state: dict[str, torch.Tensor]
    log: dict = field(default_factory=dict)


def read_weights_file(path: str, name: str) -> tuple[dict[str, torch.Tensor], bool]:
    """A local weights file's state dict, and whether it is laid out as OpenAI's release.

    Args:
        path: a TorchScript archive (OpenAI's release), a ``torch.save`` state dict (optionally under
            ``"state_dict"``, optionally with ``module.`` prefixes) or a ``.safetensors`` file.
        name: the open_clip model name the weights are for.

    Returns:
        ``(state_dict, openai)``: the open_clip state dict (OpenAI's extra entries removed) and
        whether the file is OpenAI's (TorchScript, or those extra entries present).
    """
    if is_torchscript_archive(path):
        state, openai = read_torchscript_weights(path, name), True
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


#: ``openai`` or ``quickgelu`` as a word of a file name (``_``, ``-``, ``.`` separate words).
_OPENAI_WORD = re.compile(r"(?<![a-z0-9])(openai|quickgelu)(?![a-z0-9])")
#: A timm repository of OpenAI's weights (``vit_base_patch32_clip_224.openai``, cached by the hub as
#: ``models--timm--vit_base_patch32_clip_224.openai``). Only this suffix counts for folders: a folder
#: that merely mentions "openai" (a test's or a user's) says nothing about the file.
_OPENAI_REPO = re.compile(r"\.openai$")


def named_or_configured_openai(path: str | os.PathLike) -> bool:
    """Whether a weights file in open_clip's format is recognisably OpenAI's (QuickGELU) release.

    Yes when the ``open_clip_config.json`` beside it (what open_clip's hub copies ship) sets
    ``model_cfg.quick_gelu``, when one of its three nearest folders is a timm ``….openai`` repository
    (``models--timm--vit_base_patch32_clip_224.openai/snapshots/<sha>/open_clip_pytorch_model.bin``),
    or when its file name has ``openai`` / ``quickgelu`` as a word (``ViT-B-32-quickgelu.bin``).
    """
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


def released_by_openai_with_quick_gelu(name: str) -> bool:
    """Whether OpenAI released weights for the model ``name`` (trained with QuickGELU) while its
    open_clip config builds GELU: ``ViT-B-32``, ``ViT-L-14``, ``RN50``, ..."""
    return tag_uses_quick_gelu(name, "openai") and not open_clip.get_model_config(name).get("quick_gelu", False)


def gelu_file_notice(name: str, path: str) -> str:
    """The one line printed when a file is built as ``name`` with GELU though OpenAI's ``name`` is QuickGELU."""
    return (
        f"note: --pretrained {path} builds {name} with GELU (the file does not show it holds OpenAI's weights); "
        f"if it does (as open_clip/timm copies on model hubs do), get QuickGELU with --pretrained openai:{path} "
        f"or the model name {name}-quickgelu"
    )


def tag_uses_quick_gelu(name: str, tag: str) -> bool:
    """The activation a pretrained tag was trained with (its open_clip pretrained config)."""
    return bool((open_clip.get_pretrained_cfg(name, tag) or {}).get("quick_gelu", False))
