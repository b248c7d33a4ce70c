"""Dataset-scale OTI runs: resumed == uninterrupted, hyper-parameter checks, run-folder files."""

import csv
import json
import pickle

import pytest
import torch

from searle_core.infra.files import atomic_save
from searle_core.jobs import OTIRunConfig, load_oti_run, run_oti
from searle_core.jobs.run_folder import hyperparameter_changes
from searle_core.method.oti import OTIConfig, batch_seed, oti
from searle_core.world import ShapesWorld, WorldConfig
from searle_core.world.setup import world_vocabulary

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = OTIRunConfig(oti=OTIConfig(steps=3), batch_size=3, seed=5)


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def world_images():
    world = ShapesWorld(WorldConfig.quick())
    return world.images, world.pretrain_names()[:10]


@pytest.fixture(scope="module")
def vocabulary():
    return world_vocabulary()


@pytest.fixture(scope="module")
def uninterrupted(random_backbone, world_images, vocabulary, tmp_path_factory):
    source, names = world_images
    folder = tmp_path_factory.mktemp("oti-full")
    return run_oti(random_backbone, source, names, vocabulary, folder, CONFIG, progress=False)


def interrupt_after(k: int, calls: list):
    def on_batch(b, names, tokens):
        calls.append(b)
        if len(calls) == k:
            raise Interrupted(f"simulated kill after {k} batches")

    return on_batch


@pytest.mark.parametrize("checkpoint_every", [1, 3])
def test_resumed_run_equals_uninterrupted(
    random_backbone, world_images, vocabulary, uninterrupted, tmp_path, checkpoint_every
):
    source, names = world_images
    calls: list[int] = []
    with pytest.raises(Interrupted):
        run_oti(
            random_backbone,
            source,
            names,
            vocabulary,
            tmp_path,
            CONFIG,
            checkpoint_every=checkpoint_every,
            progress=False,
            on_batch=interrupt_after(2, calls),
        )
    assert not (tmp_path / "tokens.pt").exists()
    chunks = list((tmp_path / "chunks").glob("*.pt"))
    assert sum(len(torch.load(c)["names"]) for c in chunks) == 6  # both finished batches were kept
    expected = [2, 3]
    if checkpoint_every == 1:  # a hard kill loses what was not checkpointed yet: here, batch 1
        max(chunks).unlink()  # names end with the count of tokens before them: the latest sorts last
        expected = [1, 2, 3]

    resumed_calls: list[int] = []
    result = run_oti(
        random_backbone,
        source,
        names,
        vocabulary,
        tmp_path,
        CONFIG,
        resume=True,
        progress=False,
        on_batch=lambda b, n, t: resumed_calls.append(b),
    )
    assert resumed_calls == expected  # only the batches not done before the interruption
    assert result.names == uninterrupted.names == names
    assert torch.equal(result.tokens, uninterrupted.tokens)
    raw = [torch.load(f / "tokens.pt", weights_only=True)["raw_tokens"] for f in (tmp_path, uninterrupted.folder)]
    assert torch.equal(*raw)  # the non-EMA tokens survive the interruption too
    assert not list((tmp_path / "chunks").glob("*.pt"))  # merged into tokens.pt
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["complete"] and [s["resumed"] for s in manifest["sessions"]] == [False, True]
    log = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["batch"]) for r in log] == [0, 1, 2, 3]  # batches of both sessions, once each
    assert all(float(r["images_per_s"]) > 0 and float(r["total"]) > 0 for r in log)


def test_run_tokens_are_plain_oti_of_each_batch(random_backbone, uninterrupted, tmp_path):
    """Batch 1 of the run is exactly `oti` on those images with the batch's own seed."""
    run = load_oti_run(uninterrupted.folder)
    inputs, tokens = run.inputs, run.tokens
    rows = [3, 4, 5]
    seed = batch_seed(CONFIG.seed, [inputs.names[i] for i in rows])
    direct = oti(
        random_backbone,
        inputs.features[rows],
        [inputs.concepts[i] for i in rows],
        world_vocabulary().phrase_bank,
        CONFIG.oti,
        seed=seed,
    )
    torch.testing.assert_close(tokens[rows], direct.tokens, atol=1e-6, rtol=0)
    # The non-EMA tokens are kept too (the authors' oti_pseudo_tokens.pt beside the EMA ones).
    raw = torch.load(uninterrupted.folder / "tokens.pt", weights_only=True)["raw_tokens"]
    torch.testing.assert_close(raw[rows], direct.raw_tokens, atol=1e-6, rtol=0)
    assert not torch.allclose(raw, tokens)
    assert tokens.shape == (10, random_backbone.token_dim)
    assert len(inputs.concepts[0]) > CONFIG.oti.top_concepts  # φ's longer concept lists are stored too


def test_changed_hyperparameter_refused_unless_forced(random_backbone, world_images, vocabulary, tmp_path):
    source, names = world_images
    with pytest.raises(Interrupted):
        run_oti(
            random_backbone,
            source,
            names,
            vocabulary,
            tmp_path,
            CONFIG,
            progress=False,
            on_batch=interrupt_after(1, []),
        )
    changed = OTIRunConfig(oti=OTIConfig(steps=4), batch_size=3, seed=5)
    with pytest.raises(ValueError, match=r"oti\.steps: 3 in the run, 4 now"):
        run_oti(random_backbone, source, names, vocabulary, tmp_path, changed, resume=True, progress=False)
    with pytest.raises(ValueError, match="names"):
        run_oti(random_backbone, source, names[:9], vocabulary, tmp_path, CONFIG, resume=True, progress=False)
    result = run_oti(
        random_backbone, source, names, vocabulary, tmp_path, changed, resume=True, force=True, progress=False
    )
    assert result.tokens.shape[0] == 10
    sessions = result.manifest["sessions"]
    assert sessions[-1]["forced_changes"] == ["oti.steps: 3 in the run, 4 now"]
    assert result.manifest["hyperparameters"]["oti"]["steps"] == 4


def test_existing_run_needs_resume_or_force(random_backbone, world_images, uninterrupted, tmp_path):
    source, names = world_images
    with pytest.raises(ValueError, match="--resume .* --force"):
        run_oti(random_backbone, source, names, None, uninterrupted.folder, CONFIG, progress=False)
    again = run_oti(
        random_backbone, source, names, world_vocabulary(), uninterrupted.folder, CONFIG, resume=True, progress=False
    )  # finished: nothing left to do
    assert torch.equal(again.tokens, uninterrupted.tokens)
    with pytest.raises(FileNotFoundError, match="no OTI run"):
        load_oti_run(tmp_path)


def test_manifest_records_hyperparameters_and_code_version(uninterrupted):
    manifest = uninterrupted.manifest
    hyper = manifest["hyperparameters"]
    assert hyper["oti"]["steps"] == 3 and hyper["batch_size"] == 3 and hyper["seed"] == 5
    assert hyper["backbone"] == "shapes-clip" and hyper["weights"].startswith("random-")
    assert hyper["precision"] == "fp32"  # resolved from "auto" on the CPU
    assert manifest["code_version"]["package"]
    assert "git_commit" in manifest["code_version"]


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "x.pt"
    atomic_save({"a": 1}, path)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        atomic_save({"a": lambda: None}, path)  # cannot be pickled: fails mid-write
    assert torch.load(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temporary left behind


def test_hyperparameter_changes_names_nested_fields():
    assert hyperparameter_changes({"oti": {"lr": 0.02}, "seed": 1}, {"oti": {"lr": 0.01}, "seed": 1}) == [
        "oti.lr: 0.02 in the run, 0.01 now"
    ]
