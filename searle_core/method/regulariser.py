"""The phrase regulariser shared by OTI and φ: phrases about an image's concepts, with the concept
replaced by ``$``, should keep the text features of the original phrase.

The plain phrases carry no gradient, so their features are encoded once and memoised; only the ``$``
versions are encoded at each step. Which phrase, as the authors' code picks it: each image's concepts
cut to its top k (OTI 15, φ 150), then those without usable phrases skipped; OTI draws uniformly from
the flat list of the image's phrases and replaces the first occurrence of the concept, φ draws a
concept, then a phrase, and replaces every occurrence. The draws come from the caller's seeded stream,
so they follow the authors' law, not their values (their scripts use the global ``random``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from searle_core.infra.device import train_autocast
from searle_core.infra.errors import InputError
from searle_core.method.encoding import encode_text, normalized

PhraseBank = dict[str, list[str]]


def replace_concept(phrase: str, concept: str, pseudo: str = "$") -> str:
    """Replace the first occurrence of ``concept`` in ``phrase`` by the pseudo-word (OTI's regulariser)."""
    at = phrase.find(concept)
    if at < 0:
        raise InputError(f"phrase {phrase!r} does not contain its concept {concept!r}")
    # Whitespace is normalised so "a red circle" -> "a $", not "a  $ " (same tokens, tidier text).
    return " ".join(f"{phrase[:at]} {pseudo} {phrase[at + len(concept) :]}".split())


def replace_every(phrase: str, concept: str, pseudo: str = "$") -> str:
    """Replace every occurrence of ``concept`` in ``phrase`` by the pseudo-word (φ's regulariser)."""
    if concept not in phrase:
        raise InputError(f"phrase {phrase!r} does not contain its concept {concept!r}")
    return " ".join(phrase.replace(concept, f" {pseudo} ").split())


class PhraseFeatureCache:
    """Normalised text features of plain phrases, encoded once per phrase, without gradient."""

    def __init__(self, backbone, batch_size: int = 512):
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

    A phrase's features differ in the last bits with the batch it is encoded in, so a cache filled in
    the order batches run would make a resumed or sharded run drift from an uninterrupted one. Small
    banks (up to ``limit`` phrases) are encoded up front in a fixed order; with larger ones each batch
    encodes its own phrases in a fresh cache.
    """

    def __init__(
        self,
        backbone,
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
            with train_autocast(backbone.device, precision, backbone.token_dim):
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

    ``draw="phrase"`` (OTI, their ``oti_inversion.py``): one phrase uniformly from the flat list of the
    phrases of the image's usable concepts, best concept first. ``draw="concept"`` (φ, their
    ``train_phi.py``; PALAVRA): a concept uniformly, then one of its phrases. ``concepts`` are already
    cut to the top k; an image with no usable concept is left out of the regulariser (the authors'
    OTI would stop with an ``IndexError``).
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
        self.usable = [[c for c in cs if bank.get(c)] for cs in concepts]
        self.bank = bank
        self.rng = rng
        self.mode = draw
        self.replace = replace_every if replace_all else replace_concept
        # OTI's flat lists: (concept, phrase) of every phrase of every usable concept.
        self._flat = [[(c, p) for c in cs for p in bank[c]] for cs in self.usable] if draw == "phrase" else None

    def reseed(self, seed: int) -> None:
        """Restart the draws from ``seed`` (φ seeds each batch's draws by its position)."""
        self.rng = random.Random(seed)

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

    def __init__(self, backbone):
        self.backbone = backbone
        self._tokens: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        todo = sorted({t for t in texts if t not in self._tokens})
        if todo:
            self._tokens.update(zip(todo, self.backbone.tokenize(todo)))
        return torch.stack([self._tokens[t] for t in texts])
