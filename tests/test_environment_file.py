"""environment.yml (conda) installs what pyproject.toml pins: the same Python and the same requirements.

conda is not available where this project is built and tested, so the file itself is never run here;
this test keeps it from drifting away from pyproject.toml.
"""

import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from searle_core.infra.paths import REPO_ROOT

EXTRAS = ("notebooks", "test")


def _key(text: str) -> tuple[str, str]:
    req = Requirement(text)
    return canonicalize_name(req.name), str(req.specifier)


def _environment() -> tuple[str, list[str]]:
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip = [d for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1 and "pip" in conda, "environment.yml: one pip section, and pip itself from conda"
    python = [d for d in conda if d.startswith("python")]
    assert len(python) == 1, f"environment.yml: one python pin, got {python}"
    return python[0], pip[0]["pip"]


def test_environment_file_parses_and_names_the_project():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    assert env["name"] == "searle"
    assert env["channels"] == ["conda-forge"]


def test_python_is_the_one_pyproject_requires():
    python, _ = _environment()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    version = python.split("=", 1)[1]
    assert python == "python=3.11" and version in SpecifierSet(project["requires-python"])


def test_pip_pins_equal_pyproject():
    _, pip = _environment()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_key(r) for r in project["dependencies"]}
    for extra in EXTRAS:
        wanted |= {_key(r) for r in project["optional-dependencies"][extra]}
    editable = [p for p in pip if p.startswith("-e")]
    listed = [_key(p) for p in pip if not p.startswith("-e")]
    assert len(listed) == len(set(listed)), "environment.yml lists a requirement twice"
    assert set(listed) == wanted, (
        f"only in environment.yml: {sorted(set(listed) - wanted)}; "
        f"only in pyproject.toml: {sorted(wanted - set(listed))}"
    )
    assert editable == [f"-e .[{','.join(EXTRAS)}]"]
