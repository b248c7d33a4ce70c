"""What Markdown source means to a renderer that reads ``$…$`` as LaTeX (JupyterLab, GitHub).

The project's rule (``notebooks/README.md``): the pseudo-word ``$`` is always code, alone (`` `$` ``)
or inside a prompt written as one code span (`` `a photo of $ that {caption}` ``), and so is any
other dollar. Escaping is no way out: JupyterLab 4 turns ``\\$`` into ``$`` before MathJax reads the
page, so ``\\$0 or \\$1`` still renders as math (the browser test's control notebook shows it).
Shared by the source test and the browser test.
"""

from __future__ import annotations

import re

_FENCED = re.compile(r"^ {0,3}(```+|~~~+).*?^ {0,3}\1[ \t]*$", re.S | re.M)
_CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
_BARE_DOLLAR = re.compile(r"\$")
# Delimiters JupyterLab's math pass reads besides $: \\(…\\) and \\[…\\] with two backslashes in the
# source (one is a Markdown escape, so \( shows a plain parenthesis), and environments.
_OTHER_MATH = re.compile(r"\\\\\(|\\\\\[|\\begin\{")


def without_code(source: str) -> str:
    """The Markdown with fenced blocks and inline code spans removed (renderers leave them verbatim)."""
    return _CODE_SPAN.sub("", _FENCED.sub("", source))


def bare_dollar_lines(source: str) -> list[str]:
    """The lines (code removed) that hold a ``$``, escaped or not: where a renderer may start LaTeX."""
    return [line for line in without_code(source).splitlines() if _BARE_DOLLAR.search(line)]


def means_math(source: str) -> bool:
    """Whether the source writes LaTeX on purpose: ``$``, ``\\\\(``, ``\\\\[`` or ``\\begin{`` outside code.
    Under the rule above, a ``$`` outside code can only be math."""
    text = without_code(source)
    return bool(_BARE_DOLLAR.search(text) or _OTHER_MATH.search(text))
