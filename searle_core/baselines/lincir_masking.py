"""LinCIR's self-masking: a caption's keywords replaced by the pseudo-word ``$``.

The official ``loader.py`` (``CaptionDataset``) lower-cases a caption, removes every ``$``, finds its
keywords (maximal runs of spaCy tokens tagged NOUN, PROPN, ADJ or DET), and replaces each keyword by
the pseudo-word with ``str.replace`` (every occurrence, substrings included), in order. At the first
keyword that is not found verbatim in the caption (or when there is none), one random word of the
caption is replaced instead and the loop stops. If no ``$`` survives tokenisation the replaced
caption becomes ``a photo of $`` and the sample is flagged (its ``indicator`` 0).

Two choices here, both because the project must run offline without a spaCy model:

- the tagger: ``closed-class`` (default) marks a word as a keyword unless it is one of English's
  closed-class words that spaCy never tags NOUN/PROPN/ADJ/DET (prepositions, conjunctions, pronouns,
  auxiliaries and common verbs, numerals, punctuation); ``spacy`` uses ``en_core_web_sm`` as the
  official code does, when both are installed. On the world's grammar the two agree (its only
  open-class words are nouns and adjectives).
- the ``$`` is written with spaces around it (``" $ "``, whitespace then collapsed): the official
  ``[$]`` is a special token that the tokenizer always splits off, which ``$`` inside a word
  ("$s") would not be for CLIP's BPE.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from searle_core.infra.errors import InputError

PSEUDO_WORD = "$"
#: The official fallback when no ``$`` survives: the whole caption becomes this prompt.
FALLBACK_PROMPT = "a photo of $"

#: Words that are never NOUN, PROPN, ADJ or DET for spaCy's English tagger (they break keyword runs).
CLOSED_CLASS = frozenset(
    """
    about above across after against along among around as at before behind below beneath beside
    between beyond but by down during for from in inside into like near of off on onto out outside
    over past since than through throughout to toward towards under until up upon with within without
    and or nor so yet if because while although though whether that which who whom whose where when
    why how i me my mine you your yours he him his she her hers it its we us our ours they them their
    theirs this these those what itself himself herself themselves is are was were be been being am
    has have had having do does did doing can could will would shall should may might must not no
    there here very too also just only then now again still even ever never always often really
    quite rather almost
    """.split()
)
_PUNCTUATION = re.compile(r"^[\W_]+$")


def closed_class_is_keyword(word: str) -> bool:
    """Whether ``word`` would be tagged NOUN, PROPN, ADJ or DET (closed-class approximation)."""
    return not (word in CLOSED_CLASS or _PUNCTUATION.match(word) or word.replace(".", "").isdigit())


def keyword_runs(caption: str, is_keyword: Callable[[str], bool] = closed_class_is_keyword) -> list[str]:
    """Maximal runs of keyword words, in order (the official ``extract_keywords_spacy``)."""
    runs, current = [], []
    for word in caption.split():
        if is_keyword(word):
            current.append(word)
        elif current:
            runs.append(" ".join(current))
            current = []
    if current:
        runs.append(" ".join(current))
    return runs


def spacy_keyword_runs(model: str = "en_core_web_sm") -> Callable[[str], list[str]]:
    """The official keyword selection with spaCy (``pip install spacy`` and its English model)."""
    try:
        import spacy  # noqa: PLC0415 - optional, only for the official tagger

        nlp = spacy.load(model)
    except (ImportError, OSError) as err:
        raise InputError(
            f"LinCIR's spaCy keywords need spacy and its model {model!r} ({err}); use keywords='closed-class'"
        ) from None

    def runs(caption: str) -> list[str]:
        out, current = [], []
        for token in nlp(caption):
            if token.pos_ in ("NOUN", "PROPN", "ADJ", "DET"):
                current.append(token.text)
            elif current:
                out.append(" ".join(current))
                current = []
        return out + ([" ".join(current)] if current else [])

    return runs


def clean_caption(caption: str) -> str:
    """Lower-cased, without ``$``, stripped (the official ``clean_caption``; the 75-token cut is the
    tokenizer's)."""
    return caption.lower().replace(PSEUDO_WORD, "").strip()


def mask_keywords(caption: str, keywords: list[str], rng: random.Random) -> str:
    """The official replacement: each keyword -> ``$`` (every occurrence) until one is missing, which
    (like an empty keyword list) replaces one random word instead and stops."""
    replaced = caption
    for keyword in keywords or [""]:
        if keyword and keyword in caption:
            replaced = replaced.replace(keyword, f" {PSEUDO_WORD} ")
        else:
            words = caption.split(" ")
            replaced = replaced.replace(rng.choice(words), f" {PSEUDO_WORD} ") if words else FALLBACK_PROMPT
            break
    return " ".join(replaced.split())


@dataclass(frozen=True)
class MaskedCaption:
    """A training pair: the cleaned caption and its keyword-masked form (``flagged``: the fallback)."""

    caption: str
    masked: str
    flagged: bool = False


def mask_corpus(captions: list[str], seed: int, keywords: str = "closed-class") -> list[MaskedCaption]:
    """Every caption with its keywords masked.

    Args:
        captions: the text corpus.
        seed: the random-word fallback's generator.
        keywords: ``closed-class`` or ``spacy``.
    """
    if keywords not in ("closed-class", "spacy"):
        raise InputError(f"LinCIR keywords {keywords!r}: expected 'closed-class' or 'spacy'")
    find = spacy_keyword_runs() if keywords == "spacy" else keyword_runs
    rng = random.Random(seed)
    out = []
    for raw in captions:
        caption = clean_caption(raw)
        masked = mask_keywords(caption, find(caption), rng)
        ok = PSEUDO_WORD in masked.split()  # the tokenizer's cut is checked on the tokens (lincir.py)
        out.append(MaskedCaption(caption, masked if ok else FALLBACK_PROMPT, not ok))
    return out
