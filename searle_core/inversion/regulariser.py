"""The phrase regulariser shared by OTI and φ: phrases about an image's concepts, with the concept
replaced by ``$``, should keep the text features of the original phrase.

The features of the *unmodified* phrases carry no gradient, so they are encoded once (no_grad) and
memoised by :class:`PhraseFeatureCache`; only the ``$`` versions are encoded at each step.

Which phrase, as the authors' code picks it:

- *The concepts.* Each image's concepts are its associated ones stripped, repeats dropped (first
  kept), cut to the first ``top_k`` (OTI 15, φ 150), and only then those without usable phrases are
  skipped, so an image may keep fewer than ``top_k`` (``concept_files.read_concepts_csv`` and
  ``concepts.associate_concepts`` do the first three; :class:`PhraseSampler` the last).
- *Usable phrases.* A concept is dropped entirely if any of its phrases does not contain it
  (``phrases.filter_phrase_bank``: their ``phrase.replace(k, " $ ", 1)`` without ``$``). Two corner
  cases differ, on purpose: a concept with no phrases, or absent from the bank, is skipped here where
  theirs keeps it (no phrase to draw) or stops with a ``KeyError``; a phrase that lacks its concept
  but already holds a ``$`` passes their test and fails ours (no such phrase in their bank).
- *The draw.* OTI: uniform over the flat list of the image's phrases (``draw="phrase"``); φ: a
  concept, then a phrase (``draw="concept"``); see :class:`PhraseSampler`. OTI replaces the first
  occurrence of the concept, φ every one. The draws come from the caller's seeded stream, not the
  global ``random`` their scripts seed, so the phrases drawn follow the same law, not the same values.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from searle_core.clip.backbone import Backbone
from searle_core.clip.text_encoding import encode_text, normalized
from searle_core.infra.device import train_autocast
from searle_core.infra.errors import InputError

PhraseBank = dict[str, list[str]]


def replace_concept(phrase: str, concept: str, pseudo: str = "$") -> str:
    """Replace the first occurrence of ``concept`` in ``phrase`` by the pseudo-word.

    Raises:
        ValueError: if the phrase does not contain the concept (such concepts should have been
            dropped from the bank, see ``phrases.filter_phrase_bank``).
    """
    at = phrase.find(concept)
    if at < 0:
        raise InputError(f"phrase {phrase!r} does not contain its concept {concept!r}")
    # Whitespace is normalised so "a red circle" -> "a $", not "a  $ " (same tokens, tidier text).
    return " ".join(f"{phrase[:at]} {pseudo} {phrase[at + len(concept) :]}".split())


def replace_every(phrase: str, concept: str, pseudo: str = "$") -> str:
    """Replace every occurrence of ``concept`` in ``phrase`` by the pseudo-word (φ's regulariser:
    the authors' ``gpt_phrase.replace(concept, " $ ")``; OTI's replaces only the first).

    Raises:
        ValueError: if the phrase does not contain the concept.
    """
    if concept not in phrase:
        raise InputError(f"phrase {phrase!r} does not contain its concept {concept!r}")
    return " ".join(phrase.replace(concept, f" {pseudo} ").split())


class PhraseFeatureCache:
    """Normalised text features of plain phrases, encoded once per phrase, without gradient.

    Args:
        backbone: the frozen CLIP.
        batch_size: phrases encoded per forward pass.
    """

    def __init__(self, backbone: Backbone, batch_size: int = 512):
        self.backbone = backbone
        self.batch_size = batch_size
        self._features: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._features)

    @torch.no_grad()
    def features(self, phrases: list[str]) -> torch.Tensor:
        """(len(phrases), embed_dim) normalised features, in the order given."""
        todo = sorted({p for p in phrases if p not in self._features})
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            feats = normalized(encode_text(self.backbone.model, self.backbone.tokenize(chunk)))
            self._features.update(zip(chunk, feats))
        return torch.stack([self._features[p] for p in phrases])


class StablePhraseFeatures:
    """Plain-phrase features whose values never depend on what was encoded before.

    A phrase's features differ in the last bits with the batch it is encoded in (the truncation
    length and matrix shapes change), so a cache filled in the order batches happen to run makes a
    resumed or sharded run drift from an uninterrupted one. Either every phrase the run can draw is
    encoded up front in a fixed order (small banks: the ``shapes`` world), or each batch encodes its
    own phrases in a fresh cache (large banks, where a run-long cache would not fit in memory anyway).

    Args:
        backbone: the frozen CLIP.
        concepts: per image, the concepts the regulariser draws from.
        bank: concept -> phrases.
        limit: largest number of distinct phrases encoded up front.
        precision: the training precision they are encoded in (see :mod:`searle_core.infra.device`).
    """

    def __init__(
        self,
        backbone: Backbone,
        concepts: list[list[str]],
        bank: PhraseBank,
        limit: int = 50_000,
        precision: str = "auto",
    ):
        self.backbone = backbone
        used = {c for cs in concepts for c in cs}
        count = sum(len(bank.get(c, ())) for c in used)
        self.shared: PhraseFeatureCache | None = None
        if count <= limit:
            self.shared = PhraseFeatureCache(backbone)
            with train_autocast(backbone.device, precision):
                self.shared.features(sorted({p for c in used for p in bank.get(c, ())}))

    def cache(self) -> PhraseFeatureCache:
        """The cache to use for one batch."""
        return self.shared if self.shared is not None else PhraseFeatureCache(self.backbone)


@dataclass
class PhraseDraw:
    """Which phrase each regularised image gets at one step."""

    rows: list[int]  # positions (in the rows asked for) that received a phrase
    phrases: list[str]  # the original phrases
    pseudo_phrases: list[str]  # the same with their concept replaced by '$'


#: How :class:`PhraseSampler` picks an image's phrase at each step.
DRAWS = ("phrase", "concept")


class PhraseSampler:
    """Draws, for each image, one phrase of one of its concepts.

    Two ways to draw, as the authors' two scripts do:

    - ``draw="phrase"`` (OTI, their ``oti_inversion.py``): the phrases of all the image's usable
      concepts form one list (concept by concept, best first, each concept's phrases in the bank's
      order) and one phrase is drawn uniformly from it, so a concept with more phrases is drawn more
      often. One draw from the stream per image (``rng.choice`` over the list, as their
      ``random.choice(range(len(phrases)))``).
    - ``draw="concept"`` (φ, their ``train_phi.py``; PALAVRA): a concept uniformly from the image's
      usable concepts, then one of its phrases uniformly. Two draws per image.

    Images whose concepts have no phrase in the bank are left out of the regulariser rather than
    failing: the paper drops concepts without valid phrases, so an image may lose all of them (the
    authors' OTI would stop there with an ``IndexError``).

    Args:
        concepts: for each image, its associated concepts (best first; already cut to the top k).
        bank: concept -> phrases, every phrase containing its concept.
        rng: the random stream (seeded by the caller for determinism).
        draw: ``"phrase"`` (uniform over the flat list of the image's phrases: OTI) or
            ``"concept"`` (a concept, then one of its phrases: φ). No default: each caller says which.
        replace_all: replace every occurrence of the concept (φ, as the authors' ``train_phi.py``)
            instead of the first (OTI, as their ``oti_inversion.py``).
    """

    def __init__(
        self,
        concepts: list[list[str]],
        bank: PhraseBank,
        rng: random.Random,
        *,
        draw: str,
        replace_all: bool = False,
    ):
        if draw not in DRAWS:
            raise ValueError(f"draw must be one of {DRAWS}, got {draw!r}")
        # Concepts were associated over the whole vocabulary; those without usable phrases are
        # skipped here, so an image may keep fewer than it was given (as in the authors' code).
        self.usable = [[c for c in cs if bank.get(c)] for cs in concepts]
        self.bank = bank
        self.rng = rng
        self.mode = draw
        self.replace = replace_every if replace_all else replace_concept
        # OTI's flat lists: (concept, phrase) of every phrase of every usable concept.
        self._flat = [[(c, p) for c in cs for p in bank[c]] for cs in self.usable] if draw == "phrase" else None

    def _pick(self, row: int) -> tuple[str, str]:
        if self.mode == "phrase":
            return self.rng.choice(self._flat[row])
        concept = self.rng.choice(self.usable[row])
        return concept, self.rng.choice(self.bank[concept])

    def draw(self, rows: list[int] | None = None) -> PhraseDraw:
        """One phrase for each of the given images (all images if ``rows`` is None)."""
        rows = range(len(self.usable)) if rows is None else rows
        out = PhraseDraw([], [], [])
        for position, row in enumerate(rows):
            if not self.usable[row]:
                continue
            concept, phrase = self._pick(row)
            out.rows.append(position)
            out.phrases.append(phrase)
            out.pseudo_phrases.append(self.replace(phrase, concept))
        return out


class TokenCache:
    """Tokenized prompts memoised by text (tokenizing is pure Python and adds up over 350 steps)."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self._tokens: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        todo = sorted({t for t in texts if t not in self._tokens})
        if todo:
            self._tokens.update(zip(todo, self.backbone.tokenize(todo)))
        return torch.stack([self._tokens[t] for t in texts])
