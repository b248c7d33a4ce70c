"""The notebooks as people see them: JupyterLab in headless Chromium.

Every notebook: each Markdown cell renders LaTeX only where its source means math (``$`` outside code,
``\\(``, ``\\[``; the project writes none) and every Markdown image loads. Notebook 1: Run All Cells
through the menu with its quick defaults, no error output, and the explorer widget answers a typed
caption with a new result grid, names a word the world CLIP never learned, and starts from the last
query of the benchmark (its reference inverted on the spot). A control notebook first shows that both detectors fire.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat
import pytest
from markdown_source import means_math

from searle_core.notebook import papermill_runner as paper

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Per Markdown cell, in notebook order: rendered LaTeX elements, and each image with whether it loaded.
_MARKDOWN_STATE = """() => Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell'))
  .filter(c => c.classList.contains('jp-MarkdownCell'))
  .map(c => ({rendered: c.querySelector('.jp-RenderedMarkdown') !== null,
              math: c.querySelectorAll('.jp-RenderedMarkdown mjx-container, .jp-RenderedMarkdown .MathJax').length,
              images: Array.from(c.querySelectorAll('.jp-RenderedMarkdown img'))
                .map(i => ({src: i.getAttribute('src'), complete: i.complete,
                            loaded: i.complete && i.naturalWidth > 0}))}))"""
_PROMPTS = (
    "() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')).map(e => e.textContent)"
)
_STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
CAPTION = "is on a white background"


def _open(page, lab, name: str, n_cells: int) -> None:
    """The notebook alone in a fresh workspace (no tabs restored from an earlier page)."""
    page.goto(lab.url(f"lab/workspaces/{name.replace('.', '-')}-{time.monotonic_ns()}/tree/{name}"))
    page.wait_for_function(f"document.querySelectorAll('.jp-Notebook .jp-Cell').length === {n_cells}")


def _markdown_state(page, n_markdown: int, settle_s: float) -> list[dict]:
    """The Markdown cells once rendered, their images settled, and MathJax given ``settle_s`` to typeset."""
    deadline = time.monotonic() + 60
    while True:
        state = page.evaluate(_MARKDOWN_STATE)
        done = len(state) == n_markdown and all(
            c["rendered"] and all(i["complete"] for i in c["images"]) for c in state
        )
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert len(state) == n_markdown and all(c["rendered"] for c in state), "Markdown cells did not render"
    time.sleep(settle_s)
    return page.evaluate(_MARKDOWN_STATE)


@pytest.fixture(scope="module")
def typeset_s(lab, page_factory):
    """Seconds MathJax takes to typeset a cell that means math, measured on a control notebook (three
    times it, at least 2 s, is how long the real notebooks are given). The control also shows that the
    detectors fire: math where a source means it (the old bare-dollar prose and escaped dollars included),
    none in code spans, and a broken image."""
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(lab.root / "control.png")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": paper.KERNEL, "display_name": paper.KERNEL_DISPLAY_NAME, "language": "python"}
    sources = [
        "Intended math: $x^2 + y^2$.",
        "As the rule writes it: `a photo of $ that {caption}`, with `$` = v\\*, costs `$0` or `$1`.",
        'The old prose: the query "a photo of $ that {caption}", with $ = the OTI token.',
        "Escaped dollars are math in JupyterLab 4 all the same: costs \\$0 or \\$1.",
        "JupyterLab reads math in parentheses with two backslashes, \\\\(x^2\\\\), not one: \\(y\\).",
        "![loads](control.png) and ![does not](missing.png)",
    ]
    nb.cells = [nbformat.v4.new_markdown_cell(s) for s in sources]
    nbformat.write(nb, lab.root / "control.ipynb")
    page = page_factory()
    _open(page, lab, "control.ipynb", len(sources))
    start = time.monotonic()
    page.wait_for_function(
        "document.querySelectorAll('.jp-RenderedMarkdown mjx-container').length >= 4", timeout=30_000
    )
    seconds = time.monotonic() - start
    state = _markdown_state(page, len(sources), 1.0)
    assert [c["math"] > 0 for c in state] == [means_math(s) for s in sources] == [True, False, True, True, True, False]
    assert [i["loaded"] for i in state[5]["images"]] == [True, False]
    lab.summary["mathjax_typeset_s"] = round(seconds, 2)
    return max(2.0, 3 * seconds)


@pytest.mark.parametrize("stem", paper.NOTEBOOKS)
def test_markdown_renders_as_written(stem, lab, page, typeset_s, run_dir):
    nb = nbformat.read(lab.root / f"{stem}.ipynb", as_version=4)
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    _open(page, lab, f"{stem}.ipynb", len(nb.cells))
    state = _markdown_state(page, len(markdown), typeset_s)
    page.screenshot(path=str(run_dir / f"{stem}.png"))
    wrong_math = [
        (c.id, s["math"], c.source.splitlines()[0])
        for c, s in zip(markdown, state)
        if (s["math"] > 0) != means_math(c.source)
    ]
    assert not wrong_math, (
        f"{stem}: Markdown cells whose rendered LaTeX differs from what the source means: {wrong_math}"
    )
    broken = [(c.id, i["src"]) for c, s in zip(markdown, state) for i in s["images"] if not i["loaded"]]
    assert not broken, f"{stem}: Markdown images that do not load: {broken}"


def _run_all(page, n_code: int, timeout_s: float = 900) -> list[str]:
    """Run → Run All Cells from the menu bar, then wait until no cell is queued or running and every code
    cell is numbered or the run stopped at an error. Returns the input prompts."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    deadline = time.monotonic() + timeout_s
    while True:
        prompts = page.evaluate(_PROMPTS)
        numbered = [p for p in prompts if any(ch.isdigit() for ch in p)]
        if not any("*" in p for p in prompts) and (len(numbered) == n_code or _error_outputs(page)):
            return prompts
        assert time.monotonic() < deadline, f"Run All Cells still running after {timeout_s:.0f} s: {prompts}"
        time.sleep(1)


def _error_outputs(page) -> list[str]:
    """Error outputs as JupyterLab shows them (stderr-typed text with a traceback or an ``…Error:`` line)."""
    texts = [e.inner_text() for e in page.locator(_STDERR).all()]
    return [t[:300] for t in texts if "Traceback" in t or re.search(r"^\w*Error\b", t, re.M)]


def _saved_errors(page, path: Path) -> list[dict]:
    """Save with Ctrl+S and read the file back: the error outputs the kernel produced."""
    page.locator(".jp-NotebookPanel .jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    saved = _read_saved(path)
    while not any(c.get("outputs") for c in saved.cells):
        assert time.monotonic() < deadline, f"Ctrl+S did not save {path.name}"
        time.sleep(0.5)
        saved = _read_saved(path)
    return [o for c in saved.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


def _read_saved(path: Path):
    """The notebook as saved; an empty one while JupyterLab is still writing the file (read again later)."""
    try:
        return nbformat.read(path, as_version=4)
    except ValueError:  # nbformat's NotJSONError: the file caught between truncation and its new content
        return nbformat.v4.new_notebook()


def _wait_for_kernel(page) -> None:
    """The notebook's own kernel (not a kernel chooser), idle."""
    kernel = page.locator('.jp-NotebookPanel [data-jp-item-name="kernelName"]')
    kernel.filter(has_text=paper.KERNEL_DISPLAY_NAME).wait_for()
    page.wait_for_function(
        "document.querySelector('.jp-NotebookPanel [data-jp-item-name=\"executionProgress\"]')"
        "?.textContent.includes('Idle')",
        timeout=120_000,
    )


def test_a_failing_cell_is_seen(lab, page):
    """The run's error checks fire: a cell that raises stops Run All Cells, shows its traceback, and the
    saved notebook holds the error output."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": paper.KERNEL, "display_name": paper.KERNEL_DISPLAY_NAME, "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in ("x = 1", "raise ValueError(f'boom {x}')", "y = 2")]
    nbformat.write(nb, lab.root / "failing.ipynb")
    _open(page, lab, "failing.ipynb", 3)
    _wait_for_kernel(page)
    prompts = _run_all(page, 3, timeout_s=120)
    assert [p.strip() for p in prompts] == ["[1]:", "[2]:", "[ ]:"]
    assert any("ValueError: boom 1" in e for e in _error_outputs(page))
    assert [e["ename"] for e in _saved_errors(page, lab.root / "failing.ipynb")] == ["ValueError"]


def _wait_for_new_grid(page, explorer, before: str) -> None:
    """Until the explorer's result grid is a new, loaded image (its ``src`` differs from ``before``)."""
    page.wait_for_function(
        "([el, old]) => { const img = el.querySelector('.widget-output img');"
        " return img && img.getAttribute('src') !== old && img.complete; }",
        arg=[explorer.element_handle(), before],
        timeout=60_000,
    )


def test_notebook_1_runs_in_the_ui_and_its_explorer_answers(lab, page, run_dir):
    from searle_core.infra.paths import cache_dir
    from searle_core.world.world_clip import WORLD_BACKBONE, WorldCLIPConfig

    stem = "01_textual_inversion"
    nb = nbformat.read(lab.root / f"{stem}.ipynb", as_version=4)
    n_code = sum(c.cell_type == "code" for c in nb.cells)
    # Without the quick world CLIP cached, the run includes training it (1-2 min on a laptop).
    quick_clip = cache_dir("world_clip") / f"{WORLD_BACKBONE}-{WorldCLIPConfig.quick().cache_key()}.pt"
    lab.summary["world_clip_cached_before"] = quick_clip.is_file()
    _open(page, lab, f"{stem}.ipynb", len(nb.cells))
    _wait_for_kernel(page)
    start = time.perf_counter()
    prompts = _run_all(page, n_code)
    lab.summary["notebook_1_run_all_s"] = round(time.perf_counter() - start, 1)
    page.screenshot(path=str(run_dir / f"{stem}-after-run.png"))
    assert not _error_outputs(page), f"error output in notebook 1: {_error_outputs(page)}"
    assert all(any(ch.isdigit() for ch in p) for p in prompts), f"not every code cell ran: {prompts}"
    assert not _saved_errors(page, lab.root / f"{stem}.ipynb")

    explorer = page.locator(".jp-OutputArea .widget-vbox").last
    explorer.scroll_into_view_if_needed()
    grid = explorer.locator(".widget-output img").first
    grid.wait_for()
    before = grid.get_attribute("src")
    explorer.screenshot(path=str(run_dir / "explorer-before.png"))
    box = explorer.locator(".widget-text input").first
    assert box.input_value() == "is blue"
    typed = time.perf_counter()
    box.fill(CAPTION)
    box.press("Enter")
    _wait_for_new_grid(page, explorer, before)
    lab.summary["explorer_redraw_s"] = round(time.perf_counter() - typed, 2)
    explorer.screenshot(path=str(run_dir / "explorer-after.png"))
    assert not explorer.locator(_STDERR).count(), explorer.inner_text()

    # A word the world CLIP never learned is named, with the words it knows.
    box.fill("is crimson")
    box.press("Enter")
    explorer.get_by_text("never learned 'crimson'").wait_for(timeout=60_000)

    # Any query of the benchmark: the last one's reference is inverted on the spot, its caption taken.
    number = explorer.locator("input[type=number]")
    last = number.get_attribute("max")
    number.fill(last)
    number.press("Enter")
    before = explorer.locator(".widget-output img").first.get_attribute("src")
    clicked = time.perf_counter()
    explorer.get_by_role("button", name="start from this query").click()
    _wait_for_new_grid(page, explorer, before)
    lab.summary["explorer_from_query_s"] = round(time.perf_counter() - clicked, 2)
    explorer.screenshot(path=str(run_dir / "explorer-from-query.png"))
    assert box.input_value() not in ("is crimson", ""), "the query's caption replaced the typed one"
    assert f"query {last}: " in explorer.locator("select").inner_text().replace("\xa0", " ")  # the DOM's spaces
    assert not explorer.get_by_text("never learned").count() and not explorer.locator(_STDERR).count()


@pytest.mark.parametrize("stem", ["03_training_phi", "06_evaluation_and_circo"])
def test_notebook_runs_in_the_ui_with_its_formulas(stem, lab, page, run_dir):
    """Notebooks 3 and 6 (the written-out φ training; the metrics) run with Run All Cells without an error,
    and their formulas are typeset (MathJax output in the Markdown cells whose source means math)."""
    nb = nbformat.read(lab.root / f"{stem}.ipynb", as_version=4)
    n_code = sum(c.cell_type == "code" for c in nb.cells)
    _open(page, lab, f"{stem}.ipynb", len(nb.cells))
    _wait_for_kernel(page)
    start = time.perf_counter()
    prompts = _run_all(page, n_code)
    lab.summary[f"{stem}_run_all_s"] = round(time.perf_counter() - start, 1)
    page.screenshot(path=str(run_dir / f"{stem}-after-run.png"))
    assert not _error_outputs(page), f"error output in {stem}: {_error_outputs(page)}"
    assert all(any(ch.isdigit() for ch in p) for p in prompts), f"not every code cell ran: {prompts}"
    assert not _saved_errors(page, lab.root / f"{stem}.ipynb")
    math = page.locator(".jp-RenderedMarkdown mjx-container").count()
    assert math >= sum(means_math(c.source) for c in nb.cells if c.cell_type == "markdown"), math
