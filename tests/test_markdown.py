"""Markdown shows `$` as `$`: no notebook cell or README has a dollar a renderer reads as LaTeX.

JupyterLab and GitHub render ``$…$`` as math, so "a photo of $ that {caption}" written bare would show
the words between two dollars in math italics. The browser test (``tests/browser``) checks the
rendered notebooks; this test checks the source, without a browser.
"""

import nbformat
import pytest
from markdown_source import bare_dollar_lines, means_math

from searle_core.infra.paths import REPO_ROOT
from searle_core.notebook import papermill_runner as paper

DOCUMENTS = ("README.md", "notebooks/README.md", "data/README.md")
#: Markdown cells (notebook stem, cell id) that write LaTeX on purpose: the losses and the metrics.
MATH_CELLS: set[tuple[str, str]] = {
    ("01_textual_inversion", "oti-losses"),
    ("02_pseudo_word_visualisation", "wordness-formula"),
    ("03_training_phi", "phi-losses"),
    ("06_evaluation_and_circo", "metrics-formulas"),
}


def test_rule_catches_dollars_outside_code_escaped_or_not():
    assert bare_dollar_lines('query "a photo of $ that {caption}", with $ = v*') == [
        'query "a photo of $ that {caption}", with $ = v*'
    ]
    assert bare_dollar_lines('## 5. "a photo of $" finds its own image') != []
    assert bare_dollar_lines("`a photo of $ that {caption}`, with `$` = v*, costs `$0`") == []
    assert bare_dollar_lines("``a `$` in code``\n```bash\necho $HOME\n```\n") == []
    assert bare_dollar_lines("costs \\$0 or \\$1")  # JupyterLab renders escaped dollars as math too
    assert means_math("the loss $\\mathcal{L}$") and means_math("\\\\(x^2\\\\)")
    assert not means_math("a Markdown escape, \\(y\\), is a plain parenthesis")
    assert not means_math("`a photo of $` and `$5`")


@pytest.mark.parametrize("stem", paper.NOTEBOOKS)
def test_notebook_markdown_has_no_bare_dollar(stem):
    nb = nbformat.read(paper.notebook_path(stem), as_version=4)
    stray = {
        cell.id: bare_dollar_lines(cell.source)
        for cell in nb.cells
        if cell.cell_type == "markdown" and (stem, cell.id) not in MATH_CELLS
    }
    assert not {k: v for k, v in stray.items() if v}, f"{stem}: write the pseudo-word as code (notebooks/README.md)"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_documents_have_no_bare_dollar(document):
    assert bare_dollar_lines((REPO_ROOT / document).read_text()) == []
