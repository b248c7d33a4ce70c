"""OTI tokens computed elsewhere (``--oti-tokens``): the authors' ``oti_inversion.py`` folder for ``searle
train-phi``, and any token folder (theirs or a ``searle oti`` run) for ``searle-oti``. Their folder holds
``ema_oti_pseudo_tokens.pt`` ((N, d) EMA tokens), ``image_names.pkl`` (N base names) and ``hyperparameters.json``
but no features nor concepts: :func:`import_authors_oti` computes them into an OTI run folder of ours. Neither file
can run code (``weights_only=True``, a restricted unpickler)."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from searle_core.clip.backbone import Backbone
from searle_core.datasets.folder import FileImageSource
from searle_core.infra import distributed as dist
from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_save, atomic_write_json, read_json
from searle_core.inversion.phrases import load_plain_pickle
from searle_core.jobs.oti_run import INPUTS, TOKENS, compute_inputs, inputs_key, load_oti_run, save_inputs
from searle_core.jobs.run_folder import MANIFEST, fingerprint, new_manifest, read_manifest

AUTHORS_TOKENS, AUTHORS_NAMES, AUTHORS_HYPERS = "ema_oti_pseudo_tokens.pt", "image_names.pkl", "hyperparameters.json"
IMPORTED = "oti-import"  # the sub-folder of the φ run folder that holds the imported run


@dataclass
class AuthorsOTI:
    """The authors' OTI folder: image names in token order, (N, d) EMA tokens and their hyper-parameters."""

    names: list[str]
    tokens: torch.Tensor
    hyperparameters: dict

    @property
    def backbone(self) -> str | None:
        """The open_clip name of the CLIP they used (``ViT-B/32`` -> ``ViT-B-32``), if recorded."""
        name = self.hyperparameters.get("clip_model_name")
        return str(name).replace("/", "-") if name else None


def is_authors_oti(folder: str | Path) -> bool:
    """Whether ``folder`` is an experiment folder of the authors' ``oti_inversion.py`` (not one of ours)."""
    present = [(Path(folder) / name).is_file() for name in (AUTHORS_TOKENS, AUTHORS_NAMES, MANIFEST)]
    return present == [True, True, False]


def read_authors_oti(folder: str | Path) -> AuthorsOTI:
    folder = Path(folder)
    names = load_plain_pickle(folder / AUTHORS_NAMES, "list of image names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(f"{folder / AUTHORS_NAMES}: expected a list of image names (str)")
    tokens = torch.load(folder / AUTHORS_TOKENS, map_location="cpu", weights_only=True)
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2:
        raise InputError(
            f"{folder / AUTHORS_TOKENS}: expected an (N, d) tensor of tokens, got "
            f"{getattr(tokens, 'shape', type(tokens).__name__)}"
        )
    if tokens.shape[0] != len(names):
        raise InputError(
            f"{folder}: {AUTHORS_TOKENS} has {tokens.shape[0]} tokens but {AUTHORS_NAMES} {len(names)} names"
        )
    if repeated := [n for n, count in Counter(names).items() if count > 1]:  # their CIRCO test run: 798 of 800
        note = f"{len(repeated)} image name(s) repeat ({', '.join(repeated[:5])}): the first token of each is used"
        print(f"{folder / AUTHORS_NAMES}: {note}, as their names_list.index", file=sys.stderr)
        first = sorted({n: i for i, n in reversed(list(enumerate(names)))}.values())
        names, tokens = [names[i] for i in first], tokens[first]
    hyper = read_json(folder / AUTHORS_HYPERS) if (folder / AUTHORS_HYPERS).is_file() else {}
    return AuthorsOTI(names, tokens.float(), hyper)


def match_names(names: list[str], source: FileImageSource, where: str) -> list[str]:
    """The source's name of each of the authors' image names (theirs are base names, ours relative paths)."""
    by_base: dict[str, list[str]] = {}
    for ours in source.paths:
        by_base.setdefault(Path(ours).name, []).append(ours)
    out, missing = [], []
    for name in names:
        if name in source.paths:
            out.append(name)
        elif len(by_base.get(name, ())) == 1:
            out.append(by_base[name][0])
        elif name in by_base:
            raise InputError(
                f"{where}: image {name!r} matches several files ({by_base[name][:3]}); pass the folder "
                "the authors' run read (ImageNet1K/test)"
            )
        else:
            missing.append(name)
    if missing:
        raise FileNotFoundError(
            f"{where}: {len(missing)} of its {len(names)} images are not in the image folder "
            f"(first: {', '.join(missing[:3])}); pass the folder it inverted with --images"
        )
    return out


def import_authors_oti(
    folder, backbone: Backbone, source: FileImageSource, vocabulary, out, stored_concepts: int = 150, progress=True
) -> Path:
    """Write an OTI run folder ``out`` holding the authors' tokens with features and concepts computed here;
    reused when it holds the same tokens for the same backbone, vocabulary and preprocessing."""
    authors = read_authors_oti(folder)
    if authors.tokens.shape[1] != backbone.token_dim:
        raise InputError(
            f"{folder}: tokens are {authors.tokens.shape[1]}-d but {backbone.name} has "
            f"{backbone.token_dim}-d token embeddings (they were made with "
            f"{authors.hyperparameters.get('clip_model_name', 'another CLIP')})"
        )
    names = match_names(authors.names, source, str(folder))
    out = Path(out)
    hyper = inputs_key(backbone, names, vocabulary, stored_concepts)
    hyper |= {"tokens": fingerprint(authors.tokens), "imported_from": "oti_inversion.py"}
    manifest = read_manifest(out) or {}
    if manifest.get("complete") and manifest.get("hyperparameters") == new_manifest("oti", hyper)["hyperparameters"]:
        return out
    inputs = compute_inputs(backbone, source, names, vocabulary, stored_concepts, progress=progress)
    if dist.is_main():
        theirs = authors.hyperparameters
        info = {"dataset": "imagenet", "path": str(theirs.get("dataset_path", "")), "split": theirs.get("split")}
        info |= {"authors_folder": str(Path(folder).resolve()), "authors_hyperparameters": theirs}
        manifest = new_manifest("oti", hyper, info)
        save_inputs(inputs, out / INPUTS)
        atomic_save(
            {"names": names, "tokens": authors.tokens, "hyperparameters": manifest["hyperparameters"]}, out / TOKENS
        )
        atomic_write_json(manifest | {"complete": True}, out / MANIFEST)
    dist.barrier()
    return out


def load_reference_tokens(path: str | Path) -> dict[str, torch.Tensor]:
    """Reference image name -> token, from a ``searle oti`` run folder or the authors' OTI output folder."""
    folder = Path(path)
    if is_authors_oti(folder):
        run = read_authors_oti(folder)
    elif (folder / MANIFEST).is_file():
        run = load_oti_run(folder)
    else:
        raise FileNotFoundError(
            f"--oti-tokens {folder}: expected a `searle oti` run folder (manifest.json, tokens.pt) "
            f"or the authors' OTI output ({AUTHORS_TOKENS} + {AUTHORS_NAMES})"
        )
    names, tokens = run.names, run.tokens
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[0] != len(names):
        raise InputError(
            f"{folder}: {len(names)} image names but tokens of shape "
            f"{tuple(getattr(tokens, 'shape', ()))}; expected ({len(names)}, token width)"
        )
    return dict(zip(map(str, names), tokens.float()))
