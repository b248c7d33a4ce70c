"""The repository's top level is the design card's: notebooks/, searle_core/, data/ (only its README
committed), figures/, environment.yml, tests/."""

import ast
import re
import shutil
import subprocess
import sys

import pytest

from searle_core.infra.paths import REPO_ROOT, data_dir


def test_top_level_layout(monkeypatch):
    monkeypatch.delenv("SEARLE_DATA", raising=False)
    for folder in ("notebooks", "searle_core", "data", "figures", "tests"):
        assert (REPO_ROOT / folder).is_dir(), folder
    assert (REPO_ROOT / "environment.yml").is_file() and (REPO_ROOT / "data" / "README.md").is_file()
    assert data_dir() == REPO_ROOT / "data"  # a checkout keeps what it computes in its own data/


def test_data_keeps_only_its_readme_in_git():
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip(f"{REPO_ROOT} is not a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO_ROOT).returncode == 0

    for path in (
        "data/cache/world_clip/x.pt",
        "data/world/samples/a.png",
        "data/CIRR/dev/d.png",
        "data/checkpoints/SEARLE_ViT-B32.pt",
        "runs/browser/explorer-after.png",
    ):
        assert ignored(path), path
    assert not ignored("data/README.md")


# ---- the package's layers -------------------------------------------------------------------------
PACKAGE = REPO_ROOT / "searle_core"
#: The layers, bottom to top. A module may import its own layer and the layers below it, never one above
#: (``if TYPE_CHECKING`` imports included). ``searle_core/__init__.py``, the public API, sits on top.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("infrastructure", ("searle_core.infra",)),
    ("CLIP: loading and preprocessing", ("searle_core.clip",)),
    ("the method: OTI, phi, their losses, the regulariser, pseudo-token encoding", ("searle_core.method",)),
    ("run settings: the one home of a run's defaults", ("searle_core.settings",)),
    ("datasets and their image features", ("searle_core.datasets",)),
    ("metrics", ("searle_core.metrics",)),
    ("inversion's inputs and outputs: concepts, phrases, nearest words, phi files", ("searle_core.inversion",)),
    ("retrieval: queries, methods, ranking", ("searle_core.retrieval",)),
    ("baselines", ("searle_core.baselines",)),
    ("methods: context, registry, one method run end to end", ("searle_core.methods",)),
    ("the offline shapes world", ("searle_core.world",)),
    ("jobs: trained networks, run folders", ("searle_core.jobs",)),
    ("reports", ("searle_core.report",)),
    ("plotting", ("searle_core.plotting",)),
    ("notebook engine", ("searle_core.notebook",)),
    ("CLI", ("searle_core.cli", "searle_core.__main__")),
    ("public API", ("searle_core",)),
)
MAX_MODULE_LINES = 600
MAX_TOP_LEVEL_MODULES = 12


def _module_name(path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, int]]]:
    """Module -> the package modules it imports (``if TYPE_CHECKING`` blocks included), and every
    import of the package made inside a function (module, line)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    inner = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        # Imports at module level, including those under a top-level ``if`` (TYPE_CHECKING) or ``try``.
        top_level = {
            id(n)
            for top in tree.body
            for n in ast.walk(top)
            if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        }
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.ImportFrom):
                base = (
                    ".".join(package[: len(package) - node.level + 1] + [node.module or ""])
                    if node.level
                    else node.module or ""
                )
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                targets = [a.name for a in node.names]
            targets = [t.rstrip(".") for t in targets if t.startswith("searle_core")]
            if targets and id(node) not in top_level:
                inner.append((name, node.lineno))
            edges[name].update(t for t in targets if t in modules and t != name)
    return edges, inner


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of the layer ``module`` belongs to (the longest matching prefix)."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS or move it into one")
    return best


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{m} ({LAYERS[layer_of(m)][0]}) -> {t} ({LAYERS[layer_of(t)][0]})"
        for m, ts in edges.items()
        for t in ts
        if layer_of(t) > layer_of(m)
    )


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                found = visit(target, path + [target])
                if found:
                    return found
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_every_module_is_in_a_layer_and_imports_only_downward():
    edges, _ = import_graph()
    wrong = upward_imports(edges)
    assert not wrong, "imports that run back up:\n" + "\n".join(wrong)


def test_no_import_cycle_and_imports_at_the_top():
    edges, inner = import_graph()
    assert not inner, f"imports of searle_core inside functions: {inner[:5]}"
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_modules_are_short_and_the_top_level_is_small():
    long = sorted(
        f"{p.relative_to(REPO_ROOT)}: {n}"
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    )
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_the_checks_see_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The checker itself: a planted upward import (under TYPE_CHECKING), a cycle and an inner import
    are each reported."""
    package = tmp_path / "searle_core"
    for folder in ("infra", "clip"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "infra" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from searle_core.clip import b\n"
    )
    (package / "clip" / "b.py").write_text("def f():\n    from searle_core.clip import c\n")
    (package / "clip" / "c.py").write_text("from searle_core.clip import d\n")
    (package / "clip" / "d.py").write_text("from searle_core.clip import c\n")
    monkeypatch.setitem(globals(), "REPO_ROOT", tmp_path)
    monkeypatch.setitem(globals(), "PACKAGE", package)
    edges, inner = import_graph()
    assert edges["searle_core.infra.a"] == {"searle_core.clip.b"} and inner == [("searle_core.clip.b", 2)]
    with pytest.raises(AssertionError, match="run back up"):
        test_every_module_is_in_a_layer_and_imports_only_downward()
    with pytest.raises(AssertionError, match="inside functions"):
        test_no_import_cycle_and_imports_at_the_top()
    assert find_cycle(edges) == ["searle_core.clip.c", "searle_core.clip.d", "searle_core.clip.c"]


# ---- the method: small, alone, and readable in one sitting -------------------------------------------
METHOD = PACKAGE / "method"
#: What the method may import from the package: itself and three infrastructure modules.
METHOD_MAY_IMPORT = {"searle_core.infra.device", "searle_core.infra.errors", "searle_core.infra.distributed"}
#: Line budgets: the method is read in one sitting, and the whole package stays small.
METHOD_LINES, PACKAGE_LINES = 1_500, 12_000
#: Names of the harness the method never says: the offline world and the datasets.
HARNESS_WORDS = re.compile(r"\bshapes\b|searle_core\.world|\bworld\b|\bcirr\b|fashion-?iq|\bcirco\b", re.I)


def _lines(folder) -> int:
    return sum(len(p.read_text().splitlines()) for p in folder.rglob("*.py"))


def test_method_imports_only_itself_and_three_infra_modules():
    edges, _ = import_graph()
    method = {m for m in edges if m == "searle_core.method" or m.startswith("searle_core.method.")}
    outside = sorted({t for m in method for t in edges[m] if t not in method and t not in METHOD_MAY_IMPORT})
    assert not outside, f"the method imports harness modules: {outside}"


def test_importing_the_method_loads_no_harness_and_the_package_runs_nothing():
    code = (
        "import sys, open_clip, searle_core; top = sorted(k for k in sys.modules if k.startswith('searle_core'));"
        "import searle_core.method; mods = sorted(k for k in sys.modules if k.startswith('searle_core'));"
        "print(top); print(mods); print('shapes-clip' in open_clip.list_models())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    top, mods, registered = ast.literal_eval(out[0]), ast.literal_eval(out[1]), out[2]
    assert top == ["searle_core", "searle_core.infra", "searle_core.infra.version"], top
    assert len(mods) <= 20, mods
    assert not [m for m in mods if m.split(".")[1:2] in (["world"], ["jobs"], ["baselines"], ["cli"], ["datasets"])]
    assert registered == "False"  # the world registers its CLIP only when it is asked for


def test_method_names_no_world_or_dataset():
    said = [
        f"{p.relative_to(REPO_ROOT)}:{i}: {line.strip()}"
        for p in METHOD.rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if HARNESS_WORDS.search(line)
    ]
    assert not said, said
    assert HARNESS_WORDS.search("on the shapes world") and not HARNESS_WORDS.search("world_size = 2")  # the check


def test_line_budgets():
    assert _lines(METHOD) <= METHOD_LINES, f"searle_core/method: {_lines(METHOD)} lines"
    assert _lines(PACKAGE) <= PACKAGE_LINES, f"searle_core: {_lines(PACKAGE)} lines"


def test_the_world_opens_when_its_benchmark_is_asked_for():
    code = (
        "import sys; from searle_core.datasets import load_benchmark; before = 'searle_core.world' in sys.modules;"
        "bench = load_benchmark('shapes', split='val', quick=True); print(before, len(bench.queries) > 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"], out
