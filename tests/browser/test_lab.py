"""The notebooks as people see them: JupyterLab in headless Chromium.

Every notebook: each Markdown cell renders LaTeX only where its source means math (``$`` outside code,
``\\(``, ``\\[``; the project writes none) and every Markdown image loads. Notebook 1: Run All Cells
through the menu with its quick defaults, no error output, and the explorer widget answers a typed
caption with a new result grid. A control notebook first shows that both detectors fire.
"""

from __future__ import annotations

import time

import nbformat
import pytest

from markdown_source import means_math
from searle_core import paper

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Per Markdown cell, in notebook order: rendered LaTeX elements, and each image with whether it loaded.
_MARKDOWN_STATE = """() => Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell'))
  .filter(c => c.classList.contains('jp-MarkdownCell'))
  .map(c => ({rendered: c.querySelector('.jp-RenderedMarkdown') !== null,
              math: c.querySelectorAll('.jp-RenderedMarkdown mjx-container, .jp-RenderedMarkdown .MathJax').length,
              images: Array.from(c.querySelectorAll('.jp-RenderedMarkdown img'))
                .map(i => ({src: i.getAttribute('src'), complete: i.complete, loaded: i.complete && i.naturalWidth > 0}))}))"""
_PROMPTS = "() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')).map(e => e.textContent)"
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
        done = len(state) == n_markdown and all(c["rendered"] and all(i["complete"] for i in c["images"]) for c in state)
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
    sources = ["Intended math: $x^2 + y^2$.",
               "As the rule writes it: `a photo of $ that {caption}`, with `$` = v\\*, costs `$0` or `$1`.",
               'The old prose: the query "a photo of $ that {caption}", with $ = the OTI token.',
               "Escaped dollars are math in JupyterLab 4 all the same: costs \\$0 or \\$1.",
               "![loads](control.png) and ![does not](missing.png)"]
    nb.cells = [nbformat.v4.new_markdown_cell(s) for s in sources]
    nbformat.write(nb, lab.root / "control.ipynb")
    page = page_factory()
    _open(page, lab, "control.ipynb", len(sources))
    start = time.monotonic()
    page.wait_for_function("document.querySelectorAll('.jp-RenderedMarkdown mjx-container').length >= 3", timeout=30_000)
    seconds = time.monotonic() - start
    state = _markdown_state(page, len(sources), 1.0)
    assert [c["math"] > 0 for c in state] == [means_math(s) for s in sources] == [True, False, True, True, False]
    assert [i["loaded"] for i in state[4]["images"]] == [True, False]
    lab.summary["mathjax_typeset_s"] = round(seconds, 2)
    return max(2.0, 3 * seconds)


@pytest.mark.parametrize("stem", paper.NOTEBOOKS)
def test_markdown_renders_as_written(stem, lab, page, typeset_s, run_dir):
    nb = nbformat.read(lab.root / f"{stem}.ipynb", as_version=4)
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    _open(page, lab, f"{stem}.ipynb", len(nb.cells))
    state = _markdown_state(page, len(markdown), typeset_s)
    page.screenshot(path=str(run_dir / f"{stem}.png"))
    wrong_math = [(c.id, s["math"], c.source.splitlines()[0]) for c, s in zip(markdown, state)
                  if (s["math"] > 0) != means_math(c.source)]
    assert not wrong_math, f"{stem}: Markdown cells whose rendered LaTeX differs from what the source means: {wrong_math}"
    broken = [(c.id, i["src"]) for c, s in zip(markdown, state) for i in s["images"] if not i["loaded"]]
    assert not broken, f"{stem}: Markdown images that do not load: {broken}"


def test_notebook_1_runs_in_the_ui_and_its_explorer_answers(lab, page, run_dir):
    from searle_core.paths import data_dir

    stem = "01_textual_inversion"
    nb = nbformat.read(lab.root / f"{stem}.ipynb", as_version=4)
    n_code = sum(c.cell_type == "code" for c in nb.cells)
    world_clip_cached = any((data_dir() / "cache" / "world_clip").glob("*")) if (data_dir() / "cache").is_dir() else False
    _open(page, lab, f"{stem}.ipynb", len(nb.cells))
    kernel = page.locator('.jp-NotebookPanel [data-jp-item-name="kernelName"]')
    kernel.filter(has_text=paper.KERNEL_DISPLAY_NAME).wait_for()  # the notebook's own kernel, not a chooser
    page.wait_for_function("document.querySelector('.jp-NotebookPanel [data-jp-item-name=\"executionProgress\"]')"
                           "?.textContent.includes('Idle')", timeout=120_000)

    start = time.perf_counter()
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    deadline = time.monotonic() + 900
    while True:  # done: no cell queued or running, and every cell numbered or the run stopped at an error
        prompts = page.evaluate(_PROMPTS)
        running = [p for p in prompts if "*" in p]
        numbered = [p for p in prompts if any(ch.isdigit() for ch in p)]
        if not running and (len(numbered) == n_code or page.locator(_STDERR).filter(has_text="Traceback").count()):
            break
        assert time.monotonic() < deadline, f"Run All Cells still running after 900 s: {prompts}"
        time.sleep(1)
    seconds = time.perf_counter() - start
    lab.summary["notebook_1_run_all_s"] = round(seconds, 1)
    lab.summary["world_clip_cached_before"] = world_clip_cached
    page.screenshot(path=str(run_dir / f"{stem}-after-run.png"))

    errors = [e.inner_text()[:300] for e in page.locator(_STDERR).all() if "Traceback" in e.inner_text()
              or "Error" in e.inner_text().splitlines()[0]]
    assert not errors, f"error output in notebook 1: {errors}"
    assert len(numbered) == n_code, f"not every code cell ran: {prompts}"
    # The saved copy (in the run folder) shows what the kernel produced, error outputs included.
    page.locator(".jp-NotebookPanel .jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while not any(c.get("outputs") for c in nbformat.read(lab.root / f"{stem}.ipynb", as_version=4).cells):
        assert time.monotonic() < deadline, "Ctrl+S did not save notebook 1"
        time.sleep(0.5)
    saved = nbformat.read(lab.root / f"{stem}.ipynb", as_version=4)
    assert not [o for c in saved.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]

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
    page.wait_for_function("([el, old]) => { const img = el.querySelector('.widget-output img');"
                           " return img && img.getAttribute('src') !== old && img.complete; }",
                           arg=[explorer.element_handle(), before], timeout=60_000)
    lab.summary["explorer_redraw_s"] = round(time.perf_counter() - typed, 2)
    explorer.screenshot(path=str(run_dir / "explorer-after.png"))
    assert not explorer.locator(_STDERR).count(), explorer.inner_text()
