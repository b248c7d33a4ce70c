"""``searle paper``: every notebook in order with papermill, headless, with the parameters a profile
(``notebooks/profiles/<name>.yaml``) gives each; the executed notebooks go to ``<out>/<profile>/``."""

from __future__ import annotations

import ast
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_write_text, load_yaml, read_text
from searle_core.infra.paths import REPO_ROOT
from searle_core.notebook.record import HEADLESS_ENV, STAGED_ENV, load_record, publish, record_path
from searle_core.settings import check_bounded

#: The notebooks, in the order they run (later ones reuse what earlier ones cached).
NOTEBOOKS: tuple[str, ...] = (
    "01_textual_inversion",
    "02_pseudo_word_visualisation",
    "03_training_phi",
    "04_results_tables",
    "05_ablations",
    "06_evaluation_and_circo",
)
#: Parameters the runner sets itself (not in profiles): where figures and recorded numbers go.
RUNNER_PARAMETERS: tuple[str, ...] = ("figures_dir", "out_dir")
#: Parameters that may name files or folders (also inside ``benchmarks`` and ``backbones``' entries).
PATH_PARAMETERS = {"dataset_path", "concepts", "phrases", "unlabeled", "phi_checkpoint", "pretrained", "captions"}
PATH_PARAMETERS |= {"cirr_annotations", "fashioniq_annotations", "circo_annotations"}


def resolve_paths(value, key: str = "", base: Path | None = None):
    """A profile's relative paths made absolute against ``base`` (the folder ``searle paper`` runs in), as the
    CLI reads them: the notebooks run in ``notebooks/``. A value naming nothing there (a tag, ``RUN:3``) stays."""
    if isinstance(value, dict):
        return {k: resolve_paths(v, k, base) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_paths(v, key, base) for v in value]
    path = Path(base or Path.cwd(), value) if isinstance(value, str) and value else None
    return (
        str(path.resolve())
        if key in PATH_PARAMETERS and path and not Path(value).is_absolute() and path.exists()
        else value
    )


#: This environment's Python, registered by ``make setup``; the notebooks' kernelspec names it, so a Jupyter
#: of another environment asks for a kernel instead of running them there.
KERNEL = "searle"
KERNEL_DISPLAY_NAME = "Python (searle)"
#: Top-level keys of a profile; ``common`` and keys starting with ``x-`` hold YAML anchors only.
PROFILE_KEYS = {"description": (str,), "figures": (str, type(None)), "notebooks": (dict, type(None)), "common": (dict,)}


def require_kernel(kernel: str = KERNEL) -> None:
    """Fail with the command that registers ``kernel`` when this environment's Jupyter does not know it."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        raise InputError(
            f"Jupyter kernel {kernel!r} is not registered in this environment ({sys.prefix}): run "
            f"`make setup`, or `{sys.executable} -m ipykernel install --sys-prefix --name {kernel} "
            f"--display-name '{KERNEL_DISPLAY_NAME}'`"
        ) from None


def notebooks_dir() -> Path:
    """The checkout's ``notebooks/`` (the notebooks are not installed with the package)."""
    return Path(os.environ.get("SEARLE_NOTEBOOKS", REPO_ROOT / "notebooks"))


def profiles_dir() -> Path:
    return notebooks_dir() / "profiles"


def list_profiles() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


def notebook_path(stem: str) -> Path:
    return notebooks_dir() / f"{stem}.ipynb"


@dataclass
class Profile:
    """A parsed profile; ``figures`` ``None`` means the run folder's ``figures/``."""

    name: str
    description: str
    figures: str | None
    notebooks: dict[str, dict]
    path: str = ""


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """A profile by name (``quick``, ``shapes``, ``paper``) or YAML file: ``description``, optional ``figures``
    and ``notebooks: {stem: {param: value}}``; shared settings via YAML anchors and merge keys (``<<: *common``)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = profiles_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no profile {name_or_path!r} (looked for {path}); known: {', '.join(list_profiles())}")
    data = load_yaml(read_text(path, "YAML profile"), path)
    data, keys = {} if data is None else data, ", ".join(PROFILE_KEYS)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a YAML mapping with keys {keys}, got a {type(data).__name__}")
    for key, value in ((k, v) for k, v in data.items() if not str(k).startswith("x-")):
        if key not in PROFILE_KEYS:
            raise InputError(f"{path}: unknown key {key!r}; expected {keys} (or x-NAME for YAML anchors)")
        if not isinstance(value, PROFILE_KEYS[key]):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in PROFILE_KEYS[key])
            raise InputError(f"{path}: key {key!r} is {value!r}, expected {expected}")
    notebooks = data.get("notebooks") or {}
    if unknown := sorted(set(notebooks) - set(NOTEBOOKS)):
        raise InputError(
            f"{path}: unknown notebook {unknown[0]!r} under 'notebooks'; expected some of {', '.join(NOTEBOOKS)}"
        )
    for stem, params in notebooks.items():
        if params is not None and not isinstance(params, dict):
            raise InputError(
                f"{path}: key 'notebooks.{stem}' is a {type(params).__name__}, expected a mapping {{parameter: value}}"
            )
        for key, value in (params or {}).items():
            if not isinstance(key, str):
                raise InputError(f"{path}: key {key!r} under 'notebooks.{stem}' is not a parameter name")
            check_bounded(key, value, f"{path}: notebooks.{stem}.{key}")  # seeds and counts as the CLI checks them
    figures = None if data.get("figures") is None else str(data["figures"])
    notebooks = {k: dict(v or {}) for k, v in notebooks.items()}
    return Profile(path.stem, str(data.get("description", "")), figures, notebooks, str(path))


def notebook_parameters(stem: str) -> dict[str, dict]:
    """The parameters a notebook declares in its ``parameters`` cell (papermill's inspection)."""
    import papermill

    return papermill.inspect_notebook(str(notebook_path(stem)))


def _type_fits(value, param: dict) -> tuple[bool, str]:
    """Whether a value fits a parameter's annotated (else default's) type, and that type's name."""
    name = str(param.get("inferred_type_name", "None"))
    if name == "None":
        try:
            name = type(ast.literal_eval(str(param.get("default")))).__name__
        except (ValueError, SyntaxError):
            pass
    kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,)}
    base = name.split("[")[0].strip().lower()
    if base not in kinds:
        return True, name
    return not (isinstance(value, bool) and base != "bool") and isinstance(value, kinds[base]), name


def check_profile(profile: Profile, notebooks: tuple[str, ...] | list[str] = NOTEBOOKS) -> None:
    """Fail before running anything if a profile sets a parameter a notebook does not declare, one the
    runner sets, or a value of another type than the notebook's."""
    where = profile.path or f"profile {profile.name}"
    for stem in notebooks:
        declared, given = notebook_parameters(stem), profile.notebooks.get(stem, {})
        unknown, reserved = sorted(set(given) - set(declared)), sorted(set(given) & set(RUNNER_PARAMETERS))
        if unknown or reserved:
            raise InputError(
                f"{where}: notebooks.{stem}: unknown parameters {unknown} (declared: {sorted(declared)})"
                + (f"; {reserved} are set by the runner" if reserved else "")
            )
        for key, value in given.items():
            fits, expected = _type_fits(value, declared[key])
            if not fits:
                raise InputError(
                    f"{where}: notebooks.{stem}.{key} is {value!r}, expected a {expected} (the "
                    f"notebook's default is {declared[key].get('default')})"
                )


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names it, the failing cell and the error."""


@dataclass
class NotebookRun:
    name: str
    output: Path
    seconds: float
    record: dict


def run_paper(
    profile: str | Profile,
    out: str | os.PathLike = "runs",
    figures: str | os.PathLike | None = None,
    notebooks: tuple[str, ...] | list[str] | None = None,
    log: Callable[[str], None] | None = print,
    progress: bool = False,
    cell_timeout: int | None = None,
) -> list[NotebookRun]:
    """Run the notebooks of a profile (or those of ``notebooks``) in order into ``<out>/<profile>/``, stopping
    with :class:`NotebookFailed` at the first that fails; ``cell_timeout`` (seconds) fails a notebook whose
    kernel stops answering instead of hanging the run."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    profile = profile if isinstance(profile, Profile) else load_profile(profile)
    order = [n for n in NOTEBOOKS if notebooks is None or n in notebooks]
    check_profile(profile, order)
    require_kernel()
    run_dir = (Path(out) / profile.name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    figures_dir = Path(figures or profile.figures or run_dir / "figures").resolve()
    kernel = {"kernel_name": KERNEL, "cwd": str(notebooks_dir()), "log_output": False}
    kernel |= {"progress_bar": progress, "execution_timeout": cell_timeout}
    runs: list[NotebookRun] = []
    log = log or (lambda line: None)
    for stem in order:
        output = run_dir / f"{stem}.ipynb"
        # Written under temporary names and moved over the previous results only once the notebook
        # finished: an interrupted or failed re-run leaves them (and summary.json's list) intact.
        partial = run_dir / f"{stem}.partial.ipynb"
        record_path(run_dir, stem, staged=True).unlink(missing_ok=True)
        params = {
            **resolve_paths(profile.notebooks.get(stem, {})),
            "figures_dir": str(figures_dir),
            "out_dir": str(run_dir),
        }
        log(f"[{profile.name}] {stem} ...")
        start = time.perf_counter()
        try:  # the kernel inherits STAGED_ENV: Recorder writes the staged name
            with mock.patch.dict(os.environ, {STAGED_ENV: "1", HEADLESS_ENV: "1"}):
                papermill.execute_notebook(str(notebook_path(stem)), str(partial), parameters=params, **kernel)
        except PapermillExecutionError as err:
            cell = "" if err.exec_count is None else f" in cell [{err.exec_count}]"
            first = (err.source or "").strip().splitlines()[:1]
            where = f"\n  cell starts: {first[0][:100]}" if first else ""
            what = f"notebook {stem} failed{cell}: {err.ename}: {err.evalue}{where}"
            raise NotebookFailed(f"{what}\n  executed copy: {partial}") from None
        except TimeoutError as err:  # nbclient's CellTimeoutError: a cell ran past cell_timeout
            raise NotebookFailed(
                f"{stem}: a cell ran longer than {cell_timeout} s ({err}); the partly executed copy is {partial}"
            ) from None
        publish(partial, output, run_dir, stem)
        seconds = time.perf_counter() - start
        record = load_record(run_dir, stem) if record_path(run_dir, stem).is_file() else {}
        runs.append(NotebookRun(stem, output, seconds, record))
        log(f"[{profile.name}] {stem}: {seconds:.0f} s, {len(record)} numbers recorded")
    rows = [{"name": r.name, "seconds": round(r.seconds, 1), "output": str(r.output)} for r in runs]
    summary = {"profile": profile.name, "figures": str(figures_dir), "notebooks": rows}
    atomic_write_text(json.dumps(summary, indent=1), run_dir / "summary.json")
    return runs


def store_checked_outputs(notebooks: tuple[str, ...] | list[str] = NOTEBOOKS) -> None:
    """Run notebooks with their default (quick) parameters and keep only what the cells tagged
    ``keep_output`` (``# NBVAL_CHECK_OUTPUT``) printed, as nbval checks it; review the diff afterwards."""
    import nbformat
    import papermill

    require_kernel()
    for stem in notebooks:
        source = notebook_path(stem)
        with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, {HEADLESS_ENV: "1"}):
            executed_path = Path(tmp) / source.name
            papermill.execute_notebook(
                str(source), str(executed_path), kernel_name=KERNEL, cwd=str(notebooks_dir()), progress_bar=False
            )
            executed = nbformat.read(executed_path, as_version=4)
        keep = {c.id: (c.execution_count, c.outputs) for c in executed.cells if c.cell_type == "code"}
        nb = nbformat.read(source, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                # A kept cell keeps its execution count: nbval fails a cell with outputs but no count.
                kept = "keep_output" in cell.metadata.get("tags", []) and cell.get("id") in keep
                cell.execution_count, cell.outputs = keep[cell.id] if kept else (None, [])
        nbformat.write(nb, source)
        checked = sum("keep_output" in c.metadata.get("tags", []) for c in nb.cells)
        print(f"{source.name}: stored the outputs of {checked} checked cells")
