"""The repository's top level is the design card's: notebooks/, searle_core/, data/ (only its README
committed), figures/, environment.yml, tests/."""

import ast
import shutil
import subprocess

import pytest

from searle_core.paths import REPO_ROOT, data_dir


def test_top_level_layout():
    for folder in ("notebooks", "searle_core", "data", "figures", "tests"):
        assert (REPO_ROOT / folder).is_dir(), folder
    assert (REPO_ROOT / "environment.yml").is_file() and (REPO_ROOT / "data" / "README.md").is_file()
    assert data_dir() == REPO_ROOT / "data" or data_dir().is_absolute()


def test_data_keeps_only_its_readme_in_git():
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip(f"{REPO_ROOT} is not a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO_ROOT).returncode == 0

    for path in ("data/cache/world_clip/x.pt", "data/world/samples/a.png", "data/CIRR/dev/d.png",
                 "data/checkpoints/SEARLE_ViT-B32.pt", "runs/browser/explorer-after.png"):
        assert ignored(path), path
    assert not ignored("data/README.md")


# ---- the package's import graph (issue 12) ---------------------------------------------------------
PACKAGE = REPO_ROOT / "searle_core"
#: Above the core: they may import the core, never the other way round.
UPPER = ("searle_core.jobs", "searle_core.report", "searle_core.notebook", "searle_core.plotting",
         "searle_core.cli", "searle_core.speed", "searle_core.__main__")


def _module_name(path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, int]]]:
    """Module -> the package modules it imports (``if TYPE_CHECKING`` blocks left out), and every
    import of the package made inside a function (module, line)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    inner = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        typing_only = {id(n) for top in tree.body if isinstance(top, ast.If) and "TYPE_CHECKING" in ast.dump(top.test)
                       for n in ast.walk(top)}
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]) if node.level \
                    else node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                targets = [a.name for a in node.names]
            targets = [t.rstrip(".") for t in targets if t.startswith("searle_core")]
            if targets and id(node) not in top_level:
                inner.append((name, node.lineno))
            edges[name].update(t for t in targets if t in modules and t != name)
    return edges, inner


def _is_upper(module: str) -> bool:
    return module == "searle_core" or any(module == u or module.startswith(u + ".") for u in UPPER)


def test_the_core_never_imports_jobs_reports_notebooks_or_the_cli():
    edges, _ = import_graph()
    wrong = sorted(f"{m} -> {t}" for m, ts in edges.items() if not _is_upper(m) for t in ts if _is_upper(t))
    assert not wrong, wrong


def test_no_import_cycle_and_imports_at_the_top():
    edges, inner = import_graph()
    assert not inner, f"imports of searle_core inside functions: {inner[:5]}"
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_the_graph_check_sees_a_cycle(tmp_path, monkeypatch):
    """The checker itself: two modules importing each other are reported."""
    package = tmp_path / "searle_core"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from searle_core import b\n")
    (package / "b.py").write_text("def f():\n    from searle_core import a\n")
    monkeypatch.setitem(globals(), "REPO_ROOT", tmp_path)
    monkeypatch.setitem(globals(), "PACKAGE", package)
    with pytest.raises(AssertionError, match="import"):
        test_no_import_cycle_and_imports_at_the_top()
    edges, inner = import_graph()
    assert edges["searle_core.a"] == {"searle_core.b"} and inner == [("searle_core.b", 2)]
