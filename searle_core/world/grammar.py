"""Captions, relative captions, concepts and the phrase bank of the ``shapes`` world: one small grammar,
so the world CLIP is trained on exactly the words OTI and φ later meet. Only phrasings true of a single
image are emitted ("is large", never "larger": the world CLIP never sees a comparative)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from searle_core.infra.errors import InputError
from searle_core.world.attributes import ATTRIBUTES, BACKGROUNDS, COLOURS, SHAPES, SIZES, VALUES

# "a photo of" dominates, as in the query prompt "a photo of $ that ..."; the others add variety.
PREFIXES: tuple[str, ...] = ("", "a photo of ", "an image of ", "a picture of ", "a drawing of ")
_PREFIX_P = np.array([0.3, 0.4, 0.1, 0.1, 0.1])
INCLUDE_P = 0.65  # chance that a training caption mentions a given attribute
_CLAUSE_P = {"colour": 0.35, "shape": 0.25, "background": 0.4}  # "that is red" vs "a red ..."
_FUNCTION_WORDS = ("a", "an", "that", "is", "and", "on", "background", "shape")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def compose(values: dict[str, str], clauses: Sequence[str] = (), prefix: str = "") -> str:
    """One caption of some attributes: those in ``clauses`` as "that is ..." clauses, in order; the others
    as adjectives (size, colour), the noun (shape) or "on a ... background". Size is always an adjective."""
    adjectives = [values[a] for a in ("size", "colour") if a in values and a not in clauses]
    noun = values["shape"] if "shape" in values and "shape" not in clauses else "shape"
    words = adjectives + [noun]
    text = f"{prefix}{article(words[0])} {' '.join(words)}"
    if "background" in values and "background" not in clauses:
        text += f" on a {values['background']} background"
    said = [relative_caption(a, values[a]) for a in clauses]
    return text + " that " + " and ".join(said) if said else text


def caption_for(attrs: dict[str, str]) -> str:
    """Full canonical caption, e.g. ``"a small red circle on a black background"``."""
    return compose({a: attrs[a] for a in ATTRIBUTES})


def _draw_prefix(rng: np.random.Generator) -> str:
    return PREFIXES[int(rng.choice(len(PREFIXES), p=_PREFIX_P))]


def _draw_clauses(values: dict[str, str], rng: np.random.Generator, forced: dict[str, bool] | None = None) -> list[str]:
    """Which mentioned attributes become clauses (``forced`` overrides the coin), shuffled."""
    forced = forced or {}
    clauses = [
        a for a in ("colour", "shape", "background") if a in values and forced.get(a, bool(rng.random() < _CLAUSE_P[a]))
    ]
    return [clauses[i] for i in rng.permutation(len(clauses))]


def describe(attrs: dict[str, str], rng: np.random.Generator, include_p: float = INCLUDE_P) -> str:
    """A random true caption of an image, each attribute mentioned with chance ``include_p`` (at least one)."""
    keep = [a for a in ATTRIBUTES if rng.random() < include_p]
    if not keep:
        keep = [ATTRIBUTES[int(rng.integers(len(ATTRIBUTES)))]]
    values = {a: attrs[a] for a in keep}
    return compose(values, _draw_clauses(values, rng), _draw_prefix(rng))


def unknown_words(text: str) -> list[str]:
    """The words of ``text`` outside :func:`training_vocabulary`, once each, in order: the world CLIP's
    rows for them were never trained, so a caption using one asks for noise."""
    known = set(training_vocabulary())
    return list(dict.fromkeys(w for w in re.findall(r"[a-z]+", text.lower()) if w not in known))


def relative_caption(attribute: str, new_value: str) -> str:
    """The relative caption that changes ``attribute`` to ``new_value`` ("is blue", "is an arrow")."""
    if attribute in ("colour", "size"):
        return f"is {new_value}"
    if attribute == "shape":
        return f"is {article(new_value)} {new_value}"
    if attribute == "background":
        return f"is on a {new_value} background"
    raise InputError(f"unknown attribute {attribute!r}")


def training_vocabulary() -> list[str]:
    """Every word :func:`describe` and :func:`phrase_bank` can emit, sorted."""
    words = set(_FUNCTION_WORDS) | {w for p in PREFIXES for w in p.split()}
    return sorted(words.union(*(VALUES[a] for a in ATTRIBUTES)))


#: Concept string -> the attributes it fixes, generic to specific (the Open Images class-name analogue).
CONCEPT_ATTRIBUTES: dict[str, dict[str, str]] = {
    **{s: {"shape": s} for s in SHAPES},
    **{c: {"colour": c} for c in COLOURS},
    **{f"{b} background": {"background": b} for b in BACKGROUNDS},
    **{f"{c} {s}": {"colour": c, "shape": s} for c in COLOURS for s in SHAPES},
    **{f"{z} {s}": {"size": z, "shape": s} for z in SIZES for s in SHAPES},
    **{f"{z} {c} {s}": {"size": z, "colour": c, "shape": s} for z in SIZES for c in COLOURS for s in SHAPES},
}


def concepts() -> list[str]:
    """The world's concept vocabulary: 135 strings."""
    return list(CONCEPT_ATTRIBUTES)


def concepts_of(attrs: dict[str, str]) -> list[str]:
    """Concepts true of an image with attributes ``attrs`` (its ground-truth concepts)."""
    return [c for c, fixed in CONCEPT_ATTRIBUTES.items() if all(attrs[a] == v for a, v in fixed.items())]


def concept_phrase(concept: str, rng: np.random.Generator) -> str:
    """One phrase true of some image of ``concept`` holding the concept string contiguously, once; the
    other attributes are mentioned at random."""
    fixed = CONCEPT_ATTRIBUTES[concept]
    values = dict(fixed)
    for a in ATTRIBUTES:
        if a not in fixed and rng.random() < 0.5:
            values[a] = VALUES[a][int(rng.integers(len(VALUES[a])))]
    forced: dict[str, bool] = {}
    if "shape" in fixed:
        forced["shape"] = False  # the shape is the noun of the concept
        if "colour" in fixed:
            forced["colour"] = False  # "red circle": colour is the adjective
        elif "size" in fixed:
            forced["colour"] = True  # "large star": a colour adjective would split the concept
    return compose(values, _draw_clauses(values, rng, forced), _draw_prefix(rng))


def phrase_bank(n_per_concept: int = 16, seed: int = 0) -> dict[str, list[str]]:
    """``{concept: [phrases]}`` as the authors' GPT-Neo phrase pickle, distinct where the grammar allows,
    topped up with repeats to ``n_per_concept``."""
    rng = np.random.default_rng([seed, 9])
    bank: dict[str, list[str]] = {}
    for concept in concepts():
        seen: dict[str, None] = {}
        for _ in range(50 * n_per_concept):
            seen.setdefault(concept_phrase(concept, rng), None)
            if len(seen) == n_per_concept:
                break
        unique = list(seen)
        bank[concept] = [unique[i % len(unique)] for i in range(n_per_concept)]
    return bank
