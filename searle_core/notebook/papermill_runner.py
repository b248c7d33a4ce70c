"""``searle paper``: run every notebook in order with papermill, headless, under one profile.

A profile (``notebooks/profiles/<name>.yaml``) gives each notebook its parameters. Each executed
notebook is written to ``<out>/<profile>/``, beside the JSON of the key numbers it recorded
(:mod:`searle_core.notebook.record`); figures go to the figures folder. The first failing notebook stops the
run with the failing cell's error, and its partly executed copy stays in the run folder to inspect.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from searle_core.infra.errors import InputError, read_text
from searle_core.infra.files import atomic_write_text
from searle_core.infra.paths import REPO_ROOT
from searle_core.infra.settings import RENAMED_PARAMETERS, check_bounded
from searle_core.infra.yaml_files import load_yaml
from searle_core.notebook.record import STAGED_ENV, load_record, publish, staged_record_path

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
#: The notebooks' Jupyter kernel: this environment's Python, registered under the project's name by
#: ``make setup`` (``ipykernel install --sys-prefix --name searle``). The notebooks' kernelspec names it,
#: so a Jupyter of another environment asks for a kernel instead of running them there.
KERNEL = "searle"
KERNEL_DISPLAY_NAME = "Python (searle)"


def require_kernel(kernel: str = KERNEL) -> None:
    """Fail with the command that registers ``kernel`` when this environment's Jupyter does not know it.

    Raises:
        RuntimeError: naming the kernel, this environment and the command to run.
    """
    import sys

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
    """The ``notebooks/`` folder of the checkout (the notebooks are not installed with the package)."""
    return Path(os.environ.get("SEARLE_NOTEBOOKS", REPO_ROOT / "notebooks"))


def profiles_dir() -> Path:
    return notebooks_dir() / "profiles"


def list_profiles() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


@dataclass
class Profile:
    """A parsed profile.

    Args:
        name: its name (file stem).
        description: one line saying what it is for.
        figures: default figures folder of this profile (relative to the working directory);
            ``None``: ``figures/`` inside the run folder.
        notebooks: notebook stem -> its parameters.
        path: the YAML file it was read from (named in errors).
    """

    name: str
    description: str
    figures: str | None
    notebooks: dict[str, dict]
    path: str = ""


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """Read a profile by name (``quick``, ``shapes``, ``paper``) or from a YAML file.

    The YAML has ``description``, optional ``figures`` (default: the run folder's ``figures/``) and
    ``notebooks: {stem: {param: value}}``;
    shared settings are written once with YAML anchors and merge keys (``<<: *common``).
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = profiles_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no profile {name_or_path!r} (looked for {path}); known: {', '.join(list_profiles())}")
    data = _read_yaml(path)
    notebooks = data.get("notebooks") or {}
    if not isinstance(notebooks, dict):
        raise InputError(
            f"{path}: key 'notebooks' is a {type(notebooks).__name__}, expected a mapping "
            "{notebook: {parameter: value}}"
        )
    unknown = sorted(set(notebooks) - set(NOTEBOOKS))
    if unknown:
        raise InputError(
            f"{path}: unknown notebook {unknown[0]!r} under 'notebooks'; expected some of {', '.join(NOTEBOOKS)}"
        )
    for stem, params in notebooks.items():
        if params is not None and not isinstance(params, dict):
            raise InputError(
                f"{path}: key 'notebooks.{stem}' is a {type(params).__name__}, expected a mapping {{parameter: value}}"
            )
        bad = [k for k in (params or {}) if not isinstance(k, str)]
        if bad:
            raise InputError(f"{path}: key {bad[0]!r} under 'notebooks.{stem}' is not a parameter name")
        for key, value in (params or {}).items():  # seeds and counts as the command line checks them
            check_bounded(key, value, f"{path}: notebooks.{stem}.{key}")
    figures = data.get("figures")
    return Profile(
        path.stem,
        str(data.get("description", "")),
        None if figures is None else str(figures),
        {k: dict(v or {}) for k, v in notebooks.items()},
        str(path),
    )


#: Top-level keys of a profile; ``common`` and keys starting with ``x-`` hold YAML anchors only.
PROFILE_KEYS: dict[str, tuple[type, ...]] = {
    "description": (str,),
    "figures": (str, type(None)),
    "notebooks": (dict, type(None)),
    "common": (dict,),
}


def _read_yaml(path: Path) -> dict:
    """A profile's YAML, with every top-level key known and of the right type (one-line errors)."""
    data = load_yaml(read_text(path, "YAML profile"), path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise InputError(
            f"{path}: expected a YAML mapping with keys {', '.join(PROFILE_KEYS)}, got a {type(data).__name__}"
        )
    for key, value in data.items():
        if isinstance(key, str) and key.startswith("x-"):
            continue
        if key not in PROFILE_KEYS:
            raise InputError(
                f"{path}: unknown key {key!r}; expected {', '.join(PROFILE_KEYS)} (or x-NAME for YAML anchors)"
            )
        if not isinstance(value, PROFILE_KEYS[key]):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in PROFILE_KEYS[key])
            raise InputError(f"{path}: key {key!r} is {value!r}, expected {expected}")
    return data


def notebook_path(stem: str) -> Path:
    return notebooks_dir() / f"{stem}.ipynb"


def notebook_parameters(stem: str) -> dict[str, dict]:
    """The parameters a notebook declares in its ``parameters`` cell (papermill's inspection)."""
    import papermill

    return papermill.inspect_notebook(str(notebook_path(stem)))


def check_profile(profile: Profile, notebooks: tuple[str, ...] | list[str] = NOTEBOOKS) -> None:
    """Fail before running anything if a profile sets a parameter a notebook does not declare.

    Raises:
        ValueError: naming the notebook and the unknown or runner-reserved keys.
    """
    where = profile.path or f"profile {profile.name}"
    for stem in notebooks:
        declared_params = notebook_parameters(stem)
        declared = set(declared_params)
        given = profile.notebooks.get(stem, {})
        unknown, reserved = sorted(set(given) - declared), sorted(set(given) & set(RUNNER_PARAMETERS))
        if unknown or reserved:
            renamed = [
                f"{k} is now {RENAMED_PARAMETERS[k]}"
                for k in unknown
                if k in RENAMED_PARAMETERS and RENAMED_PARAMETERS[k] in declared
            ]
            raise InputError(
                f"{where}: notebooks.{stem}: unknown parameters {unknown} "
                + (f"({'; '.join(renamed)}) " if renamed else "")
                + f"(declared: {sorted(declared)})"
                + (f"; {reserved} are set by the runner" if reserved else "")
            )
        for key, value in given.items():
            expected = _declared_type(declared_params[key])
            if not _type_fits(value, expected):
                raise InputError(
                    f"{where}: notebooks.{stem}.{key} is {value!r}, expected a {expected} (the "
                    f"notebook's default is {declared_params[key].get('default')})"
                )


def _declared_type(param: dict) -> str:
    """A parameter's type: papermill's annotation-based name, else the type of its literal default."""
    import ast

    name = str(param.get("inferred_type_name", "None"))
    if name != "None":
        return name
    try:
        return type(ast.literal_eval(str(param.get("default")))).__name__
    except (ValueError, SyntaxError):
        return "None"


def _type_fits(value, declared: str) -> bool:
    """Whether a profile value fits the type of the notebook's default (papermill's inferred name)."""
    kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,)}
    base = declared.split("[")[0].strip().lower()
    if base not in kinds:
        return True  # no default to compare with (None, an expression): accept
    if isinstance(value, bool) and base != "bool":
        return False
    return isinstance(value, kinds[base])


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names it, the failing cell and the error."""


@dataclass
class NotebookRun:
    name: str
    output: Path
    seconds: float
    record: dict = field(default_factory=dict)


def _failure_message(stem: str, output: Path, err: Exception) -> str:
    source = (getattr(err, "source", "") or "").strip().splitlines()
    cell = getattr(err, "exec_count", None)
    head = f"notebook {stem} failed in cell [{cell}]" if cell is not None else f"notebook {stem} failed"
    where = f"\n  cell starts: {source[0][:100]}" if source else ""
    what = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
    return f"{head}: {what}{where}\n  executed copy: {output}"


def run_paper(
    profile: str | Profile,
    out: str | os.PathLike = "runs",
    figures: str | os.PathLike | None = None,
    notebooks: tuple[str, ...] | list[str] | None = None,
    kernel: str = KERNEL,
    log: Callable[[str], None] | None = print,
    progress: bool = False,
    cell_timeout: int | None = None,
) -> list[NotebookRun]:
    """Run the notebooks of a profile in order.

    Args:
        profile: a profile name, YAML path or :class:`Profile`.
        out: run folder root; executed notebooks and their JSON go to ``<out>/<profile>/``.
        figures: figures folder (default: the profile's ``figures``, else ``<out>/<profile>/figures``).
        notebooks: run only these (stems, in :data:`NOTEBOOKS` order).
        kernel: Jupyter kernel name (default: the project's kernel, see :data:`KERNEL`).
        log: where progress lines go (``None``: silent).
        progress: a progress bar over each notebook's cells (papermill's).
        cell_timeout: seconds one cell may run before the notebook fails (``None``: no limit), so
            that a kernel that stops answering fails a run instead of hanging it.

    Returns:
        One :class:`NotebookRun` per notebook, with its wall time and recorded numbers.

    Raises:
        NotebookFailed: at the first failing notebook, with the failing cell's error.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    profile = profile if isinstance(profile, Profile) else load_profile(profile)
    order = [n for n in NOTEBOOKS if notebooks is None or n in notebooks]
    check_profile(profile, order)
    require_kernel(kernel)
    run_dir = (Path(out) / profile.name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    figures_dir = Path(figures or profile.figures or run_dir / "figures").resolve()
    runs: list[NotebookRun] = []
    for stem in order:
        output = run_dir / f"{stem}.ipynb"
        # Written under temporary names and moved over the previous results only once the notebook
        # finished: an interrupted or failed re-run leaves them (and summary.json's list) intact.
        partial, staged = run_dir / f"{stem}.partial.ipynb", staged_record_path(run_dir, stem)
        staged.unlink(missing_ok=True)
        params = {**profile.notebooks.get(stem, {}), "figures_dir": str(figures_dir), "out_dir": str(run_dir)}
        if log:
            log(f"[{profile.name}] {stem} ...")
        start = time.perf_counter()
        before = os.environ.get(STAGED_ENV)
        os.environ[STAGED_ENV] = "1"  # the kernel inherits it: Recorder writes the staged name
        try:
            papermill.execute_notebook(
                str(notebook_path(stem)),
                str(partial),
                parameters=params,
                kernel_name=kernel,
                cwd=str(notebooks_dir()),
                progress_bar=progress,
                log_output=False,
                execution_timeout=cell_timeout,
            )
        except PapermillExecutionError as err:
            raise NotebookFailed(_failure_message(stem, partial, err)) from None
        except TimeoutError as err:  # nbclient's CellTimeoutError: a cell ran past cell_timeout
            raise NotebookFailed(
                f"{stem}: a cell ran longer than {cell_timeout} s ({err}); the partly executed copy is {partial}"
            ) from None
        finally:
            if before is None:
                os.environ.pop(STAGED_ENV, None)
            else:
                os.environ[STAGED_ENV] = before
        publish(partial, output, run_dir, stem)
        seconds = time.perf_counter() - start
        try:
            record = load_record(run_dir, stem)
        except FileNotFoundError:
            record = {}
        runs.append(NotebookRun(stem, output, seconds, record))
        if log:
            log(f"[{profile.name}] {stem}: {seconds:.0f} s, {len(record)} numbers recorded")
    summary = {
        "profile": profile.name,
        "figures": str(figures_dir),
        "notebooks": [{"name": r.name, "seconds": round(r.seconds, 1), "output": str(r.output)} for r in runs],
    }
    atomic_write_text(json.dumps(summary, indent=1), run_dir / "summary.json")
    return runs


def clear_outputs(nb, keep: dict[str, tuple[int | None, list]] | None = None):
    """Drop every output and execution count; cells tagged ``keep_output`` take theirs from ``keep``
    (cell id -> (execution count, outputs)) when given. Returns the notebook (changed in place).

    A kept cell keeps its execution count too: nbval treats a cell with outputs but no count as
    an unrun cell and fails it.
    """
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = "keep_output" in cell.metadata.get("tags", []) and keep is not None and cell.get("id") in keep
        cell.execution_count, cell.outputs = keep[cell.id] if kept else (None, [])
    return nb


def store_checked_outputs(
    notebooks: tuple[str, ...] | list[str] = NOTEBOOKS, kernel: str = KERNEL, log: Callable[[str], None] | None = print
) -> None:
    """Run notebooks with their default (quick) parameters and store the outputs nbval checks.

    Only cells tagged ``keep_output`` (the ``# NBVAL_CHECK_OUTPUT`` cells) keep what they printed;
    every other output is removed, as the repository keeps them. Run it after a change that moves
    the checked numbers (e.g. a retrained world CLIP), then review the diff.
    """
    import tempfile

    import nbformat
    import papermill

    require_kernel(kernel)
    for stem in notebooks:
        source = notebook_path(stem)
        with tempfile.TemporaryDirectory() as tmp:
            executed_path = Path(tmp) / source.name
            papermill.execute_notebook(
                str(source), str(executed_path), kernel_name=kernel, cwd=str(notebooks_dir()), progress_bar=False
            )
            executed = nbformat.read(executed_path, as_version=4)
        keep = {c.id: (c.execution_count, c.outputs) for c in executed.cells if c.cell_type == "code"}
        nb = clear_outputs(nbformat.read(source, as_version=4), keep)
        nbformat.write(nb, source)
        if log:
            log(
                f"{source.name}: stored the outputs of "
                f"{sum('keep_output' in c.metadata.get('tags', []) for c in nb.cells)} checked cells"
            )
