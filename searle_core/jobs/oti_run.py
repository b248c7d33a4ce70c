"""``searle oti``: every image of a dataset inverted in batches into a run folder, resumable and shardable. The
folder holds ``manifest.json``, ``inputs.pt`` (names, raw CLIP features, top concepts: φ reads them too),
``chunks/*.pt`` (finished batches) and at the end ``tokens.pt`` (EMA ``tokens``, last ``raw_tokens``) and
``log.csv``. Batches are seeded by the run seed and their image names, so a resumed or sharded run (rank ``r``
takes batches ``r, r+W, ...``) gives one uninterrupted process's tokens (bit for bit on CPU)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from searle_core.clip.backbone import Backbone, weights_key
from searle_core.datasets.base import ImageSource
from searle_core.datasets.features import image_features, preprocess_name
from searle_core.infra import distributed as dist
from searle_core.infra.device import training_precision
from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_save, atomic_write_json, load_torch_file
from searle_core.jobs.run_folder import MANIFEST, fingerprint, open_run, read_manifest, unlock_run, write_csv
from searle_core.method.oti import InvertedBatch, OTIConfig, invert_images

INPUTS, TOKENS, CHUNKS, LOG = "inputs.pt", "tokens.pt", "chunks", "log.csv"


@dataclass(frozen=True)
class OTIRunConfig:
    """What determines a run's tokens besides the images and the backbone; ``stored_concepts`` are
    kept per image in ``inputs.pt`` (φ draws from 150, OTI from 15)."""

    oti: OTIConfig = OTIConfig()
    batch_size: int = 32
    seed: int = 42
    stored_concepts: int = 150


@dataclass
class RunInputs:
    """Names, raw ``encode_image`` features (φ's input) and concepts of a run's images (``inputs.pt``)."""

    names: list[str]
    features: torch.Tensor
    concepts: list[list[str]] | None


@dataclass
class OTIRunFolder:
    """A finished OTI run folder's content: ``tokens[i]`` is the token of ``inputs.names[i]``."""

    folder: Path
    inputs: RunInputs
    tokens: torch.Tensor
    manifest: dict

    @property
    def names(self) -> list[str]:
        return self.inputs.names

    def as_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.tokens))


def vocabulary_fingerprint(vocabulary) -> str | None:
    if vocabulary is None:
        return None
    associations = getattr(vocabulary, "associations", None)  # concepts from a file: which image got which counts
    read = [sorted(associations.items())] if associations is not None else []
    return fingerprint(list(vocabulary.concepts), sorted(vocabulary.phrase_bank.items()), *read)


def inputs_key(backbone: Backbone, names: list[str], vocabulary, stored_concepts: int) -> dict:
    """The hyper-parameters ``inputs.pt`` depends on: the CLIP, the images and the vocabulary."""
    identity = {"backbone": backbone.name, "weights": weights_key(backbone), "preprocess": preprocess_name(backbone)}
    images = {"images": len(names), "names": fingerprint(names)}
    stored = stored_concepts if vocabulary is not None else 0
    return {**identity, **images, "stored_concepts": stored, "vocabulary": vocabulary_fingerprint(vocabulary)}


@torch.no_grad()
def compute_inputs(
    backbone: Backbone, source: ImageSource, names: list[str], vocabulary, top_k: int, batch_size=256, progress=True
) -> RunInputs:
    """Raw features (each rank encodes whole batches of the one-process grid: the same numbers) and each
    image's ``top_k`` concepts (by name when the vocabulary was read from a concepts file)."""
    chunks = [names[i : i + batch_size] for i in range(0, len(names), batch_size)]
    mine = dist.shard_indices(len(chunks))
    local, show = None, progress and dist.is_main()
    if mine:
        mine_names = [n for c in mine for n in chunks[c]]
        local = image_features(backbone, source, mine_names, batch_size, show, cache=False, normalize=False)
    rows: dict[int, torch.Tensor] = {}
    for chunk_ids, feats in dist.all_gather_objects((mine, local)):
        if chunk_ids:
            rows.update(zip(chunk_ids, feats.split([len(chunks[c]) for c in chunk_ids])))
    features = torch.cat([rows[c] for c in range(len(chunks))]) if chunks else torch.empty(0, backbone.embed_dim)
    concepts = None
    if vocabulary is not None and getattr(vocabulary, "associations", None) is not None:
        concepts = vocabulary.concepts_of(names, top_k)
    elif vocabulary is not None:
        if dist.is_main():  # in slices: a 100k x 20k similarity matrix would not fit in memory
            parts = (features[i : i + 4096] for i in range(0, len(names), 4096))
            concepts = [c for part in parts for c in vocabulary.associate(backbone, part, top_k)]
        concepts = dist.broadcast_object(concepts)
    return RunInputs(names, features, concepts)


def save_inputs(inputs: RunInputs, path: Path) -> None:
    vocab = sorted({c for cs in inputs.concepts or [] for c in cs})
    index = {c: i for i, c in enumerate(vocab)}
    table = torch.full((len(inputs.names), max(map(len, inputs.concepts or []), default=0)), -1, dtype=torch.int32)
    for row, cs in enumerate(inputs.concepts or []):
        table[row, : len(cs)] = torch.tensor([index[c] for c in cs], dtype=torch.int32)
    table = table if inputs.concepts is not None else None
    atomic_save({"names": inputs.names, "features": inputs.features, "concept_names": vocab, "concepts": table}, path)


def load_inputs(path: Path) -> RunInputs:
    data = load_torch_file(path, "OTI run inputs file (remove it: it is recomputed on --resume)")
    table = data.get("concepts")
    concepts = None if table is None else [[data["concept_names"][i] for i in row if i >= 0] for row in table.tolist()]
    return RunInputs(list(data["names"]), data["features"], concepts)


def run_oti(
    backbone: Backbone,
    source: ImageSource,
    names: list[str],
    vocabulary,
    folder: str | Path,
    config: OTIRunConfig = OTIRunConfig(),
    resume: bool = False,
    force: bool = False,
    checkpoint_every: int = 10,
    progress: bool = True,
    info: dict | None = None,
    on_batch: Callable[[int, list[str], torch.Tensor], None] | None = None,
) -> OTIRunFolder | None:
    """Invert every named image (batches: consecutive slices of ``names``) into ``folder``; the run on rank 0,
    ``None`` elsewhere. ``force``: as :func:`open_run`; ``on_batch(index, names, tokens)`` runs after each batch."""
    folder = Path(folder)
    if len(set(names)) != len(names):
        raise InputError("image names must be unique: tokens are stored by name")
    vocabulary = vocabulary if vocabulary is not None and config.oti.lambda_gpt > 0 else None
    hyper = {"oti": config.oti, "batch_size": config.batch_size, "seed": config.seed}
    hyper |= inputs_key(backbone, names, vocabulary, config.stored_concepts)
    hyper["precision"] = training_precision(backbone.device, config.oti.precision, backbone.token_dim)
    outputs = [folder / MANIFEST, folder / INPUTS, folder / TOKENS, folder / LOG, *(folder / CHUNKS).glob("*.pt")]
    try:
        manifest, _ = open_run(folder, "oti", hyper, info or {}, resume, force, outputs)
        inputs = load_inputs(folder / INPUTS) if (folder / INPUTS).is_file() else None
        if inputs is not None and (inputs.names != names or (inputs.concepts is None) != (vocabulary is None)):
            inputs = None  # a forced resume over other images or vocabulary: inputs are computed anew
        if inputs is None:
            inputs = compute_inputs(backbone, source, names, vocabulary, config.stored_concepts, progress=progress)
            if dist.is_main():
                save_inputs(inputs, folder / INPUTS)
        done, log = _load_chunks(folder, names, force)
        bank = vocabulary.phrase_bank if vocabulary else None
        parts = dist.gather_objects(
            _invert(backbone, inputs, bank, folder, config, done, checkpoint_every, progress, on_batch)
        )
        result = None
        if dist.is_main():
            for tokens_part, log_part in parts:
                done.update(tokens_part)
                log += log_part
            result = _finish(folder, inputs, done, log, manifest)
        dist.barrier()
        return result
    finally:
        unlock_run(folder)


def _load_chunks(folder: Path, names: list[str], force: bool) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Tokens and batch log rows so far (``force``: tokens of images no longer in the run are dropped)."""
    known, done, log = set(names), {}, []
    if (folder / TOKENS).is_file():  # a finished run being resumed: nothing left to do
        data = load_torch_file(folder / TOKENS, "OTI tokens file")
        done.update((n, t) for n, t in zip(data["names"], data["tokens"]) if n in known)
    for path in sorted((folder / CHUNKS).glob("*.pt")):
        part = load_torch_file(path, "OTI chunk (remove it: its batches are recomputed on --resume)")
        stray = [n for n in part["names"] if n not in known]
        if stray and not force:
            raise InputError(
                f"{path}: tokens of images that are not in this run ({stray[:3]}...); "
                "the folder belongs to another dataset or split: use another --out or --force"
            )
        done.update((n, t) for n, t in zip(part["names"], part["tokens"]) if n in known)
        log += part.get("log", [])
    return done, log


def _finish(folder: Path, inputs: RunInputs, done: dict, log: list[dict], manifest: dict) -> OTIRunFolder:
    """Merge every rank's tokens into ``tokens.pt`` and ``log.csv``, mark the run complete, drop the chunks."""
    names = inputs.names
    if missing := [n for n in names if n not in done]:
        raise RuntimeError(f"{len(missing)} images have no token after every rank finished (first: {missing[0]})")
    tokens = torch.stack([done[n] for n in names])
    raw: dict[str, torch.Tensor] = {}
    for path in ([folder / TOKENS] if (folder / TOKENS).is_file() else []) + sorted((folder / CHUNKS).glob("*.pt")):
        part = load_torch_file(path, "OTI tokens")
        if "raw_tokens" in part:
            raw.update(zip(part["names"], part["raw_tokens"]))
    manifest["complete"] = True
    data = {"names": names, "tokens": tokens}
    if all(n in raw for n in names):
        data["raw_tokens"] = torch.stack([raw[n] for n in names])
    hyper, version = manifest["hyperparameters"], manifest["code_version"]
    atomic_save({**data, "hyperparameters": hyper, "code_version": version}, folder / TOKENS)
    atomic_write_json(manifest, folder / MANIFEST)
    if log:
        write_csv(sorted(log, key=lambda r: r["batch"]), folder / LOG)
    for path in (folder / CHUNKS).glob("*.pt"):  # merged into tokens.pt
        path.unlink()
    return OTIRunFolder(folder, inputs, tokens, manifest)


def _invert(
    backbone, inputs: RunInputs, bank, folder: Path, config: OTIRunConfig, done: dict, every: int, progress, on_batch
):
    """This rank's batches not done yet: their tokens and log rows. A chunk of up to ``every`` batches is rewritten
    after each, so every finished batch is on disk at once while files and bytes rewritten stay bounded."""
    names, bs = inputs.names, config.batch_size
    n_batches = -(-len(names) // bs)
    todo = [b for b in dist.shard_indices(n_batches) if not all(n in done for n in names[b * bs : (b + 1) * bs])]
    session, new, log, group = uuid.uuid4().hex[:8], {}, [], []

    def save_group() -> None:
        if group:
            names_, tokens, raw, rows = zip(*group)
            chunk = {"names": [n for b in names_ for n in b], "tokens": torch.cat(tokens), "raw_tokens": torch.cat(raw)}
            chunk["log"] = list(rows)
            atomic_save(chunk, folder / CHUNKS / f"r{dist.rank()}-{session}-{(len(log) - 1) // every:09d}.pt")

    def record(batch: InvertedBatch) -> None:
        n, last = len(batch.names), {k: v[-1] for k, v in batch.result.history.items() if v}
        row = {"batch": batch.index, "rank": dist.rank(), "images": n, "seconds": batch.seconds}
        row |= {"images_per_s": n / batch.seconds, **last}
        new.update(zip(batch.names, batch.tokens))
        group.append((batch.names, batch.tokens, batch.result.raw_tokens.float().cpu(), row))
        log.append(row)
        save_group()
        if len(group) >= every:
            group.clear()
        if on_batch is not None:
            on_batch(batch.index, batch.names, batch.tokens)

    # OTI's targets are the normalised features, as searle-oti's (cosine ignores the scale).
    targets, concepts = F.normalize(inputs.features.float(), dim=-1), inputs.concepts if bank is not None else None
    show, desc = progress and dist.is_main(), f"OTI rank 0/{dist.world_size()}" if dist.world_size() > 1 else "OTI"
    try:
        invert_images(
            backbone, targets, names, concepts, bank, config.oti, bs, config.seed, show, done, record, todo, desc=desc
        )
    finally:
        save_group()  # already on disk unless a save itself was interrupted: write it again
    return new, log


def kept_batches(folder: str | Path) -> int:
    """Finished batches an interrupted run keeps in ``folder``'s chunks, for the exit line."""
    kept = 0
    for path in (Path(folder) / CHUNKS).glob("*.pt"):
        try:
            kept += len(torch.load(path, weights_only=True).get("log", []))
        except Exception:  # a damaged chunk is reported by --resume, not by the exit line
            continue
    return kept


def load_oti_run(folder: str | Path) -> OTIRunFolder:
    """A finished run's inputs, tokens and manifest (``FileNotFoundError`` if there is none)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("kind") != "oti":
        raise FileNotFoundError(
            f"{folder} holds no OTI run (no {MANIFEST}); create one with `searle oti --out {folder}`"
        )
    if not (folder / TOKENS).is_file():
        raise FileNotFoundError(
            f"the OTI run in {folder} is not finished (no {TOKENS}); finish it with "
            f"`searle oti ... --out {folder} --resume`"
        )
    inputs = load_inputs(folder / INPUTS)
    data = load_torch_file(folder / TOKENS, "OTI tokens file")
    if list(data["names"]) != inputs.names:
        raise InputError(f"{folder}: {TOKENS} and {INPUTS} list different images; rerun with --force")
    return OTIRunFolder(folder, inputs, data["tokens"], manifest)
