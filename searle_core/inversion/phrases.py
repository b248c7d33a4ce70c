"""Phrase banks for L_gpt, ``{concept: [phrases that mention it]}``, and the Open Images vocabulary. Sources, most
faithful first: the authors' pickle (a restricted unpickler: a pickle is a program), GPT-Neo-2.7B, templates."""

from __future__ import annotations

import builtins
import pickle
import random
import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch
from open_clip.tokenizer import SimpleTokenizer

from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_write, read_text
from searle_core.inversion.concepts import read_csv
from searle_core.method.regulariser import PhraseBank

# The paper's phrase generation: model, prompt, samples per concept, max length, temperature, no-repeat n-gram.
GPT_MODEL, GPT_PROMPT = "EleutherAI/gpt-neo-2.7B", "a photo of {concept} that"
GPT_SAMPLES, GPT_MAX_LENGTH, GPT_TEMPERATURE, GPT_NO_REPEAT_NGRAM = 256, 35, 0.5, 2
#: The file the authors' scripts write and read (``data/GPT_phrases/<exp>/concept_to_phrases.pkl``).
AUTHORS_PHRASES = "concept_to_phrases.pkl"

# The only globals a plain-data pickle may name: calling them cannot reach the OS.
_ALLOWED_GLOBALS = {(m, n) for m in ("builtins", "__builtin__") for n in ("dict", "list", "str", "tuple")}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global outside the allowed set (dict, list, str, tuple)."""


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str, what: str) -> None:
        super().__init__(file, encoding="utf-8")
        self.source, self.what = source, what

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return getattr(builtins, name)
        raise UnsafePickleError(
            f"refusing to load {self.source}: it references the global '{module}.{name}', but a {self.what} may only "
            f"contain dict, list, str and tuple. The file may be malicious or not a {self.what}; it was not executed."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing to load {self.source}: it uses persistent ids")


def _unpickle(f: BinaryIO, source: str, what: str) -> Any:
    try:
        return _PlainUnpickler(f, source, what).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise pickle.UnpicklingError(f"{source} is not a readable {what} pickle: {exc}") from exc


def load_plain_pickle(path: str | Path, what: str) -> Any:
    """A plain-data pickle (the authors' ``image_names.pkl``), read without executing anything."""
    with open(path, "rb") as f:
        return _unpickle(f, str(path), what)


def load_phrase_pickle(path: str | Path) -> PhraseBank:
    """A ``{concept: [phrases]}`` pickle, without executing anything it contains: the file, the
    authors' ``GPTNeo27B.zip`` read in place, or a folder holding it (directly or in one sub-folder)."""
    path = Path(path)
    if path.is_dir():
        direct = path / AUTHORS_PHRASES
        hits = [direct] if direct.is_file() else sorted(path.glob(f"*/{AUTHORS_PHRASES}"))
        if len(hits) != 1:
            raise FileNotFoundError(
                f"{path}: expected {AUTHORS_PHRASES} in it or in one sub-folder (the authors' "
                f"GPTNeo27B/{AUTHORS_PHRASES}), found {len(hits)}"
            )
        path = hits[0]
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            return _read_bank(f, str(path))
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/") and "__MACOSX" not in n]
        hits = [n for n in names if n.rsplit("/", 1)[-1] == AUTHORS_PHRASES] or [n for n in names if n.endswith(".pkl")]
        if len(hits) != 1:
            raise InputError(
                f"{path}: expected one {AUTHORS_PHRASES} (or one .pkl) inside the zip, found "
                f"{len(hits)}: {hits[:5] or names[:5]}"
            )
        with archive.open(hits[0]) as f:
            return _read_bank(f, f"{path}:{hits[0]}")


# CLIP reads 77 tokens: start, at most 75 of text, end. The regulariser replaces a phrase's concept
# by "$" and needs that token in the window, so the text before the concept may take at most 74.
_CONTEXT_LENGTH = 77
_MAX_PREFIX_TOKENS = _CONTEXT_LENGTH - 3


def _read_bank(f: BinaryIO, path: str) -> PhraseBank:
    """The bank, checked: plain strings, every concept within CLIP's window (refused now, not hours into a run)."""
    obj = _unpickle(f, path, "phrase bank")
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a dict {{concept: [phrases]}}, got {type(obj).__name__}")
    bank: PhraseBank = {}
    tokenizer = None
    for concept, phrases in obj.items():
        if not isinstance(concept, str) or not isinstance(phrases, (list, tuple)):
            raise InputError(f"{path}: entry {concept!r} is not str -> list of str")
        if not all(isinstance(p, str) for p in phrases):
            raise InputError(f"{path}: phrases of {concept!r} are not all strings")
        bank[concept] = list(phrases)
        for phrase in phrases:
            at = phrase.find(concept)
            # A BPE token covers at least one non-space byte: only longer prefixes need tokenising.
            if at < 0 or len("".join(phrase[:at].split()).encode("utf-8")) <= _MAX_PREFIX_TOKENS:
                continue  # a phrase without its concept is dropped by filter_phrase_bank
            tokenizer = tokenizer or SimpleTokenizer()
            n = len(tokenizer.encode(phrase[:at]))
            if n > _MAX_PREFIX_TOKENS:
                raise InputError(
                    f"{path}: a phrase of concept {concept!r} has {n} tokens before the concept, so it falls "
                    f"past CLIP's {_CONTEXT_LENGTH}-token window ({phrase[:60]!r}...); expected the concept "
                    f"within the first {_MAX_PREFIX_TOKENS} tokens (shorten or drop the phrase)"
                )
    return bank


def save_phrase_pickle(bank: PhraseBank, path: str | Path) -> Path:
    """Save a phrase bank as a plain pickle, atomically."""
    data = pickle.dumps({str(c): [str(p) for p in ps] for c, ps in bank.items()}, protocol=4)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


_WHERE = (
    "in the park|at the beach|in a city street|in the kitchen|on a sunny day|at night|in the snow|"
    "next to a window|in a museum|on a wooden table"
).split("|")
_WHAT = (
    "was taken last summer|shows its true colors|is in the foreground|looks brand new|I found online|"
    "is slightly out of focus|has a blurred background|appears in every catalogue|was shared by a friend|is on display"
).split("|")


def template_phrases(concepts: Iterable[str], n_per_concept: int = 16, seed: int = 0) -> PhraseBank:
    """Offline stand-in for GPT phrases: ``"a photo of <concept> that ..."`` from templates, the same for
    the same ``seed``; a concept's phrases are distinct while the 110 combinations last, then repeat."""
    tails = _WHAT + [f"{what} {where}" for what in _WHAT for where in _WHERE]
    rng = random.Random(seed)
    bank: PhraseBank = {}
    for concept in dict.fromkeys(c.strip() for c in concepts):
        if concept:
            prompt, order = GPT_PROMPT.format(concept=concept), rng.sample(tails, len(tails))
            bank[concept] = [f"{prompt} {order[i % len(order)]}" for i in range(n_per_concept)]
    return bank


def load_causal_lm(model_name: str = GPT_MODEL) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a Hugging Face causal LM (the optional ``phrases`` extra)."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ImportError(
            "generating phrases needs the 'transformers' package (the 'phrases' extra): pip install transformers "
            "(or pass the authors' phrases with --phrases, or use template_phrases offline)"
        ) from exc
    return AutoModelForCausalLM.from_pretrained(model_name), AutoTokenizer.from_pretrained(model_name)


def generate_phrases_hf(
    concepts: Sequence[str],
    model_name: str = GPT_MODEL,
    n_samples: int = GPT_SAMPLES,
    max_length: int = GPT_MAX_LENGTH,
    temperature: float = GPT_TEMPERATURE,
    no_repeat_ngram_size: int = GPT_NO_REPEAT_NGRAM,
    device: str | None = None,
    seed: int | None = 0,
    model: Any = None,
    tokenizer: Any = None,
) -> PhraseBank:
    """``n_samples`` continuations of ``"a photo of {concept} that"`` per (stripped) concept, sampled with the
    paper's settings (``max_length`` counts the prompt), tidied as the reference script does."""
    if model is None or tokenizer is None:
        model, tokenizer = load_causal_lm(model_name)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    if seed is not None:
        torch.manual_seed(seed)
    bank: PhraseBank = {}
    sampling = {"do_sample": True, "max_length": max_length, "num_return_sequences": n_samples}
    sampling |= {"temperature": temperature, "no_repeat_ngram_size": no_repeat_ngram_size}
    sampling["pad_token_id"] = getattr(tokenizer, "eos_token_id", None)
    for concept in dict.fromkeys(c.strip() for c in concepts):
        inputs = tokenizer(GPT_PROMPT.format(concept=concept), return_tensors="pt")
        ids, mask = inputs["input_ids"].to(device), inputs["attention_mask"].to(device)
        with torch.no_grad():
            output = model.generate(input_ids=ids, attention_mask=mask, **sampling)
        texts = tokenizer.batch_decode(output, skip_special_tokens=True)
        bank[concept] = [re.sub(r"\.+", ".", re.sub(r"\n+", ". ", t)).strip() for t in texts]
    return bank


def filter_phrase_bank(bank: PhraseBank, case_sensitive: bool = True) -> PhraseBank:
    """Drop concepts whose phrases do not *all* contain the concept (the paper's rule), and empty ones.
    Case-sensitive by default: L_gpt replaces the first verbatim occurrence with ``$``."""
    fold = str if case_sensitive else str.lower
    return {c: list(ps) for c, ps in bank.items() if ps and all(fold(c) in fold(p) for p in ps)}


def load_concepts_csv(path: str | Path) -> list[str]:
    """Open Images V7's 20,931 display names (``LabelName,DisplayName``), stripped, without empties or repeats."""
    path = Path(path)
    header, rows = read_csv(path, read_text(path, "CSV file"), lambda h: "DisplayName" in h, "'LabelName,DisplayName'")
    col = header.index("DisplayName")
    return list(dict.fromkeys(name for row in rows if len(row) > col and (name := row[col].strip())))
