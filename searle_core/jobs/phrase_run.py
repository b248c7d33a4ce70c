"""``searle phrases generate``: the authors' GPT-Neo phrases for a concept list (as their
``gpt_phrases_generation.py``) into the folder ``--phrases`` reads, resumable per concept: each concept has
its own seed, so a resumed run gives an uninterrupted one's."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_write_json, read_json
from searle_core.inversion import phrases
from searle_core.inversion.phrases import generate_phrases_hf, load_causal_lm

HYPERPARAMETERS = "hyperparameters.json"


def generate_phrase_folder(
    concepts: Sequence[str],
    out_dir: str | Path,
    model_name: str = phrases.GPT_MODEL,
    n_samples: int = phrases.GPT_SAMPLES,
    max_length: int = phrases.GPT_MAX_LENGTH,
    temperature: float = phrases.GPT_TEMPERATURE,
    no_repeat_ngram_size: int = phrases.GPT_NO_REPEAT_NGRAM,
    seed: int = 0,
    device: str | None = None,
    resume: bool = False,
    save_every: int = 25,
    progress: bool = True,
) -> phrases.PhraseBank:
    """Generate (or, with ``resume``, continue with the same settings) the phrases of ``concepts`` into ``out_dir``."""
    out = Path(out_dir)
    bank_path = out / phrases.AUTHORS_PHRASES
    settings = (model_name, n_samples, max_length, temperature, no_repeat_ngram_size)
    keys = ("gpt_model", "num_return_sequences", "max_length", "temperature", "no_repeat_ngram_size")
    hyper = {**dict(zip(keys, settings)), "seed": seed, "prompt": phrases.GPT_PROMPT}
    bank: phrases.PhraseBank = {}
    if bank_path.exists():
        if not resume:
            raise InputError(f"{bank_path} exists: pass --resume to continue it, or choose another --out")
        saved = read_json(out / HYPERPARAMETERS) if (out / HYPERPARAMETERS).is_file() else {}
        if changed := [k for k, v in hyper.items() if k in saved and saved[k] != v]:
            raise InputError(
                f"{out / HYPERPARAMETERS}: the phrases were generated with {changed[0]}={saved[changed[0]]!r}, "
                f"not {hyper[changed[0]]!r}; resume with the same settings or choose another --out"
            )
        bank = phrases.load_phrase_pickle(bank_path)
    atomic_write_json(hyper, out / HYPERPARAMETERS)
    todo = [c for c in dict.fromkeys(str(c).strip() for c in concepts) if c and c not in bank]
    model, tokenizer = load_causal_lm(model_name) if todo else (None, None)
    for done, concept in enumerate(tqdm(todo, desc="phrases", disable=not progress), start=1):
        seed_ = int.from_bytes(hashlib.sha256(f"{seed}\0{concept}".encode()).digest()[:4], "little")
        new = generate_phrases_hf([concept], *settings, device=device, seed=seed_, model=model, tokenizer=tokenizer)
        bank.update(new)
        if done % save_every == 0:
            phrases.save_phrase_pickle(bank, bank_path)
    phrases.save_phrase_pickle(bank, bank_path)
    return bank
