"""One code path per artifact: the CLI's, the tables' and the notebooks' roads to OTI tokens
and to φ are the same function, so they give the same bytes."""

import pytest
import torch
import yaml

from searle_core.jobs import artifacts
from searle_core.jobs.evaluation import prepare
from searle_core.jobs.oti_run import OTIRunConfig, run_oti
from searle_core.method.oti import OTIConfig
from searle_core.methods.context import MethodContext
from searle_core.methods.pipeline import oti_reference_tokens
from searle_core.notebook import inversions
from searle_core.notebook.papermill_runner import profiles_dir
from searle_core.settings import RunSettings
from searle_core.world.setup import WORLD_PHI_EPOCHS, WORLD_PHI_IMAGES, resolved_oti_batch_size


@pytest.fixture(autouse=True)
def models_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "models_dir", lambda: tmp_path / "models")


def test_searle_oti_notebooks_and_searle_oti_runs_invert_through_one_loop(tiny_study, tmp_path):
    """The tokens of searle-oti (CLI, tables), of the notebooks' cached benchmark run and of a
    dataset-scale ``searle oti`` run are bitwise equal: one loop, one seeding, one phrase cache."""
    config = OTIConfig(steps=3)
    ctx = MethodContext(
        vocabulary=tiny_study.vocabulary, oti_config=config, oti_batch_size=4, seed=tiny_study.seed, progress=False
    )
    method = oti_reference_tokens(tiny_study.backbone, tiny_study.bench, ctx)
    notebook = inversions.benchmark_oti(tiny_study, config, batch_size=4, progress=False).as_dict()
    names = tiny_study.bench.reference_names()
    run = run_oti(
        tiny_study.backbone,
        tiny_study.bench.images,
        names,
        tiny_study.vocabulary,
        tmp_path / "run",
        OTIRunConfig(oti=config, batch_size=4, seed=tiny_study.seed),
        progress=False,
    ).as_dict()
    for name in names:
        assert torch.equal(method[name], notebook[name]), name
        assert torch.equal(method[name], run[name]), name


def test_searle_table_and_the_notebooks_train_the_same_phi(tiny_study):
    """``searle`` on shapes (prepare, used by `searle evaluate`/`searle table`) and notebooks 2-5
    (train_study_phi) with the same OTI, epochs and images get the same cached φ file and weights."""
    config = OTIConfig(steps=1)
    ctx = MethodContext(
        vocabulary=tiny_study.vocabulary,
        oti_config=config,
        oti_batch_size=resolved_oti_batch_size(RunSettings(dataset="shapes")),  # as `searle table` builds it
        seed=tiny_study.seed,
        progress=False,
        phi_epochs=2,
        phi_images=12,
    )
    prepare("searle", tiny_study.backbone, tiny_study.bench, ctx)
    notebook = inversions.train_study_phi(tiny_study, config, epochs=2, images=12, validate=False, progress=False)
    assert notebook.trained_now is False  # the CLI's φ was reused: same recipe, same key
    assert notebook.n_images == 12
    for (k, a), (_, b) in zip(ctx.phi.state_dict().items(), notebook.phi.state_dict().items()):
        assert torch.equal(a, b), k
    phis = sorted(p.name for p in artifacts.models_dir().glob("phi-*.pt"))
    assert len(phis) == 1, phis


def test_the_shapes_profile_sizes_phi_as_the_cli_defaults():
    """`searle table --dataset shapes` (MethodContext without phi_epochs/phi_images) and notebook 4
    under the shapes profile train φ with the same epochs and images."""
    profile = yaml.safe_load((profiles_dir() / "shapes.yaml").read_text())
    for stem, params in profile["notebooks"].items():
        if "phi_epochs" in params:
            assert (params["phi_epochs"], params["phi_images"]) == (WORLD_PHI_EPOCHS, WORLD_PHI_IMAGES), stem
