import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import open_audit
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
#: Where tests look for the real annotation files (the authors' CIRR, FashionIQ and CIRCO releases and the
#: Open Images class list), in this order: a ../shared/data folder beside the repository, then what
#: ``make annotations`` fetches into data/annotations.
ANNOTATION_FOLDERS = (REPO.parent / "shared" / "data", REPO / "data" / "annotations")


def annotations_dir(folders=ANNOTATION_FOLDERS) -> Path:
    """The first of ``folders`` that exists; the first one if none does (a test then skips, naming it)."""
    return next((folder for folder in folders if folder.is_dir()), folders[0])


def missing_annotations(path) -> str:
    """The skip reason of a test whose real annotation file or folder is absent."""
    return f"real annotation files not found at {path}: run `make annotations` (fetches them into data/annotations)"


SHARED_DATA = annotations_dir()


@pytest.fixture(scope="session")
def paper_smoke_background(tmp_path_factory):
    """``searle paper --profile paper-smoke`` (tests/test_paper_smoke.py) in a process of its own with one
    torch thread, started by the first of the two notebook runs that needs it, so that it overlaps the
    quick profile's run (tests/test_notebooks.py, one thread too): two one-thread runs on 2 cores take
    about as long as the longer one, where one after the other took both (166 + 149 s).

    Yields:
        ``(process, run folder, stderr file)``; the process is killed if the session ends before it.
    """
    from paper_smoke_data import DEFAULT, build

    build(DEFAULT)
    out = tmp_path_factory.mktemp("paper-smoke")
    log = tmp_path_factory.mktemp("paper-smoke-log") / "stderr.txt"
    # -W always: every warning of the run itself reaches its stderr (its kernels keep their own filters)
    command = [sys.executable, "-W", "always", str(Path(sys.executable).with_name("searle")), "paper"]
    command += ["--profile", "paper-smoke"]
    command += ["--out", str(out), "--no-progress", "--cell-timeout", "600"]  # a hung kernel fails, not hangs
    with open(log, "w") as err:
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    yield proc, out / "paper-smoke", log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def paper_smoke_collected(session) -> bool:
    """Whether this session runs the paper-smoke tests (then the quick run overlaps them)."""
    return any(item.path.name == "test_paper_smoke.py" for item in session.items)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(missing_annotations(SHARED_DATA))
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: on a shared CPU, OpenMP threads waiting for each other make small ops far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def random_backbone():
    """The shapes-clip architecture with random weights: a real open_clip CLIP, built from its config."""
    from searle_core.clip.backbone import load_backbone

    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    return load_backbone("shapes-clip", pretrained=None, device="cpu")


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, random_backbone):
    """A tiny world with a random CLIP; every cache in a temporary folder."""
    from searle_core.inversion.nearest import word_token_ids
    from searle_core.notebook.study import Study
    from searle_core.world import ShapesWorld, WorldConfig, training_vocabulary
    from searle_core.world.setup import world_vocabulary

    logging.getLogger().setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEARLE_DATA", str(tmp_path_factory.mktemp("data")))
        world = ShapesWorld(WorldConfig.quick(n_pretrain=24, n_val_queries=8, gallery_per_combo=1))
        yield Study(
            "shapes",
            random_backbone,
            world.benchmark("val"),
            world_vocabulary(n_per_concept=2),
            word_token_ids(random_backbone, training_vocabulary()),
            world,
            (world.images, world.pretrain_names()),
            seed=0,
        )


@pytest.fixture
def tmp_searle_data(tmp_path, monkeypatch) -> Path:
    """``SEARLE_DATA`` (every cache: features, φ downloads, the world CLIP) in the test's folder, ``searle_data``."""
    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "searle_data"))
    return tmp_path / "searle_data"


@pytest.fixture
def opened(tmp_path, monkeypatch):
    """Every file opened during the test (a tmp ``SEARLE_DATA``); afterwards, asserts all lie in the test's
    folder or the code's, and none under ``tmp_path / "outside"`` (a stricter audit than ``audit_open``)."""
    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "searle_data"))
    recorded = open_audit.start()
    try:
        yield recorded
    finally:
        open_audit.stop()
    stray = open_audit.outside([tmp_path], forbidden=[tmp_path / "outside"])
    assert not stray, f"opened outside the dataset, run folders and cache: {stray[:5]}"


@pytest.fixture
def no_notebooks(monkeypatch):
    """A profile that loads must not start a kernel here: a regression fails at once, never runs notebooks."""
    import papermill

    from searle_core.notebook import papermill_runner

    def refuse(*args, **kwargs):
        raise AssertionError("the profile was accepted and a notebook would run")

    monkeypatch.setattr(papermill_runner, "require_kernel", refuse)
    monkeypatch.setattr(papermill, "execute_notebook", refuse)


def pytest_collection_modifyitems(items):
    """Slow tests (notebooks, the paper-smoke run, the world CLIP) after the fast tier, so a quick failure
    shows first."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)  # stable: order kept within tiers


def _world_clip_module():
    """The module that trains and loads the world CLIP's weights (``world_clip_weights``)."""
    import searle_core.world.world_clip as clip

    return clip


@contextlib.contextmanager
def _world_clip_refused(item: pytest.Item):
    """While a fast-tier test (and the fixtures it sets up) runs, the world CLIP's default weights can be
    neither trained nor loaded: such a test fails, naming itself, until it is marked ``@pytest.mark.slow``.
    Whether the weights are cached does not matter, so the check fails the same on every machine. Tiny
    world CLIPs trained into a folder of their own (``cache_dir`` given, e.g. ``python -m benchmarks world``)
    stay allowed; notebooks run in a kernel of their own and are slow anyway."""
    if item.get_closest_marker("slow"):
        yield
        return
    # Modules hold the function under their own name (from ... import): replace it everywhere it is bound.
    original, refused = _world_clip_module().world_clip_weights, []

    def refuse(cache_dir=None, *args, **kwargs):
        if cache_dir is None:
            refused.append(
                f"{item.nodeid} trains or loads the world CLIP (the default shapes-clip weights): "
                f"mark it @pytest.mark.slow"
            )
            raise RuntimeError(refused[-1])
        return original(cache_dir, *args, **kwargs)

    refuse.refused = refused  # a test of this check clears it
    with pytest.MonkeyPatch.context() as mp:
        for name, module in list(sys.modules.items()):
            if name.startswith("searle_core") and getattr(module, "world_clip_weights", None) is original:
                mp.setattr(module, "world_clip_weights", refuse)
        yield
    if refused:  # the test caught the error (a CLI that returns 2, say) and went on: it still fails
        raise RuntimeError(refused[0])


def _audited(item: pytest.Item) -> bool:
    """Whether the ``open`` audit covers ``item``: every test marked ``@pytest.mark.audit_open`` (the fault
    cases, each in the test file of the unit it exercises)."""
    return item.get_closest_marker("audit_open") is not None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    if _audited(item):  # from the first fixture on, module-scoped ones included
        open_audit.battery_start()
    with _world_clip_refused(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """The promise of every ``audit_open`` test: it opened no file outside the dataset roots, run folders and
    caches (all in the session's temporary folders), the repository's cache and the code (``open_audit``)."""
    try:
        return (yield)
    finally:
        if _audited(item):
            open_audit.battery_stop()
            stray = open_audit.battery_stray([item.config._tmp_path_factory.getbasetemp()])
            if stray:
                raise AssertionError(
                    f"{item.nodeid} opened {len(stray)} file(s) outside the dataset roots, run folders and "
                    f"caches: {stray[:5]}"
                )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with _world_clip_refused(item):
        return (yield)


def pytest_addoption(parser):
    parser.addoption(
        "--store-quick-numbers",
        action="store_true",
        help="write the quick profile's recorded numbers to tests/data/quick_profile_numbers.json "
        "(tests/test_notebooks.py::test_quick_profile_numbers) instead of only checking them",
    )
