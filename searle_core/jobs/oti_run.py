"""Dataset-scale OTI: every image of a dataset inverted in batches, resumable and shardable.

A run folder holds:

- ``manifest.json``: hyper-parameters, code version, sessions, whether the run is complete;
- ``inputs.pt``: image names, their CLIP features and their top concepts (what φ training needs too);
- ``chunks/*.pt``: tokens of the batches done so far, each on disk as soon as it finished (a chunk
  holds up to ``checkpoint_every`` batches);
- ``tokens.pt``: at the end, ``{"names", "tokens", "raw_tokens"}`` of every image, in dataset order
  (``tokens``: the EMA tokens, what ``searle-oti`` and φ use; ``raw_tokens``: the last optimised
  ones, kept as the authors' ``oti_pseudo_tokens.pt`` beside their ``ema_oti_pseudo_tokens.pt``);
- ``log.csv``: at the end, one row per batch: rank, seconds, images/s and the last step's losses.

Batch ``b`` is ``names[b*B:(b+1)*B]`` and is seeded from the run seed and its image names
(:func:`~searle_core.method.oti.batch_seed`), so its tokens do not depend on which batches ran
before it, on which process ran it, or on an interruption: a resumed run, or one sharded over
``torchrun`` processes (rank ``r`` takes batches ``r, r+W, ...``), gives the tokens of one
uninterrupted process (bit for bit on CPU).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from searle_core.clip.backbone import Backbone, weights_key
from searle_core.datasets.base import ImageSource
from searle_core.infra import distributed as dist
from searle_core.infra.device import training_precision
from searle_core.infra.errors import InputError, load_torch_file
from searle_core.infra.files import atomic_save, atomic_write_json, atomic_write_text
from searle_core.jobs.oti_inputs import (
    INPUTS,
    RunInputs,
    compute_inputs,
    load_inputs,
    save_inputs,
    vocabulary_fingerprint,
)
from searle_core.jobs.run_folder import MANIFEST, fingerprint, open_run, read_manifest, unlock_run
from searle_core.method.oti import InvertedBatch, OTIConfig, invert_images

TOKENS, CHUNKS, LOG = "tokens.pt", "chunks", "log.csv"


@dataclass(frozen=True)
class OTIRunConfig:
    """What determines a run's tokens besides the images and the backbone.

    Args:
        oti: OTI hyper-parameters (the paper's by default).
        batch_size: images optimised together (32 in the paper).
        seed: run seed; each batch's seed derives from it and the batch's names.
        stored_concepts: concepts kept per image in ``inputs.pt`` (φ draws from 150, OTI from 15).
    """

    oti: OTIConfig = OTIConfig()
    batch_size: int = 32
    seed: int = 42
    stored_concepts: int = 150


@dataclass
class OTIRunResult:
    """A finished run: ``tokens[i]`` is the token of ``names[i]``."""

    names: list[str]
    tokens: torch.Tensor
    folder: Path
    manifest: dict

    def as_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.tokens))


def _load_chunks(folder: Path, names: list[str], force: bool = False) -> tuple[dict[str, torch.Tensor], list[dict]]:
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
) -> OTIRunResult | None:
    """Invert every named image into ``folder``, resuming and sharding as described in the module.

    Args:
        backbone: the frozen CLIP.
        source: where the images come from.
        names: the images, in run order (batches are consecutive slices).
        vocabulary: concepts and phrases for the regulariser (``None`` or ``lambda_gpt=0``: none).
        folder: the run folder.
        config: hyper-parameters (compared with the folder's on resume).
        resume: continue the run in ``folder`` (a fresh start if there is none).
        force: with ``resume``, accept changed hyper-parameters; without, delete the old run.
        checkpoint_every: batches per chunk file (per process); every finished batch is saved at once.
        progress: progress bar with images/s and ETA (rank 0, its own share).
        info: free-form description kept in the manifest (dataset, split, path).
        on_batch: called after each batch with (batch index, names, tokens), e.g. to log.

    Returns:
        The tokens of every image on rank 0; ``None`` on the other ranks.
    """
    folder = Path(folder)
    if len(set(names)) != len(names):
        raise InputError("image names must be unique: tokens are stored by name")
    regularise = vocabulary is not None and config.oti.lambda_gpt > 0
    vocabulary = vocabulary if regularise else None
    hyper = {
        "oti": config.oti,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "stored_concepts": config.stored_concepts if regularise else 0,
        "backbone": backbone.name,
        "weights": weights_key(backbone),
        "preprocess": getattr(backbone.preprocess, "preprocess_id", "clip"),
        "precision": training_precision(backbone.device, config.oti.precision),
        "images": len(names),
        "names": fingerprint(names),
        "vocabulary": vocabulary_fingerprint(vocabulary),
    }
    manifest, _ = open_run(
        folder,
        "oti",
        hyper,
        info or {},
        resume,
        force,
        [folder / MANIFEST, folder / INPUTS, folder / TOKENS, folder / LOG, *(folder / CHUNKS).glob("*.pt")],
        ("an OTI run", "its tokens are deleted", "OTI run"),
    )
    try:
        return _run_locked(
            backbone, source, names, vocabulary, folder, config, manifest, force, checkpoint_every, progress, on_batch
        )
    finally:
        unlock_run(folder)


def _run_locked(
    backbone: Backbone,
    source: ImageSource,
    names: list[str],
    vocabulary,
    folder: Path,
    config: OTIRunConfig,
    manifest: dict,
    force: bool,
    checkpoint_every: int,
    progress: bool,
    on_batch: Callable | None,
) -> OTIRunResult | None:
    inputs = load_inputs(folder / INPUTS) if (folder / INPUTS).is_file() else None
    if inputs is not None and (inputs.names != names or (inputs.concepts is None) != (vocabulary is None)):
        inputs = None  # a forced resume over other images or vocabulary: inputs are computed anew
    if inputs is None:
        inputs = compute_inputs(backbone, source, names, vocabulary, config.stored_concepts, progress=progress)
        if dist.is_main():
            save_inputs(inputs, folder / INPUTS)
    done, log = _load_chunks(folder, names, force)
    new = _invert(
        backbone,
        inputs,
        vocabulary.phrase_bank if vocabulary else None,
        folder,
        config,
        done,
        checkpoint_every,
        progress,
        on_batch,
    )

    parts = dist.gather_objects(new)
    result = None
    if dist.is_main():
        for tokens_part, log_part in parts:
            done.update(tokens_part)
            log += log_part
        missing = [n for n in names if n not in done]
        if missing:
            raise RuntimeError(f"{len(missing)} images have no token after every rank finished (first: {missing[0]})")
        tokens = torch.stack([done[n] for n in names])
        raw = _raw_tokens(folder, names)
        manifest["complete"] = True
        atomic_save(
            {
                "names": names,
                "tokens": tokens,
                **({"raw_tokens": raw} if raw is not None else {}),
                "hyperparameters": manifest["hyperparameters"],
                "code_version": manifest["code_version"],
            },
            folder / TOKENS,
        )
        atomic_write_json(manifest, folder / MANIFEST)
        if log:
            _write_log(log, folder / LOG)
        for path in (folder / CHUNKS).glob("*.pt"):  # merged into tokens.pt
            path.unlink()
        result = OTIRunResult(names, tokens, folder, manifest)
    dist.barrier()
    return result


def _raw_tokens(folder: Path, names: list[str]) -> torch.Tensor | None:
    """Every image's non-EMA tokens from the chunks (and a resumed finished run's ``tokens.pt``);
    ``None`` when some image has none (chunks written before they were kept)."""
    raw: dict[str, torch.Tensor] = {}
    paths = ([folder / TOKENS] if (folder / TOKENS).is_file() else []) + sorted((folder / CHUNKS).glob("*.pt"))
    for path in paths:
        part = load_torch_file(path, "OTI tokens")
        if "raw_tokens" in part:
            raw.update(zip(part["names"], part["raw_tokens"]))
    return torch.stack([raw[n] for n in names]) if all(n in raw for n in names) else None


def _invert(
    backbone: Backbone,
    inputs: RunInputs,
    bank,
    folder: Path,
    config: OTIRunConfig,
    done: dict[str, torch.Tensor],
    checkpoint_every: int,
    progress: bool,
    on_batch: Callable | None,
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """This rank's batches that are not done; returns their tokens and log rows (also written as chunks)."""
    names, bs = inputs.names, config.batch_size
    batches = [list(range(s, min(s + bs, len(names)))) for s in range(0, len(names), bs)]
    todo = [b for b in dist.shard_indices(len(batches)) if not all(names[i] in done for i in batches[b])]
    session = uuid.uuid4().hex[:8]
    new: dict[str, torch.Tensor] = {}
    pending: dict[str, torch.Tensor] = {}
    pending_raw: dict[str, torch.Tensor] = {}  # the non-EMA tokens, merged into tokens.pt at the end
    log: list[dict] = []
    pending_log: list[dict] = []
    group = [0]

    def save_group() -> None:
        # The group's chunk is rewritten (atomically) after each of its batches, so every finished
        # batch is on disk at once; a new chunk starts every ``checkpoint_every`` batches, which
        # bounds both the number of files and the bytes rewritten per batch.
        if pending:
            atomic_save(
                {
                    "names": list(pending),
                    "tokens": torch.stack(list(pending.values())),
                    "raw_tokens": torch.stack([pending_raw[n] for n in pending]),
                    "log": pending_log,
                },
                folder / CHUNKS / f"r{dist.rank()}-{session}-{group[0]:09d}.pt",
            )

    def record(batch: InvertedBatch) -> None:
        row = {
            "batch": batch.index,
            "rank": dist.rank(),
            "images": len(batch.names),
            "seconds": batch.seconds,
            "images_per_s": len(batch.names) / batch.seconds,
            **{k: v[-1] for k, v in batch.result.history.items() if v},
        }
        new.update(zip(batch.names, batch.tokens))
        pending.update(zip(batch.names, batch.tokens))
        pending_raw.update(zip(batch.names, batch.result.raw_tokens.float().cpu()))
        log.append(row)
        pending_log.append(row)
        save_group()
        if len(pending_log) >= checkpoint_every:
            group[0] += 1
            pending.clear()
            pending_raw.clear()
            pending_log.clear()
        if on_batch is not None:
            on_batch(batch.index, batch.names, batch.tokens)

    try:
        # OTI's targets are the normalised features, as searle-oti's (cosine ignores the scale).
        invert_images(
            backbone,
            F.normalize(inputs.features.float(), dim=-1),
            names,
            inputs.concepts if bank is not None else None,
            bank,
            config.oti,
            bs,
            config.seed,
            progress=progress and dist.is_main(),
            done=done,
            on_batch=record,
            batches=todo,
            desc=f"OTI rank 0/{dist.world_size()}" if dist.world_size() > 1 else "OTI",
        )
    finally:
        save_group()  # already on disk unless a save itself was interrupted: write it again
    return new, log


def kept_batches(folder: str | Path) -> int:
    """Finished batches an interrupted run keeps in ``folder`` (its chunks' batches), for the exit line."""
    kept = 0
    for path in (Path(folder) / CHUNKS).glob("*.pt"):
        try:
            kept += len(torch.load(path, weights_only=True).get("log", []))
        except Exception:  # a damaged chunk is reported by --resume, not by the exit line
            continue
    return kept


def _write_log(rows: list[dict], path: Path) -> None:
    import csv
    import io

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["batch"]))
    atomic_write_text(text.getvalue(), path)


def load_oti_run(folder: str | Path) -> tuple[RunInputs, torch.Tensor, dict]:
    """A finished run's inputs (names, features, concepts), tokens and manifest.

    Raises:
        FileNotFoundError: the folder holds no finished OTI run.
    """
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
    return inputs, data["tokens"], manifest
