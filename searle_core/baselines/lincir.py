"""LinCIR (Gu et al., CVPR 2024): φ trained from text alone by self-masking projection. φ maps a caption's raw
text features plus noise, ``t + u·ε``, to a token; the caption with its keywords (runs of NOUN, PROPN, ADJ, DET
words) replaced by ``$`` is encoded with that token and the loss is the MSE to t. Queries: SEARLE's prompt.

As the official code (navervision/lincir): its masking, SEARLE's φ, AdamW (lr 1e-4, wd 0.01, constant), batch
256 with drop_last, fp32, and its checkpoints (``phi_best.pt`` loads). Where it differs: the corpus, a closed-class
tagger offline (``spacy`` when installed), ``$`` written with spaces around it (CLIP's BPE would not split it off
inside a word), ``steps``; no validation-chosen checkpoint (it would not be zero-shot) and no EMA.
"""

from __future__ import annotations

import itertools
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from searle_core.baselines.training import network_tokens
from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CIRBenchmark
from searle_core.datasets.features import image_features
from searle_core.infra.device import eval_precision
from searle_core.infra.errors import InputError
from searle_core.infra.files import load_torch_file
from searle_core.method.encoding import encode_text, encode_token_embeddings
from searle_core.method.phi import Phi

PSEUDO_WORD = "$"
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


def _runs(tagged) -> list[str]:
    """Maximal runs of words tagged as keywords, in order, from ``(word, is_keyword)`` pairs."""
    return [" ".join(w for w, _ in run) for keep, run in itertools.groupby(tagged, key=lambda t: t[1]) if keep]


def keyword_runs(caption: str) -> list[str]:
    """Maximal runs of keywords (words outside English's closed classes, punctuation and numbers), in order."""
    closed = lambda w: w in CLOSED_CLASS or _PUNCTUATION.match(w) or w.replace(".", "").isdigit()
    return _runs((w, not closed(w)) for w in caption.split())


def spacy_keyword_runs(model: str = "en_core_web_sm") -> Callable[[str], list[str]]:
    """The official keyword selection with spaCy (``pip install spacy`` and its English model)."""
    try:
        import spacy  # optional, only for the official tagger

        nlp = spacy.load(model)
    except (ImportError, OSError) as err:
        raise InputError(
            f"LinCIR's spaCy keywords need spacy and its model {model!r} ({err}); use keywords='closed-class'"
        ) from None
    return lambda caption: _runs((t.text, t.pos_ in ("NOUN", "PROPN", "ADJ", "DET")) for t in nlp(caption))


def clean_caption(caption: str) -> str:
    """The official ``clean_caption`` (its 75-token cut is the tokenizer's)."""
    return caption.lower().replace(PSEUDO_WORD, "").strip()


def mask_keywords(caption: str, keywords: list[str], rng: random.Random) -> str:
    """The official replacement of ``keywords`` by ``$``."""
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
    """Every caption with its keywords (``closed-class`` or ``spacy`` tagger) masked."""
    if keywords not in ("closed-class", "spacy"):
        raise InputError(f"LinCIR keywords {keywords!r}: expected 'closed-class' or 'spacy'")
    find = spacy_keyword_runs() if keywords == "spacy" else keyword_runs
    rng, out = random.Random(seed), []
    for caption in map(clean_caption, captions):
        masked = mask_keywords(caption, find(caption), rng)
        ok = PSEUDO_WORD in masked.split()  # the tokenizer's cut is checked on the tokens (prepare_corpus)
        out.append(MaskedCaption(caption, masked if ok else FALLBACK_PROMPT, not ok))
    return out


@dataclass(frozen=True)
class LincirConfig:
    """LinCIR's φ and its training: the official recipe, but its length."""

    steps: int = 50_000
    batch_size: int = 256  # drop_last: a corpus smaller than a batch is one batch
    lr: float = 1e-4  # constant
    weight_decay: float = 0.01
    noise: float = 1.0  # scale of the noise added to the text features
    dropout: float = 0.5
    l2_normalize: bool = False  # normalise φ's input after the noise, and at query time (official flag)
    keywords: str = "closed-class"  # or "spacy"
    max_captions: int = 0  # captions of the corpus used (0: all)
    seed: int = 42  # initialisation, shuffling, noise and the keyword fallback


def encode_masked(backbone: Backbone, tokens: torch.Tensor, pseudo_tokens: torch.Tensor) -> torch.Tensor:
    """Features of tokenised prompts with φ's token in *every* ``$`` row."""
    embeddings = backbone.model.token_embedding(tokens)
    is_pseudo = (tokens == backbone.dollar_token_id).unsqueeze(-1)
    filled = torch.where(is_pseudo, pseudo_tokens.to(embeddings.dtype).unsqueeze(1).expand_as(embeddings), embeddings)
    return encode_token_embeddings(backbone.model, tokens, filled)


def lincir_loss(
    phi: Phi, backbone: Backbone, original: torch.Tensor, masked: torch.Tensor, config: LincirConfig, generator=None
) -> torch.Tensor:
    """MSE between the features of the (N, L) tokenised masked captions, ``$`` = φ(t + noise · u · ε), and
    the originals' raw text features t."""
    u = torch.rand(original.shape[0], 1, generator=generator).to(original.device)
    eps = torch.randn(original.shape, generator=generator).to(original.device)
    noisy = original + config.noise * u * eps
    tokens = phi(F.normalize(noisy, dim=-1) if config.l2_normalize else noisy)
    return F.mse_loss(encode_masked(backbone, masked, tokens).float(), original.float())


@torch.no_grad()
def prepare_corpus(backbone: Backbone, captions: list[str], config: LincirConfig, batch: int = 1024):
    """Every caption's raw features t (CPU, once), its masked tokens, and the share that fell back."""
    if config.max_captions:
        captions = captions[: config.max_captions]
    if not captions:
        raise InputError("LinCIR trains on captions: the corpus is empty")
    masked = mask_corpus(captions, config.seed, config.keywords)
    fallback = backbone.tokenize([FALLBACK_PROMPT]).cpu()
    originals, tokens, flagged = [], [], sum(m.flagged for m in masked)
    for start in range(0, len(masked), batch):
        chunk = masked[start : start + batch]
        with eval_precision(backbone.device):
            originals.append(encode_text(backbone.model, backbone.tokenize([m.caption for m in chunk])).float().cpu())
        ids = backbone.tokenize([m.masked for m in chunk]).cpu()
        # the official check: a `$` cut off by the 77-token context gives "a photo of $" (flagged)
        lost = ~(ids == backbone.dollar_token_id).any(dim=1)
        ids[lost] = fallback
        flagged += int(lost.sum())
        tokens.append(ids)
    return torch.cat(originals), torch.cat(tokens), flagged / len(masked)


def train_lincir(
    backbone: Backbone, captions: list[str], config: LincirConfig = LincirConfig(), progress: bool = True
) -> tuple[Phi, dict]:
    """Train φ on a text corpus; returns it (eval mode) and ``{"history", "train_seconds", ...}``."""
    start = time.perf_counter()
    original, masked_tokens, fallback_share = prepare_corpus(backbone, captions, config)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    phi = Phi.for_backbone(backbone, config.dropout).to(backbone.device).train()
    optimizer = torch.optim.AdamW(phi.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n, device = len(original), backbone.device
    batch = min(config.batch_size, n)
    history, order, cursor = [], torch.randperm(n, generator=generator), 0
    for step in tqdm(range(config.steps), desc="LinCIR φ", disable=not progress):
        if cursor + batch > n:  # drop_last, then a fresh shuffle
            order, cursor = torch.randperm(n, generator=generator), 0
        idx = order[cursor : cursor + batch]
        cursor += batch
        loss = lincir_loss(phi, backbone, original[idx].to(device), masked_tokens[idx].to(device), config, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % max(1, config.steps // 200) == 0 or step == 0:  # ≤ 200 points in the record
            history.append({"step": step + 1, "loss": float(loss.detach())})
    seconds = time.perf_counter() - start
    return phi.eval(), {"history": history, "train_seconds": seconds, "captions": n, "fallback_share": fallback_share}


def load_lincir(path, backbone: Backbone, config: LincirConfig = LincirConfig()) -> Phi:
    """A LinCIR φ of the backbone's widths: an official checkpoint (``{"epoch", "Phi"}``), ours, or a state dict."""
    state = load_torch_file(path, "LinCIR φ checkpoint")
    state = state.get("Phi", state) if isinstance(state, dict) else state
    phi = Phi.for_backbone(backbone, config.dropout)
    try:
        phi.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, AttributeError) as err:
        raise InputError(
            f"{path}: not a LinCIR φ for {backbone.name} (expected {{'Phi': state_dict}} with widths "
            f"{backbone.embed_dim} -> {backbone.token_dim}): {str(err).splitlines()[0]}"
        ) from None
    return phi.to(backbone.device).eval()


@torch.no_grad()
def modality_gap(
    backbone: Backbone, network: torch.nn.Module, image_feats: torch.Tensor, captions: list[str], l2: bool = False
) -> dict[str, float]:
    """Mean cosine between φ's tokens of images and of their captions, and (CLIP's own gap) between their features."""
    with eval_precision(backbone.device):
        text = encode_text(backbone.model, backbone.tokenize(captions)).float().cpu()
    image_tokens, text_tokens = (network_tokens(backbone, network, x, l2) for x in (image_feats, text))
    cosine = lambda a, b: float(F.cosine_similarity(a, b, dim=-1).mean())
    gap = {"token_cosine": cosine(image_tokens, text_tokens), "feature_cosine": cosine(image_feats.float(), text)}
    return {**gap, "images": len(captions)}


def benchmark_modality_gap(
    backbone: Backbone, bench: CIRBenchmark, network: torch.nn.Module, progress: bool = False
) -> dict[str, float] | None:
    """:func:`modality_gap` on the reference images whose caption the dataset's text corpus knows, if any."""
    described = bench.text_corpus.described if bench.text_corpus is not None else {}
    names = [n for n in bench.reference_names() if n in described]
    if not names:
        return None
    feats = image_features(backbone, bench.images, names, progress=progress, normalize=False)
    return modality_gap(backbone, network, feats, [described[n] for n in names])
