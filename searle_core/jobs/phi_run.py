"""``searle train-phi``: φ from an OTI run's tokens, checkpointed every epoch and, given a validation benchmark,
validated every epoch (the manifest names the best epoch). The folder holds ``manifest.json``, ``checkpoint.pt``
(φ, optimiser, epochs, history), ``history.csv``, at the end ``phi.pt`` (the last epoch); as the authors'
``train_phi.py``, ``phi_last.pt`` every epoch and ``phi_{n}.pt`` every fifth."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from searle_core.clip.backbone import Backbone, weights_key
from searle_core.infra import distributed as dist
from searle_core.infra.device import training_precision
from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_save, atomic_write_json, load_torch_file
from searle_core.inversion.phi_files import PHI_LAST, save_phi
from searle_core.jobs.evaluation import evaluate
from searle_core.jobs.oti_run import load_oti_run
from searle_core.jobs.run_folder import MANIFEST, fingerprint, open_run, unlock_run, write_csv
from searle_core.method.phi import Phi
from searle_core.method.phi_training import PhiTrainConfig, PhiTrainingResult, train_phi
from searle_core.methods.context import MethodContext
from searle_core.methods.pipeline import gallery_features

CHECKPOINT, HISTORY, PHI = "checkpoint.pt", "history.csv", "phi.pt"
#: ``phi_{n}.pt`` every this many epochs (the authors' ``--save-frequency`` default).
SAVE_EVERY = 5
#: The validation metric a run's best epoch is chosen by: the first of these its history has.
BEST_BY = ("Recall@1", "mAP@10", "average/Recall@10")


class PhiCheckpointer:
    """Opens a φ run folder (fresh, resumed or forced) and writes its checkpoints on rank 0."""

    def __init__(self, folder, config: PhiTrainConfig, backbone: Backbone, features, tokens, resume, force, info=None):
        self.folder, self.device = Path(folder), backbone.device
        precision = training_precision(backbone.device, config.precision, backbone.token_dim)
        hyper = {"phi": config, "backbone": backbone.name, "weights": weights_key(backbone), "precision": precision}
        hyper |= {"images": int(features.shape[0]), "data": fingerprint(features.float(), tokens.float())}
        outputs = [self.folder / n for n in (MANIFEST, CHECKPOINT, HISTORY, PHI, PHI_LAST)]
        outputs += sorted(self.folder.glob("phi_[0-9]*.pt"))
        self.manifest, self.resume = open_run(self.folder, "phi", hyper, info, resume, force, outputs)

    def restore(self, phi: Phi, optimizer: torch.optim.Optimizer) -> tuple[int, list[dict]]:
        """Load the checkpoint into φ and the optimiser; returns the completed epochs and the history."""
        path = self.folder / CHECKPOINT
        if not self.resume or not path.is_file():
            return 0, []
        state = load_torch_file(path, "φ run checkpoint", map_location=self.device)
        phi.load_state_dict(state["phi"])
        optimizer.load_state_dict(state["optimizer"])
        return int(state["epoch"]), list(state["history"])

    def save(self, phi: Phi, optimizer: torch.optim.Optimizer, epoch: int, history: list[dict]) -> None:
        if not dist.is_main():
            return
        # Every random choice derives from (seed, epoch, batch): the epoch is the whole RNG state.
        state = {"phi": phi.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "history": history}
        rng, hyper = {"scheme": "derive_seed(seed, epoch, batch, purpose)"}, self.manifest["hyperparameters"]
        atomic_save({**state, "rng": rng, "hyperparameters": hyper}, self.folder / CHECKPOINT)
        # The authors' per-epoch files, after the checkpoint: a resume never lacks what they show.
        save_phi(phi, self.folder / PHI_LAST, epoch=epoch)
        if epoch % SAVE_EVERY == 0:
            save_phi(phi, self.folder / f"phi_{epoch}.pt", epoch=epoch)
        write_csv(history, self.folder / HISTORY)

    def finish(self, phi: Phi, history: list[dict]) -> None:
        if dist.is_main():
            epoch = int(history[-1]["epoch"]) if history else 0
            hyper = self.manifest["hyperparameters"]
            save_phi(phi, self.folder / PHI, epoch=epoch, history=history, hyperparameters=hyper)
            if history:
                write_csv(history, self.folder / HISTORY)
            if metric := next((m for m in BEST_BY if history and m in history[-1]), None):  # a validated run
                best = max(history, key=lambda row: row.get(metric, float("-inf")))
                self.manifest |= {"best_epoch": best["epoch"], "best_by": metric}
            self.manifest |= {"epoch": epoch, "complete": True}  # epoch: the φ epoch phi.pt holds
            atomic_write_json(self.manifest, self.folder / MANIFEST)
        dist.barrier()


def kept_epochs(folder: str | Path) -> int:
    """Finished epochs an interrupted φ run keeps in ``folder``, for the exit line."""
    path = Path(folder) / CHECKPOINT
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"]) if path.is_file() else 0
    except Exception:  # a damaged checkpoint is reported by --resume, not by the exit line
        return 0


def benchmark_validator(backbone: Backbone, bench, vocabulary=None, progress: bool = False) -> Callable[[Phi], dict]:
    """``validate(phi)``: the ``searle`` method's metrics on ``bench`` with the current φ."""
    gallery: dict = {}

    def validate(phi: Phi) -> dict:
        if not gallery:
            gallery.update(gallery_features(backbone, bench, progress=progress))
        was_training = phi.training
        ctx = MethodContext(vocabulary=vocabulary, phi=phi, progress=progress)
        result = evaluate("searle", bench, backbone, ctx, gallery)
        phi.train(was_training)
        return result.metrics

    return validate


def train_phi_in_folder(
    backbone: Backbone,
    image_features: torch.Tensor,
    oti_tokens: torch.Tensor,
    concepts: list[list[str]] | None,
    phrase_bank,
    config: PhiTrainConfig,
    out_dir: str | Path,
    validate: Callable[[Phi], dict] | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    info: dict | None = None,
) -> PhiTrainingResult:
    """``train_phi`` checkpointed in the run folder ``out_dir`` every epoch (``force``: as :func:`open_run`)."""
    try:
        checkpointer = PhiCheckpointer(out_dir, config, backbone, image_features, oti_tokens, resume, force, info)
        return train_phi(
            backbone, image_features, oti_tokens, concepts, phrase_bank, config, validate, checkpointer, progress
        )
    finally:
        unlock_run(Path(out_dir))


def run_train_phi(
    backbone: Backbone,
    tokens_dir: str | Path,
    out_dir: str | Path,
    config: PhiTrainConfig = PhiTrainConfig(),
    phrase_bank=None,
    validate: Callable[[Phi], dict] | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
) -> PhiTrainingResult:
    """Train φ into ``out_dir`` on the tokens of the finished OTI run ``tokens_dir`` (made with ``backbone``);
    ``phrase_bank`` (``None``: no regulariser) meets the concepts the run stored."""
    run = load_oti_run(tokens_dir)
    inputs, hyper = run.inputs, run.manifest.get("hyperparameters", {})
    if hyper.get("backbone") not in (None, backbone.name) or hyper.get("weights") not in (None, weights_key(backbone)):
        raise InputError(
            f"the OTI run in {tokens_dir} used backbone {hyper.get('backbone')} with weights "
            f"{hyper.get('weights')}, not {backbone.name} with {weights_key(backbone)}: φ must be "
            "trained with the CLIP its tokens came from"
        )
    if phrase_bank is not None and inputs.concepts is None:
        raise InputError(
            f"the OTI run in {tokens_dir} stored no concepts (it ran without a vocabulary); "
            "train without the regulariser (--lambda-gpt 0) or rerun OTI with one"
        )
    concepts = inputs.concepts if phrase_bank is not None else None
    return train_phi_in_folder(
        backbone, inputs.features, run.tokens, concepts, phrase_bank, config, out_dir, validate, resume, force, progress
    )
