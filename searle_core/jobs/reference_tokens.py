"""Pseudo-word tokens of reference images computed elsewhere, for ``searle-oti`` (``--oti-tokens``).

A long OTI run over a benchmark's references (``searle oti``) or the authors' ``oti_inversion.py``
output can be evaluated, or turned into test-server files, without inverting again: the tokens are
given to the method, as the authors' ``generate_test_submission.py --eval-type oti`` does.
"""

from __future__ import annotations

from pathlib import Path

import torch

from searle_core.infra.errors import InputError
from searle_core.jobs.authors_oti import AUTHORS_NAMES, AUTHORS_TOKENS, is_authors_oti, read_authors_oti
from searle_core.jobs.oti_run import load_oti_run


def load_reference_tokens(path: str | Path) -> dict[str, torch.Tensor]:
    """Image name -> token, from a ``searle oti`` run folder or the authors' OTI output folder.

    Args:
        path: a folder holding either ``manifest.json`` + ``tokens.pt`` (``searle oti --out``) or
            ``ema_oti_pseudo_tokens.pt`` + ``image_names.pkl`` (the authors' ``oti_inversion.py``).

    Raises:
        FileNotFoundError: the folder holds neither.
        ValueError: the names and tokens do not match up.
    """

    folder = Path(path)
    if is_authors_oti(folder):
        authors = read_authors_oti(folder)
        names, tokens = authors.names, authors.tokens
    elif (folder / "manifest.json").is_file():
        inputs, tokens, _ = load_oti_run(folder)
        names = inputs.names
    else:
        raise FileNotFoundError(
            f"--oti-tokens {folder}: expected a `searle oti` run folder (manifest.json, tokens.pt) "
            f"or the authors' OTI output ({AUTHORS_TOKENS} + {AUTHORS_NAMES})"
        )
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[0] != len(names):
        raise InputError(
            f"{folder}: {len(names)} image names but tokens of shape "
            f"{tuple(getattr(tokens, 'shape', ()))}; expected ({len(names)}, token width)"
        )
    return dict(zip(map(str, names), tokens.float()))
