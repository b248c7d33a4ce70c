"""``searle phrases generate``: the authors' GPT-Neo phrases for a concept list, resumable per concept.

As their ``gpt_phrases_generation.py`` (prompt ``"a photo of {concept} that"``, 256 samples of at most 35
tokens, temperature 0.5), into ``concept_to_phrases.pkl`` (unfiltered) and ``hyperparameters.json``: the
folder ``--phrases`` reads. Each concept has its own seed, so a resumed run gives an uninterrupted one's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_write_json
from searle_core.inversion.phrases import (
    AUTHORS_PHRASES,
    GPT_MAX_LENGTH,
    GPT_MODEL,
    GPT_NO_REPEAT_NGRAM,
    GPT_SAMPLES,
    GPT_TEMPERATURE,
    PhraseBank,
    generate_phrases_hf,
    load_causal_lm,
    load_phrase_pickle,
    save_phrase_pickle,
)

HYPERPARAMETERS = "hyperparameters.json"


def generate_phrase_folder(
    concepts: Sequence[str],
    out_dir: str | Path,
    model_name: str = GPT_MODEL,
    n_samples: int = GPT_SAMPLES,
    max_length: int = GPT_MAX_LENGTH,
    temperature: float = GPT_TEMPERATURE,
    no_repeat_ngram_size: int = GPT_NO_REPEAT_NGRAM,
    seed: int = 0,
    device: str | None = None,
    resume: bool = False,
    save_every: int = 25,
    progress: bool = True,
    model: Any = None,
    tokenizer: Any = None,
) -> PhraseBank:
    """Generate (or, with ``resume``, continue with the same settings) the phrases of ``concepts`` into
    ``out_dir``; ``model``/``tokenizer``: an already loaded causal LM."""
    out = Path(out_dir)
    bank_path = out / AUTHORS_PHRASES
    hyper = {
        "gpt_model": model_name,
        "num_return_sequences": n_samples,
        "max_length": max_length,
        "temperature": temperature,
        "no_repeat_ngram_size": no_repeat_ngram_size,
        "seed": seed,
        "prompt": "a photo of {concept} that",
    }
    bank: PhraseBank = {}
    if bank_path.exists():
        if not resume:
            raise InputError(f"{bank_path} exists: pass --resume to continue it, or choose another --out")
        saved = json.loads((out / HYPERPARAMETERS).read_text()) if (out / HYPERPARAMETERS).is_file() else {}
        changed = [k for k, v in hyper.items() if k in saved and saved[k] != v]
        if changed:
            raise InputError(
                f"{out / HYPERPARAMETERS}: the phrases were generated with {changed[0]}={saved[changed[0]]!r}, "
                f"not {hyper[changed[0]]!r}; resume with the same settings or choose another --out"
            )
        bank = load_phrase_pickle(bank_path)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(hyper, out / HYPERPARAMETERS)
    todo = [c for c in dict.fromkeys(str(c).strip() for c in concepts) if c and c not in bank]
    if todo and (model is None or tokenizer is None):
        model, tokenizer = load_causal_lm(model_name)
    settings = (model_name, n_samples, max_length, temperature, no_repeat_ngram_size)
    for done, concept in enumerate(tqdm(todo, desc="phrases", disable=not progress), start=1):
        seed_ = int.from_bytes(hashlib.sha256(f"{seed}\0{concept}".encode()).digest()[:4], "little")
        bank.update(
            generate_phrases_hf([concept], *settings, device=device, seed=seed_, model=model, tokenizer=tokenizer)
        )
        if done % save_every == 0:
            save_phrase_pickle(bank, bank_path)
    save_phrase_pickle(bank, bank_path)
    return bank
