"""Phrase banks for the L_gpt regulariser: ``{concept: [phrases that mention the concept]}``.

Sources, from most to least faithful:

* the authors' released pickle, read by :func:`load_phrase_pickle` through a *restricted*
  unpickler (a pickle is a program; a downloaded one must not be able to run ``os.system``);
* :func:`generate_phrases_hf`: GPT-Neo-2.7B with the paper's settings (needs ``transformers``);
* :func:`template_phrases`: an offline, deterministic template generator for tests and quick runs.

:func:`filter_phrase_bank` applies the paper's rule (drop a concept unless every phrase contains it)
and :func:`load_concepts_csv` reads the Open Images V7 vocabulary.
"""

from __future__ import annotations

import builtins
import csv
import io
import pickle
import random
import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from open_clip.tokenizer import SimpleTokenizer

from searle_core.infra.errors import InputError, read_text
from searle_core.infra.files import atomic_write_bytes

PhraseBank = dict[str, list[str]]

# Paper settings for phrase generation (GPT-Neo-2.7B).
GPT_MODEL = "EleutherAI/gpt-neo-2.7B"
GPT_PROMPT = "a photo of {concept} that"
GPT_SAMPLES = 256
GPT_MAX_LENGTH = 35
GPT_TEMPERATURE = 0.5
GPT_NO_REPEAT_NGRAM = 2

# The only globals a phrase pickle may name. dict/list/str/tuple are built by dedicated opcodes
# anyway; naming them is harmless (calling them cannot reach the OS), so old pickles that do still load.
_ALLOWED_GLOBALS = {(m, n) for m in ("builtins", "__builtin__") for n in ("dict", "list", "str", "tuple")}


class UnsafePickleError(pickle.UnpicklingError):
    """A phrase pickle referenced a global outside the allowed set (dict, list, str, tuple)."""


class _PhraseUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str, what: str = "phrase bank") -> None:
        super().__init__(file, encoding="utf-8")
        self.source = source
        self.what = what

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return getattr(builtins, name)
        raise UnsafePickleError(
            f"refusing to load {self.source}: it references the global '{module}.{name}', but a "
            f"{self.what} may only contain dict, list, str and tuple. The file may be malicious or "
            f"not a {self.what}; it was not executed."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing to load {self.source}: it uses persistent ids")


def load_plain_pickle(path: str | Path, what: str) -> Any:
    """A pickle of plain data (dict, list, str, tuple, numbers) read without executing anything.

    Args:
        path: the pickle file (e.g. the authors' ``image_names.pkl``: a list of image names).
        what: what the file should hold, for error messages.

    Raises:
        UnsafePickleError: the pickle names any global other than dict/list/str/tuple.
    """
    with open(path, "rb") as f:
        try:
            return _PhraseUnpickler(f, str(path), what).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise pickle.UnpicklingError(f"{path} is not a readable {what} pickle: {exc}") from exc


#: The file name the authors' scripts write and read (``data/GPT_phrases/<exp>/concept_to_phrases.pkl``).
AUTHORS_PHRASES = "concept_to_phrases.pkl"


def _zip_member(archive: zipfile.ZipFile, where: str) -> str:
    """The phrase pickle inside a zip: ``.../concept_to_phrases.pkl``, else the only ``.pkl`` in it."""
    names = [n for n in archive.namelist() if not n.endswith("/") and "__MACOSX" not in n]
    hits = [n for n in names if n.rsplit("/", 1)[-1] == AUTHORS_PHRASES] or [n for n in names if n.endswith(".pkl")]
    if len(hits) != 1:
        raise InputError(
            f"{where}: expected one {AUTHORS_PHRASES} (or one .pkl) inside the zip, found "
            f"{len(hits)}: {hits[:5] or names[:5]}"
        )
    return hits[0]


def _folder_member(folder: Path) -> Path:
    """``folder/concept_to_phrases.pkl`` or ``folder/<exp>/concept_to_phrases.pkl`` (the unzipped release)."""
    direct = folder / AUTHORS_PHRASES
    hits = [direct] if direct.is_file() else sorted(folder.glob(f"*/{AUTHORS_PHRASES}"))
    if len(hits) != 1:
        raise FileNotFoundError(
            f"{folder}: expected {AUTHORS_PHRASES} in it or in one sub-folder (the authors' "
            f"GPTNeo27B/{AUTHORS_PHRASES}), found {len(hits)}"
        )
    return hits[0]


def load_phrase_pickle(path: str | Path) -> PhraseBank:
    """Load a ``{concept: [phrases]}`` pickle without executing anything it contains.

    Reads the phrases as the authors distribute them: their ``GPTNeo27B.zip`` read in place (the
    ``concept_to_phrases.pkl`` inside it, whatever folder the zip puts it in), the unzipped folder
    (``GPTNeo27B/`` or the folder holding it), or the pickle itself.

    Args:
        path: the pickle file (e.g. the authors' ``concept_to_phrases.pkl``), a ``.zip`` holding it,
            or a folder holding it.

    Raises:
        UnsafePickleError: the pickle names any global other than dict/list/str/tuple.
        ValueError: the pickle is valid but not a ``dict[str, list[str]]``.
    """
    path = Path(path)
    if path.is_dir():
        path = _folder_member(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            member = _zip_member(archive, str(path))
            with archive.open(member) as f:
                return _read_bank(f, f"{path}:{member}")
    with open(path, "rb") as f:
        return _read_bank(f, str(path))


def _read_bank(f: BinaryIO, path: str) -> PhraseBank:
    try:
        obj = _PhraseUnpickler(f, path).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise pickle.UnpicklingError(f"{path} is not a readable phrase pickle: {exc}") from exc
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a dict {{concept: [phrases]}}, got {type(obj).__name__}")
    bank: PhraseBank = {}
    for concept, phrases in obj.items():
        if not isinstance(concept, str) or not isinstance(phrases, (list, tuple)):
            raise InputError(f"{path}: entry {concept!r} is not str -> list of str")
        if not all(isinstance(p, str) for p in phrases):
            raise InputError(f"{path}: phrases of {concept!r} are not all strings")
        bank[concept] = list(phrases)
    _check_concepts_within_context(bank, path)
    return bank


# CLIP reads 77 tokens: start, at most 75 of text, end. The regulariser replaces a phrase's concept
# by "$" and needs that token in the window, so the text before the concept may take at most 74.
_CONTEXT_LENGTH = 77
_MAX_PREFIX_TOKENS = _CONTEXT_LENGTH - 3


def _check_concepts_within_context(bank: PhraseBank, path: str) -> None:
    """Refuse a phrase whose concept starts past CLIP's 77-token window: it would fail hours into a run.

    Every CLIP BPE token covers at least one byte, so a prefix of at most 74 non-space bytes cannot
    overflow; only longer ones (none in the authors' bank) are tokenised.
    """
    tokenizer = None
    for concept, phrases in bank.items():
        for phrase in phrases:
            at = phrase.find(concept)
            if at < 0:
                continue  # filter_phrase_bank drops such concepts, as the paper does
            prefix = phrase[:at]
            if len("".join(prefix.split()).encode("utf-8")) <= _MAX_PREFIX_TOKENS:
                continue
            tokenizer = tokenizer or SimpleTokenizer()
            n = len(tokenizer.encode(prefix))
            if n > _MAX_PREFIX_TOKENS:
                raise InputError(
                    f"{path}: a phrase of concept {concept!r} has {n} tokens before the concept, so it falls "
                    f"past CLIP's {_CONTEXT_LENGTH}-token window ({phrase[:60]!r}...); expected the concept "
                    f"within the first {_MAX_PREFIX_TOKENS} tokens (shorten or drop the phrase)"
                )


def save_phrase_pickle(bank: PhraseBank, path: str | Path) -> Path:
    """Save a phrase bank as a plain pickle, atomically (temporary file, then rename).

    Args:
        bank: ``{concept: [phrases]}``.
        path: destination file.
    """
    plain = {str(c): [str(p) for p in ps] for c, ps in bank.items()}
    return atomic_write_bytes(pickle.dumps(plain, protocol=4), path)


def clean_generated_phrase(text: str) -> str:
    """Tidy a generated phrase as the reference script does: newlines -> ``". "``, ``..`` -> ``.``.

    Args:
        text: decoded model output.
    """
    text = re.sub(r"\n+", ". ", text)
    return re.sub(r"\.+", ".", text).strip()


_WHERE = [
    "in the park",
    "at the beach",
    "in a city street",
    "in the kitchen",
    "on a sunny day",
    "at night",
    "in the snow",
    "next to a window",
    "in a museum",
    "on a wooden table",
]
_WHAT = [
    "was taken last summer",
    "shows its true colors",
    "is in the foreground",
    "looks brand new",
    "I found online",
    "is slightly out of focus",
    "has a blurred background",
    "appears in every catalogue",
    "was shared by a friend",
    "is on display",
]


def template_phrases(concepts: Iterable[str], n_per_concept: int = 16, seed: int = 0) -> PhraseBank:
    """Offline stand-in for GPT phrases: ``"a photo of <concept> that ..."`` from templates.

    Every phrase contains its concept verbatim (so it survives :func:`filter_phrase_bank`). The
    same ``seed`` gives the same bank; phrases of a concept are distinct while the 110 template
    combinations last, then repeat.

    Args:
        concepts: concept names (stripped; duplicates merged).
        n_per_concept: phrases per concept.
        seed: random seed.
    """
    tails = _WHAT + [f"{what} {where}" for what in _WHAT for where in _WHERE]
    rng = random.Random(seed)
    bank: PhraseBank = {}
    for concept in dict.fromkeys(c.strip() for c in concepts):
        if not concept:
            continue
        order = rng.sample(tails, len(tails))
        picked = [order[i % len(order)] for i in range(n_per_concept)]
        bank[concept] = [GPT_PROMPT.format(concept=concept) + " " + tail for tail in picked]
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
    """Generate phrases with a Hugging Face causal LM, with the paper's sampling settings.

    Prompt ``"a photo of {concept} that"``, ``n_samples`` sampled continuations, ``max_length``
    tokens in total (prompt included), the given temperature and ``no_repeat_ngram_size``.

    Args:
        concepts: concept names (stripped, as in the reference script).
        model_name: Hugging Face model id, loaded when ``model``/``tokenizer`` are not given.
        n_samples: sequences per concept.
        max_length: total length in tokens.
        temperature: sampling temperature.
        no_repeat_ngram_size: forbid repeated n-grams of this size.
        device: torch device (default: CUDA when available).
        seed: torch seed for reproducible sampling (``None`` leaves the RNG alone).
        model: an already loaded causal LM (skips loading).
        tokenizer: its tokenizer.
    """
    import torch

    if model is None or tokenizer is None:
        model, tokenizer = load_causal_lm(model_name)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    if seed is not None:
        torch.manual_seed(seed)
    bank: PhraseBank = {}
    for concept in dict.fromkeys(c.strip() for c in concepts):
        inputs = tokenizer(GPT_PROMPT.format(concept=concept), return_tensors="pt")
        with torch.no_grad():
            output = model.generate(
                input_ids=inputs["input_ids"].to(device),
                attention_mask=inputs["attention_mask"].to(device),
                do_sample=True,
                max_length=max_length,
                num_return_sequences=n_samples,
                temperature=temperature,
                no_repeat_ngram_size=no_repeat_ngram_size,
                pad_token_id=getattr(tokenizer, "eos_token_id", None),
            )
        texts = tokenizer.batch_decode(output, skip_special_tokens=True)
        bank[concept] = [clean_generated_phrase(t) for t in texts]
    return bank


def filter_phrase_bank(bank: PhraseBank, case_sensitive: bool = True) -> PhraseBank:
    """Drop concepts whose phrases do not *all* contain the concept string (and empty ones).

    Case-sensitive by default because L_gpt replaces the first verbatim occurrence with ``$``; a
    phrase that only matches case-insensitively could not be rewritten.

    Args:
        bank: ``{concept: [phrases]}``.
        case_sensitive: compare verbatim (default) or case-insensitively.
    """

    def contains(phrase: str, concept: str) -> bool:
        return concept in phrase if case_sensitive else concept.lower() in phrase.lower()

    return {
        concept: list(phrases)
        for concept, phrases in bank.items()
        if phrases and all(contains(p, concept) for p in phrases)
    }


def load_concepts_csv(path: str | Path) -> list[str]:
    """Read Open Images V7 class descriptions (``LabelName,DisplayName``) into display names.

    Names are stripped and de-duplicated *exactly* (case kept), first occurrence first; empty names
    are skipped. The V7 file has 20,931 rows and no duplicates, so all 20,931 names come back.
    Quoted names with commas (``"Ducks, geese and swans"``) are handled by the csv module.

    Args:
        path: the CSV file.
    """

    path = Path(path)
    reader = csv.reader(io.StringIO(read_text(path, "CSV file"), newline=""))
    try:
        header = next(reader, None)
        if not header or "DisplayName" not in header:
            raise InputError(f"{path}: expected a header 'LabelName,DisplayName', got {header}")
        col = header.index("DisplayName")
        names = [row[col].strip() for row in reader if len(row) > col]
    except csv.Error as err:
        raise InputError(f"{path}, line {reader.line_num}: not valid CSV ({err})") from None
    return list(dict.fromkeys(n for n in names if n))
