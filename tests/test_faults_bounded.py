"""Nothing hangs or blows up: YAML aliases and duplicate keys,
downloads that never answer, φ checkpoints given as file: URLs or folders, absurd counts and seeds."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from faults import CLI, error_line, fails, searle

from searle_core.infra import downloads
from searle_core.infra.errors import InputError
from searle_core.notebook.papermill_runner import load_profile
from searle_core.settings import epoch_count, step_count

EVALUATE = ["evaluate", "--quick", *CLI, "--method", "searle"]


@pytest.fixture(autouse=True)
def _data(tmp_path, monkeypatch):
    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "searle_data"))


# ---- YAML ------------------------------------------------------------------------------------------
@pytest.fixture
def no_notebooks(monkeypatch):
    """A profile that loads must not start a kernel here: a regression fails at once, never runs notebooks."""
    import papermill

    from searle_core.notebook import papermill_runner

    def refuse(*args, **kwargs):
        raise AssertionError("the profile was accepted and a notebook would run")

    monkeypatch.setattr(papermill_runner, "require_kernel", refuse)
    monkeypatch.setattr(papermill, "execute_notebook", refuse)


def _alias_bomb(levels: int, width: int = 9) -> str:
    lines = ["x-bomb:", "  l0: &l0 [" + ", ".join(["1"] * width) + "]"]
    for level in range(1, levels + 1):
        lines.append(f"  l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    lines += ["notebooks:", "  01_textual_inversion:", f"    oti_steps: *l{levels}"]
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_quickly_naming_file_and_line(tmp_path, capsys, no_notebooks):
    profile = tmp_path / "bomb.yaml"
    profile.write_text(_alias_bomb(6))  # 9**6 values once expanded; nine levels never finish
    start = time.perf_counter()
    line = fails(capsys, ["paper", "--profile", profile, "--out", tmp_path / "runs"], profile, "line ", "aliases")
    assert time.perf_counter() - start < 10, line
    assert not (tmp_path / "runs").exists()


def test_yaml_anchors_and_merge_keys_still_work(tmp_path):
    profile = tmp_path / "merge.yaml"
    profile.write_text(
        "common: &common\n  quick: true\n  seed: 3\nnotebooks:\n  01_textual_inversion:\n    <<: *common\n    seed: 4\n"
    )
    assert load_profile(profile).notebooks["01_textual_inversion"] == {"quick": True, "seed": 4}


def test_yaml_duplicate_key_is_refused_naming_key_and_lines(tmp_path, capsys, no_notebooks):
    profile = tmp_path / "twice.yaml"
    profile.write_text("notebooks:\n  01_textual_inversion:\n    seed: 1\n    quick: true\n    seed: 2\n")
    fails(capsys, ["paper", "--profile", profile, "--out", tmp_path / "runs"], profile, "line 5", "'seed'", "line 3")
    profile.write_text("description: a\nnotebooks: {}\ndescription: b\n")
    with pytest.raises(InputError, match="line 3.*'description'"):
        load_profile(profile)


@pytest.mark.parametrize(
    "key, value, said",
    [
        ("seed", "99999999999999999999999", "seed range"),
        ("seed", "-1", "seed range"),
        ("oti_steps", "0", ">= 1"),
        ("oti_steps", str(2**63), "64 bits"),
        ("phi_epochs", "-3", ">= 1"),
        ("n_images", str(2**64), "64-bit"),
    ],
    ids=lambda v: str(v)[:12],
)
def test_profile_seed_or_count_torch_cannot_take_names_file_and_key(key, value, said, tmp_path, capsys, no_notebooks):
    profile = tmp_path / "bad.yaml"
    profile.write_text(f"notebooks:\n  01_textual_inversion:\n    quick: true\n    {key}: {value}\n")
    where = f"notebooks.01_textual_inversion.{key}"
    fails(capsys, ["paper", "--profile", profile, "--out", tmp_path / "runs"], profile, where, said)
    assert not (tmp_path / "runs").exists()


def test_profile_seed_shared_through_an_anchor_is_checked_where_it_is_used(tmp_path, capsys, no_notebooks):
    profile = tmp_path / "shared.yaml"
    profile.write_text(
        "common: &common\n  seed: 99999999999999999999999\nnotebooks:\n  03_training_phi:\n    <<: *common\n"
    )
    fails(
        capsys, ["paper", "--profile", profile, "--out", tmp_path / "runs"], profile, "notebooks.03_training_phi.seed"
    )


def test_profile_absurd_count_warns_with_the_least_time(tmp_path, capsys):
    profile = tmp_path / "long.yaml"
    profile.write_text("notebooks:\n  01_textual_inversion:\n    oti_steps: 1000000000000\n    seed: 3\n")
    assert load_profile(profile).notebooks["01_textual_inversion"]["oti_steps"] == 10**12
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"searle: warning: {profile}: notebooks.01_textual_inversion.oti_steps: ")
    assert "at least" in warning and "years" in warning


# ---- downloads ---------------------------------------------------------------------------------------
@pytest.fixture
def silent_server():
    """A server on 127.0.0.1 that accepts connections and never answers; it stops itself after 20 s."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    held, stop = [], threading.Event()

    def serve():
        end = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < end:
            try:
                held.append(server.accept()[0])  # accepted, never read from nor written to
            except OSError:
                continue
        for conn in held:
            conn.close()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/weights/SEARLE_ViT-B32.pt"
    stop.set()
    thread.join(timeout=5)


def test_download_from_a_silent_server_times_out_naming_the_url(silent_server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(downloads, "CONNECT_TIMEOUT", 1.0)
    monkeypatch.setattr(downloads, "READ_TIMEOUT", 1.0)
    start = time.perf_counter()
    fails(capsys, [*EVALUATE, "--phi-checkpoint", silent_server], silent_server, "did not answer")
    assert time.perf_counter() - start < 15  # the server hangs up after 20 s: no timeout would wait for it
    cache = tmp_path / "searle_data/cache/phi"
    assert not list(cache.rglob("*"))  # no .tmp, no .partial left


def test_phi_checkpoint_as_a_file_url_or_a_folder_is_said_so(tmp_path, capsys):
    weights = tmp_path / "phi.pt"
    weights.write_bytes(b"x")
    line = fails(capsys, [*EVALUATE, "--phi-checkpoint", f"file://{weights}"], "file:", str(weights))
    assert "not found" not in line
    # A folder is read as a φ run (RUN, RUN:EPOCH): one without φ's files says what it lacks and has.
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "other.pt").write_bytes(b"x")
    line = fails(capsys, [*EVALUATE, "--phi-checkpoint", folder], str(folder), "has no phi.pt", "it has: none")
    assert "not found" not in line


# ---- counts and seeds ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        ["oti", "--out", "runs/x"],
        ["train-phi", "--oti-tokens", "runs/x", "--out", "runs/y"],
        ["evaluate", "--method", "image-only"],
        ["invert", "--image", "x.png"],
        ["table"],  # the bootstrap's numpy generator
    ],
    ids=lambda c: c[0],
)
@pytest.mark.parametrize("seed", ["99999999999999999999999", "-1"])
def test_seed_outside_torchs_range_names_the_flag_and_range(command, seed, capsys):
    fails(capsys, [*command, "--seed", seed], "--seed", "seed range", str(2**64 - 1))


def _missing(tmp_path) -> list[str]:
    """Arguments that make each command stop on a missing folder, after the counts were parsed."""
    return ["--dataset", "cirr", "--dataset-path", str(tmp_path / "missing"), *CLI]


@pytest.mark.parametrize(
    "argv",
    [
        ["oti", "--out", "{tmp}/x", "--oti-steps"],
        ["evaluate", "--method", "searle-oti", "--oti-steps"],
        ["train-phi", "--oti-tokens", "{tmp}/missing", "--out", "{tmp}/y", "--phi-epochs"],
    ],
    ids=lambda a: a[-1],
)
def test_absurd_step_and_epoch_counts_warn_with_the_least_time_and_go_on(argv, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in argv]
    extra = [] if argv[0] == "train-phi" else _missing(tmp_path)
    status, _, err = searle(capsys, *argv, "1000000000000", *extra)
    flag = "--phi-epochs" if argv[-1] == "--phi-epochs" else "--oti-steps"
    warnings = [line for line in err.splitlines() if line.startswith("searle: warning: ")]
    assert len(warnings) == 1, err
    for said in (flag, "1000000000000", "times the paper's", "at least", "years", "1 ms a step"):
        assert said in warnings[0], warnings[0]
    # Accepted: the command went on and stopped on the missing folder, not on the count.
    assert error_line(err, str(tmp_path / "missing")) and status == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_sensible_counts_say_nothing(capsys):
    assert step_count("350") == 350 and step_count("100000") == 100_000 and epoch_count("10000") == 10_000
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", [str(2**63), "99999999999999999999999", "0", "-5"])
@pytest.mark.parametrize(
    "argv",
    [
        ["oti", "--out", "runs/x", "--oti-steps"],
        ["train-phi", "--oti-tokens", "runs/x", "--out", "runs/y", "--phi-epochs"],
    ],
    ids=lambda a: a[-1],
)
def test_counts_torch_cannot_take_are_errors_naming_the_flag(argv, value, capsys):
    line = fails(capsys, [*argv, value], argv[-1], value)
    assert ("64 bits" in line) == (int(value) > 0), line
