"""LinCIR (Gu et al., CVPR 2024): φ trained from text alone by self-masking projection. φ maps a caption's raw
text features plus noise, ``t + u·ε``, to a token; the caption with its keywords (runs of NOUN, PROPN, ADJ, DET
words) replaced by ``$`` is encoded with that token and the loss is the MSE to t. Queries: SEARLE's prompt.

As the official code (navervision/lincir): its caption cleaning and masking, SEARLE's φ, AdamW (constant lr),
drop_last, its corpora and checkpoints; ``LincirConfig()`` is its train_phi.py's defaults, ``.official()`` its
README's run. Where it differs: ``$`` with spaces around it (their added ``[$]`` token splits words alike), no EMA,
the last φ kept (not the best on CIRR val), and offline (the world) ``closed-class`` keywords instead of spaCy's.
"""

from __future__ import annotations

import itertools
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from searle_core.baselines.training import network_tokens
from searle_core.clip.backbone import Backbone
from searle_core.datasets.base import CaptionCorpus, CIRBenchmark
from searle_core.datasets.features import image_features
from searle_core.datasets.loaders import read_captions
from searle_core.infra.device import eval_precision, grad_scaler, scaled_step, train_autocast
from searle_core.infra.errors import InputError
from searle_core.infra.files import load_torch_file
from searle_core.method.encoding import encode_text, encode_token_embeddings
from searle_core.method.phi import Phi

PSEUDO_WORD = "$"
FALLBACK_PROMPT = "a photo of $"
#: The official training corpora (``loader.build_loader``): Hugging Face datasets, their ``text`` column.
OFFICIAL_CORPORA = (
    "dangne/gcc_caption_only",
    "FredZhang7/stable-diffusion-prompts-2.47M",
    "Geonmo/midjourney-prompts-only",
)

_PUNCTUATION = re.compile(r"^[\W_]+$")


def _runs(tagged) -> list[str]:
    """Maximal runs of words tagged as keywords, in order, from ``(word, is_keyword)`` pairs."""
    return [" ".join(w for w, _ in run) for keep, run in itertools.groupby(tagged, key=lambda t: t[1]) if keep]


@cache
def closed_class() -> frozenset[str]:
    """Words that are never NOUN, PROPN, ADJ or DET for spaCy's English tagger (they break keyword runs)."""
    text = resources.files("searle_core").joinpath("data_files", "closed_class_words.txt").read_text(encoding="utf-8")
    return frozenset(w for line in text.splitlines() if not line.startswith("#") for w in line.split())


def keyword_runs(caption: str) -> list[str]:
    """Maximal runs of words outside English's closed classes, punctuation and digits (the offline approximation)."""
    closed = lambda w: w in closed_class() or _PUNCTUATION.match(w) or w.replace(".", "").isdigit()
    return _runs((w, not closed(w)) for w in caption.split())


def tagged_keyword_runs(nlp: Callable) -> Callable[[str], list[str]]:
    """The official keywords: maximal runs of the tokens a spaCy-like ``nlp`` tags NOUN, PROPN, ADJ or DET."""
    return lambda caption: _runs((t.text, t.pos_ in ("NOUN", "PROPN", "ADJ", "DET")) for t in nlp(caption))


def spacy_keyword_runs(model: str = "en_core_web_sm") -> Callable[[str], list[str]]:
    """The official keywords with spaCy's ``model``, or one message saying how to get it."""
    try:
        import spacy  # optional, only for the official tagger

        return tagged_keyword_runs(spacy.load(model))
    except (ImportError, OSError) as err:
        raise InputError(
            f"LinCIR's keywords are spaCy's {model!r} tags, as the official code ({str(err).splitlines()[0]}): "
            f"pip install spacy && python -m spacy download {model}, or choose the closed-class approximation "
            "(--lincir-keywords closed-class)"
        ) from None


def clean_caption(caption: str | None, tokenizer=None, context: int = 75) -> str:
    """The official ``clean_caption``: ``<PERSON>`` (GCC's) -> person, lower case, no ``$``, cut to ``context``
    BPE tokens of ``tokenizer`` (an open_clip tokenizer) before any masking."""
    caption = (caption or "").replace("<PERSON>", "person").lower().replace(PSEUDO_WORD, "").strip()
    ids = tokenizer.encode(caption) if hasattr(tokenizer, "encode") else []
    return tokenizer.decode(ids[:context]).strip() if len(ids) > context else caption


def mask_keywords(caption: str, keywords: list[str], rng: random.Random) -> tuple[str, bool]:
    """The official replacement of ``keywords`` by ``$``; where one is missing verbatim (or there is none),
    a random word of the caption is replaced instead and the loop stops (``True``: drawn, to redraw next visit)."""
    replaced = caption
    for keyword in keywords or [""]:
        if not keyword or keyword not in caption:
            replaced = replaced.replace(rng.sample(caption.split(" "), 1)[0], f" {PSEUDO_WORD} ")
            return " ".join(replaced.split()), True
        replaced = replaced.replace(keyword, f" {PSEUDO_WORD} ")
    return " ".join(replaced.split()), False


@dataclass(frozen=True)
class MaskedCaption:
    """A training pair: the cleaned caption and its masked form (``drawn``: a random word, redrawn every visit
    from ``keywords``)."""

    caption: str
    masked: str
    drawn: bool = False
    keywords: tuple[str, ...] = ()


def mask_corpus(captions: list[str], seed: int, keywords="spacy", tokenizer=None) -> list[MaskedCaption]:
    """Every caption cleaned (cut by ``tokenizer``) and its keywords masked: ``keywords`` is ``spacy`` (the
    official), ``closed-class`` or a function caption -> keyword runs."""
    if not callable(keywords) and keywords not in ("closed-class", "spacy"):
        raise InputError(f"LinCIR keywords {keywords!r}: expected 'spacy' or 'closed-class'")
    find = keywords if callable(keywords) else spacy_keyword_runs() if keywords == "spacy" else keyword_runs
    rng, out = random.Random(seed), []
    for caption in (clean_caption(c, tokenizer) for c in captions):  # the first keyword always leaves a `$`
        masked, drawn = mask_keywords(caption, keywords := find(caption), rng)
        out.append(MaskedCaption(caption, masked, drawn, tuple(keywords) if drawn else ()))
    return out


def caption_corpus(given: str) -> CaptionCorpus:
    """``--captions``: the official caption sets by name (:data:`OFFICIAL_CORPORA`; ``official``: all three), a
    ``.parquet`` / ``.jsonl`` file in their schema, or a file :func:`read_captions` reads; read on first use."""
    kind = {".parquet": "parquet", ".jsonl": "json"}.get(Path(given).suffix.lower())
    if given != "official" and given not in OFFICIAL_CORPORA and not kind:
        return read_captions(given)
    if kind and not Path(given).is_file():
        raise InputError(f"--captions {given}: no such file")
    sources = OFFICIAL_CORPORA if given == "official" else (given,)
    stamp = f"{Path(given).stat().st_size}-{Path(given).stat().st_mtime_ns}" if kind else ""  # names its content
    return CaptionCorpus(
        f"datasets:{','.join(sources)}:{stamp}", lambda: [c for s in sources for c in _hf_text(s, kind)]
    )


def _hf_text(source: str, kind: str | None) -> list[str]:
    """The ``text`` column of a caption set on the Hugging Face Hub or of a local file, streamed (no cache)."""
    try:
        import datasets  # optional (the `lincir` extra)

        rows = datasets.load_dataset(kind or source, data_files=kind and source, split="train", streaming=True)
        return [row["text"] or "" for row in rows]
    except Exception as err:  # not installed, offline, a wrong name, no 'text' column: what is raised varies
        raise InputError(
            f"--captions {source}: not read ({type(err).__name__}: {str(err).splitlines()[0][:200]}); it needs "
            "`pip install datasets` and, offline, a local .parquet or .jsonl copy of it with a 'text' column"
        ) from None


@dataclass(frozen=True)
class LincirConfig:
    """LinCIR's φ and its training; the defaults are the official train_phi.py's argparse defaults."""

    steps: int = 50_000
    batch_size: int = 256  # drop_last: a corpus smaller than a batch is one batch
    lr: float = 1e-4  # constant
    weight_decay: float = 0.01
    noise: float = 1.0  # scale of the noise added to the text features
    dropout: float = 0.5
    l2_normalize: bool = False  # normalise φ's input after the noise, and at query time (official flag)
    keywords: str = "spacy"  # or "closed-class" (the offline approximation)
    max_captions: int = 0  # captions of the corpus used (0: all)
    seed: int = 42  # initialisation, shuffling, noise and the keyword fallback
    precision: str = "fp32"  # or auto / fp16 / bf16 (autocast on CUDA)

    @classmethod
    def official(cls, **changes) -> LincirConfig:
        """The official README's run: 8 GPUs × 64 = 512 captions a batch, 20,000 steps, fp16 (it also keeps the
        best φ on CIRR val every 1,000 steps; here the last, as a zero-shot method's)."""
        return cls(**{"steps": 20_000, "batch_size": 512, "precision": "fp16", **changes})


def lincir_loss(
    phi: Phi, backbone: Backbone, original: torch.Tensor, masked: torch.Tensor, config: LincirConfig, generator=None
) -> torch.Tensor:
    """MSE between the features of the (N, L) tokenised masked captions, φ(t + noise · u · ε) in *every* ``$``
    row, and the originals' raw text features t."""
    u = torch.rand(original.shape[0], 1, generator=generator).to(original.device)
    eps = torch.randn(original.shape, generator=generator).to(original.device)
    noisy = original + config.noise * u * eps
    tokens = phi(F.normalize(noisy, dim=-1) if config.l2_normalize else noisy)
    embeddings = backbone.model.token_embedding(masked)
    rows = (masked == backbone.dollar_token_id).unsqueeze(-1)
    filled = torch.where(rows, tokens.to(embeddings.dtype).unsqueeze(1).expand_as(embeddings), embeddings)
    return F.mse_loss(encode_token_embeddings(backbone.model, masked, filled).float(), original.float())


@torch.no_grad()
def prepare_corpus(backbone: Backbone, captions: list[str], config: LincirConfig, batch: int = 1024):
    """Every caption's raw features t (CPU, once), its masked tokens, the share that fell back to "a photo of $",
    and the captions whose masked word is redrawn at every visit (row -> caption, keywords)."""
    if config.max_captions:
        captions = captions[: config.max_captions]
    if not captions:
        raise InputError("LinCIR trains on captions: the corpus is empty")
    masked = mask_corpus(captions, config.seed, config.keywords, backbone.tokenizer)
    originals, tokens, flagged = [], [], 0
    for start in range(0, len(masked), batch):
        chunk = masked[start : start + batch]
        with eval_precision(backbone.device):
            originals.append(encode_text(backbone.model, backbone.tokenize([m.caption for m in chunk])).float().cpu())
        ids, lost = _masked_tokens(backbone, [m.masked for m in chunk])
        flagged += lost
        tokens.append(ids)
    drawn = {i: (m.caption, list(m.keywords)) for i, m in enumerate(masked) if m.drawn}
    return torch.cat(originals), torch.cat(tokens), flagged / len(masked), drawn


def _masked_tokens(backbone: Backbone, masked: list[str]) -> tuple[torch.Tensor, int]:
    """Tokens of masked captions (CPU); one whose ``$`` the 77-token context cut off is "a photo of $", as the
    official; and how many were."""
    ids = backbone.tokenize(masked).cpu()
    lost = ~(ids == backbone.dollar_token_id).any(dim=1)
    ids[lost] = backbone.tokenize([FALLBACK_PROMPT]).cpu()
    return ids, int(lost.sum())


def train_lincir(
    backbone: Backbone, captions: list[str], config: LincirConfig = LincirConfig(), progress: bool = True
) -> tuple[Phi, dict]:
    """Train φ on a text corpus; returns it (eval mode) and ``{"history", "train_seconds", ...}``."""
    start = time.perf_counter()
    original, masked_tokens, fallback_share, drawn = prepare_corpus(backbone, captions, config)
    torch.manual_seed(config.seed)
    generator, rng = torch.Generator().manual_seed(config.seed), random.Random(config.seed + 1)
    phi = Phi.for_backbone(backbone, config.dropout).to(backbone.device).train()
    optimizer = torch.optim.AdamW(phi.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n, device, scaler = len(original), backbone.device, grad_scaler(backbone.device, config.precision)
    batch = min(config.batch_size, n)
    history, order, cursor = [], torch.randperm(n, generator=generator), 0
    for step in tqdm(range(config.steps), desc="LinCIR φ", disable=not progress):
        if cursor + batch > n:  # drop_last, then a fresh shuffle
            order, cursor = torch.randperm(n, generator=generator), 0
        idx = order[cursor : cursor + batch]
        cursor += batch
        tokens = masked_tokens[idx]
        if redraw := [(j, drawn[i]) for j, i in enumerate(idx.tolist()) if i in drawn]:  # the official redraw
            texts = [mask_keywords(*caption_keywords, rng)[0] for _, caption_keywords in redraw]
            tokens[[j for j, _ in redraw]] = _masked_tokens(backbone, texts)[0]
        with train_autocast(device, config.precision):
            loss = lincir_loss(phi, backbone, original[idx].to(device), tokens.to(device), config, generator)
        optimizer.zero_grad(set_to_none=True)
        scaled_step(loss, optimizer, scaler)
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
