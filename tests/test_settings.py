"""One name per setting: the CLI's flags, the profiles' keys and the notebooks' parameters are the
fields of :class:`searle_core.settings.RunSettings` (``_`` as ``-`` on the command line)."""

import argparse
import ast
import dataclasses

import nbformat
import pandas as pd
import pytest
from cli_helpers import CLI, error_line, fails, searle

from searle_core.cli import build_parser, main
from searle_core.cli.common import settings_from_args
from searle_core.infra.errors import InputError
from searle_core.notebook import ablations
from searle_core.notebook import papermill_runner as paper
from searle_core.notebook.papermill_runner import load_profile
from searle_core.notebook.record import Recorder, load_record, method_metrics
from searle_core.notebook.study import Study, open_study
from searle_core.settings import SETTINGS, RunSettings, epoch_count, flag, from_namespace, from_parameters, step_count
from searle_core.world.setup import WORLD_OTI_BATCH_SIZE, resolved_oti_batch_size


def commands(parser=None, prefix=()):
    """(command path, parser) of every leaf command of ``searle``."""
    parser = parser or build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sub in subs[0].choices.items():
        yield from commands(sub, (*prefix, name))


def setting_commands():
    return [(" ".join(path), p) for path, p in commands()]


def test_settings_commands_are_found():
    names = [name for name, _ in setting_commands()]
    assert {"evaluate", "submission", "table", "oti", "train-phi", "invert", "paper"} <= set(names)


@pytest.mark.parametrize("name,parser", setting_commands(), ids=[n for n, _ in setting_commands()])
def test_every_setting_flag_is_its_field_name(name, parser):
    for action in parser._actions:
        if action.dest in SETTINGS:
            assert action.option_strings == [flag(action.dest)], f"searle {name}: {action.option_strings}"
        for option in action.option_strings:  # a setting's spelling never sets something else
            if option.startswith("--") and option[2:].replace("-", "_") in SETTINGS:
                assert action.dest == option[2:].replace("-", "_"), f"searle {name} {option} -> {action.dest}"


def test_every_cli_flag_of_a_setting_exists():
    """Each setting but what only notebooks set is a flag of some command, spelled as its field."""
    spelled = {a.dest for _, p in setting_commands() for a in p._actions if a.dest in SETTINGS}
    assert set(SETTINGS) - spelled == {"progress"}  # progress: --no-progress


@pytest.mark.parametrize("stem", paper.NOTEBOOKS)
def test_notebook_settings_have_the_fields_types(stem):
    declared = paper.notebook_parameters(stem)
    for key, param in declared.items():
        if key in SETTINGS:
            field = {f.name: f for f in dataclasses.fields(RunSettings)}[key]
            value = ast.literal_eval(param["default"])
            assert type(value).__name__ == str(field.type).split(" ")[0], (key, value, field.type)


@pytest.mark.parametrize("stem", paper.NOTEBOOKS)
def test_notebook_passes_its_settings_to_open_study_by_name(stem):
    """Each parameter that is a setting reaches ``open_study`` as ``name=name``, nothing else does."""
    nb = nbformat.read(paper.notebook_path(stem), as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%"))  # magics
    # Notebook 4 opens one study per benchmark and backbone of its lists, through results.run_settings.
    callee = "run_settings" if stem == "04_results_tables" else "open_study"
    calls = [
        n
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) == callee
    ]
    lists = ["benchmarks", "backbones", "methods"] if callee == "run_settings" else []
    assert len(calls) == 1 and [ast.unparse(a) for a in calls[0].args] == lists, (
        f"one {callee} call, with keyword arguments only"
    )
    passed = {k.arg: k.value for k in calls[0].keywords}
    settings_declared = set(paper.notebook_parameters(stem)) & set(SETTINGS)
    assert all(isinstance(v, ast.Name) and v.id == k for k, v in passed.items() if k in settings_declared), ast.unparse(
        calls[0]
    )
    assert set(passed) & set(SETTINGS) == settings_declared


def test_cli_and_notebook_build_the_same_settings():
    args = build_parser().parse_args(
        [
            "evaluate",
            "--dataset",
            "circo",
            "--dataset-path",
            "/d/CIRCO",
            "--split",
            "test",
            "--backbone",
            "ViT-B-32",
            "--pretrained",
            "none",
            "--device",
            "cpu",
            "--concepts",
            "c.csv",
            "--phrases",
            "p.pkl",
            "--unlabeled",
            "/d/in",
            "--oti-steps",
            "7",
            "--oti-batch-size",
            "5",
            "--phi-checkpoint",
            "phi.pt",
            "--seed",
            "3",
            "--precision",
            "fp32",
            "--no-progress",
        ]
    )
    from_cli = settings_from_args(args)
    from_notebook = from_parameters(
        dict(  # noqa: C408  (keyword form, as a notebook's parameters cell reads)
            dataset="circo",
            dataset_path="/d/CIRCO",
            split="test",
            backbone="ViT-B-32",
            pretrained="none",
            device="cpu",
            concepts="c.csv",
            phrases="p.pkl",
            unlabeled="/d/in",
            oti_steps=7,
            oti_batch_size=5,
            phi_checkpoint="phi.pt",
            seed=3,
            precision="fp32",
            progress=False,
        )
    )
    assert from_cli == from_notebook
    assert from_cli.oti_steps == 7 and from_cli.concepts == "c.csv" and not from_cli.progress


def test_evaluate_still_has_its_feature_batch_size():
    args = build_parser().parse_args(["evaluate", "--batch-size", "8"])
    assert args.batch_size == 8 and args.oti_batch_size is None  # left to the dataset's default


def test_oti_batch_size_defaults_to_the_papers_except_on_the_world():
    assert resolved_oti_batch_size(RunSettings(dataset="circo")) == 32  # the paper's
    assert resolved_oti_batch_size(RunSettings(dataset="shapes")) == WORLD_OTI_BATCH_SIZE == 128
    assert resolved_oti_batch_size(RunSettings(dataset="shapes", oti_batch_size=7)) == 7  # given: kept
    args = build_parser().parse_args(["evaluate", "--dataset", "cirr", "--oti-batch-size", "16"])
    assert resolved_oti_batch_size(from_namespace(args)) == 16


def test_open_study_refuses_an_unknown_parameter_naming_the_settings():
    with pytest.raises(TypeError, match="unknown parameter 'oti_step'; settings are dataset, dataset_path"):
        open_study(oti_step=3)


def test_profile_check_names_an_unknown_parameter():
    profile = paper.Profile("old", "", None, {"01_textual_inversion": {"concepts_path": ""}})
    with pytest.raises(ValueError, match=r"unknown parameters \['concepts_path'\] \(declared: "):
        paper.check_profile(profile, ["01_textual_inversion"])


def test_study_context_takes_its_oti_settings():
    study = Study(
        "shapes", None, None, None, settings=RunSettings(oti_steps=7, oti_batch_size=5, precision="fp32", seed=3)
    )
    ctx = study.context()
    assert (ctx.oti_config.steps, ctx.oti_batch_size, ctx.oti_config.precision) == (7, 5, "fp32")
    assert ctx.oti_config.lambda_gpt == 0.0  # no vocabulary: no regulariser
    assert study.context(steps=9).oti_config.steps == 9


def test_record_keys_and_table_files_are_built_in_the_package(tmp_path):
    assert method_metrics("searle", {"mAP@10": 1.5, "dress": {"Recall@10": 2}}) == {
        "searle/mAP@10": 1.5,
        "searle/dress/Recall@10": 2.0,
    }
    table = pd.DataFrame(
        [
            {
                "part": "OTI",
                "variant": ablations.FULL,
                "mAP@10": 70.0,
                "shape/mAP@10": 1.0,
                "seconds": 2.0,
                "steps": 50,
                "data %": None,
            }
        ]
    )
    assert ablations.shown_columns(table) == ["part", "variant", "mAP@10", "seconds"]
    csv, md = ablations.write_table(table, tmp_path)
    assert (csv, md) == (tmp_path / "tables" / "ablations.csv", tmp_path / "tables" / "ablations.md")
    assert "shape/mAP@10" in csv.read_text() and "shape/mAP@10" not in md.read_text()
    rec = Recorder(tmp_path, "05_ablations")
    ablations.record_table(rec, table, "mAP@10", 12.5)
    assert load_record(tmp_path, "05_ablations") == {
        f"OTI/{ablations.FULL}/mAP@10": 70.0,
        f"OTI/{ablations.FULL}/seconds": 2.0,
        "image-only/mAP@10": 12.5,
    }


def test_main_says_a_missing_oti_run_in_one_line(capsys):
    assert main(["train-phi", "--oti-tokens", "/nonexistent-run", "--out", "/nonexistent", "--phi-epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no OTI run there" in err


def test_study_settings_agree_with_its_fields():
    study = Study("cirr", None, None, None, seed=5, progress=True)
    assert (study.settings.dataset, study.settings.seed, study.settings.progress) == ("cirr", 5, True)
    assert study.context().seed == 5


def test_cli_settings_open_the_same_study_and_numbers(capsys, tmp_path, monkeypatch):
    """``searle evaluate`` and the notebook engine opened with the CLI's settings score alike."""
    import json

    from searle_core.datasets.features import preprocess_name
    from searle_core.jobs.evaluation import evaluate

    monkeypatch.setenv("SEARLE_DATA", str(tmp_path))
    argv = [
        "evaluate",
        "--quick",
        "--pretrained",
        "none",
        "--device",
        "cpu",
        "--method",
        "image+text",
        "--seed",
        "3",
        "--no-progress",
    ]
    assert main([*argv, "--json"]) == 0
    from_cli = json.loads(capsys.readouterr().out)
    study = open_study(settings=settings_from_args(build_parser().parse_args(argv)))
    assert study.settings.quick and study.settings.seed == 3 and preprocess_name(study.backbone) == "targetpad"
    result = evaluate("image+text", study.bench, study.backbone, study.context(), gallery=study.gallery())
    assert result.metrics == pytest.approx(from_cli, abs=1e-9)


# ---- fault cases (@pytest.mark.audit_open; helpers in cli_helpers.py) ----
@pytest.mark.audit_open
@pytest.mark.usefixtures("tmp_searle_data")
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


@pytest.mark.audit_open
@pytest.mark.usefixtures("tmp_searle_data")
def test_profile_seed_shared_through_an_anchor_is_checked_where_it_is_used(tmp_path, capsys, no_notebooks):
    profile = tmp_path / "shared.yaml"
    profile.write_text(
        "common: &common\n  seed: 99999999999999999999999\nnotebooks:\n  03_training_phi:\n    <<: *common\n"
    )
    fails(
        capsys, ["paper", "--profile", profile, "--out", tmp_path / "runs"], profile, "notebooks.03_training_phi.seed"
    )


@pytest.mark.audit_open
@pytest.mark.usefixtures("tmp_searle_data")
def test_profile_absurd_count_warns_with_the_least_time(tmp_path, capsys):
    profile = tmp_path / "long.yaml"
    profile.write_text("notebooks:\n  01_textual_inversion:\n    oti_steps: 1000000000000\n    seed: 3\n")
    assert load_profile(profile).notebooks["01_textual_inversion"]["oti_steps"] == 10**12
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"searle: warning: {profile}: notebooks.01_textual_inversion.oti_steps: ")
    assert "at least" in warning and "years" in warning


PROFILE_OK = """description: mine
common: &common
  quick: true
notebooks:
  01_textual_inversion:
    <<: *common
    oti_steps: 5
"""


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
@pytest.mark.parametrize(
    "text, culprits",
    [
        (PROFILE_OK.replace("01_textual_inversion", "01_textual_inversions"), ["'01_textual_inversions'"]),
        (
            PROFILE_OK.replace("oti_steps: 5", "oti_steps: fifty"),
            ["notebooks.01_textual_inversion.oti_steps", "'fifty'", "expected a int"],
        ),
        (PROFILE_OK.replace("quick: true", "quick: 1"), ["notebooks.01_textual_inversion.quick", "expected a bool"]),
        (PROFILE_OK.replace("oti_steps: 5", "oti_step: 5"), ["unknown parameters ['oti_step']"]),
        (PROFILE_OK.replace("    oti_steps: 5", "\toti_steps: 5"), ["line 7", "not valid YAML"]),
        (PROFILE_OK.replace("description: mine", "description: [mine"), ["line ", "not valid YAML"]),
        (PROFILE_OK.replace("description: mine", "description: {a: 1}"), ["key 'description'"]),
        ("- a\n- b\n", ["expected a YAML mapping"]),
    ],
    ids=[
        "unknown-notebook",
        "wrong-type",
        "int-for-bool",
        "unknown-parameter",
        "tab-indent",
        "unclosed-bracket",
        "description-mapping",
        "not-a-mapping",
    ],
)
def test_bad_profile(tmp_path, capsys, text, culprits):
    profile = tmp_path / "mine.yaml"
    profile.write_text(text)
    fails(capsys, ["paper", "--profile", profile, "--out", tmp_path / "runs"], profile, *culprits)
    assert not (tmp_path / "runs").exists()


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_profiles_of_the_repository_are_valid():
    from searle_core.notebook.papermill_runner import check_profile, list_profiles, load_profile

    for name in list_profiles():
        check_profile(load_profile(name))


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_mistyped_profile_key_is_an_error_before_anything_runs(tmp_path, capsys):
    from searle_core.notebook.papermill_runner import load_profile

    profile = tmp_path / "mine.yaml"
    profile.write_text("description: mine\nnotebook:\n  01_textual_inversion: {oti_steps: 5}\n")
    with pytest.raises(InputError, match=rf"{profile}: unknown key 'notebook'"):
        load_profile(profile)
    line = fails(capsys, ["paper", "--profile", profile, "--out", tmp_path / "runs"], profile, "'notebook'")
    assert "expected description, figures, notebooks" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.audit_open
@pytest.mark.usefixtures("tmp_searle_data")
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


@pytest.mark.audit_open
@pytest.mark.usefixtures("tmp_searle_data")
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


@pytest.mark.audit_open
@pytest.mark.usefixtures("tmp_searle_data")
def test_sensible_counts_say_nothing(capsys):
    assert step_count("350") == 350 and step_count("100000") == 100_000 and epoch_count("10000") == 10_000
    assert capsys.readouterr().err == ""


@pytest.mark.audit_open
@pytest.mark.usefixtures("tmp_searle_data")
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


def test_oti_config_is_read_from_the_settings_and_the_method_defaults():
    from searle_core.method.oti import OTIConfig

    s = RunSettings(oti_steps=7, precision="bf16")
    with_vocab = s.oti_config(True, ema_decay=0.9)
    assert (with_vocab.steps, with_vocab.precision, with_vocab.ema_decay) == (7, "bf16", 0.9)
    assert with_vocab.lambda_gpt == OTIConfig.lambda_gpt and RunSettings().oti_steps == OTIConfig.steps
    assert s.oti_config(False, lambda_gpt=0.3).lambda_gpt == 0.0  # no vocabulary: no regulariser


@pytest.mark.audit_open
@pytest.mark.usefixtures("tmp_searle_data")
@pytest.mark.parametrize(
    "key, value, said",
    [
        ("ema_decay", "1.5", "[0, 1]"),  # ran, and recorded a diverged EMA
        ("ema_decay", "-0.1", "[0, 1]"),
        ("trajectory_every", "0", "[1, inf)"),  # a division by zero after the long cells
        ("top_k", "0", "[1, inf)"),
        ("n_images", "-3", "[1, inf)"),  # failed inside matplotlib
        ("lambda_gpt", ".nan", "finite"),  # taken as 0 while the CLI refuses it
        ("lambda_gpt", "-1.0", "[0, inf)"),
        ("max_queries", "-1", "[0, inf)"),
    ],
    ids=lambda v: str(v)[:12],
)
def test_profile_degenerate_parameter_names_file_and_key(key, value, said, tmp_path, capsys, no_notebooks):
    """Notebook parameters bounded as the CLI's flags are, before any notebook runs."""
    profile = tmp_path / "bad.yaml"
    profile.write_text(f"notebooks:\n  01_textual_inversion:\n    quick: true\n    {key}: {value}\n")
    fails(
        capsys,
        ["paper", "--profile", profile, "--out", tmp_path / "runs"],
        profile,
        f"01_textual_inversion.{key}",
        said,
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.audit_open
@pytest.mark.parametrize("key, value", [("k", 0), ("step_grid", [50, 0]), ("data_fractions", [0.5, 2.0]), ("seed", -1)])
def test_notebook_parameters_are_checked_by_open_study_before_any_work(key, value):
    """A notebook run by hand (not through `searle paper`): open_study bounds its parameters, its globals."""
    from searle_core.notebook.study import open_study

    namespace = {"open_study": open_study, key: value}
    with pytest.raises(InputError, match=f"notebook parameter {key}: "):
        exec("open_study('no-such-dataset')", namespace)  # the bound comes first: no dataset is opened
    namespace[key] = {"k": 10, "step_grid": [50, 350], "data_fractions": [0.01, 1.0], "seed": 3}[key]
    with pytest.raises(Exception) as raised:  # the control: a sound value passes on to the dataset
        exec("open_study('no-such-dataset')", namespace)
    assert "notebook parameter" not in str(raised.value)


def test_every_bounded_parameter_is_a_notebook_parameter_or_a_flag():
    """The bounds name real parameters (a misspelt name would bound nothing)."""
    from searle_core.notebook.papermill_runner import NOTEBOOKS, notebook_parameters
    from searle_core.settings import COUNTED, RANGES

    declared = set(SETTINGS).union(*(notebook_parameters(stem) for stem in NOTEBOOKS))
    flags = {"dropout", "lambda_distil", "weight_decay", "lambda_cos", "nonnegative", "positive"}
    assert set(COUNTED) | set(RANGES) <= declared | flags
