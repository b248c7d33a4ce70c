"""Shared pieces of the figures: axes creation, saving, images, colours."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from searle_core.report.table import DISPLAY_NAMES

#: One colour per method everywhere, so a reader learns them once (colour-blind safe tab10 order).
METHOD_COLOURS: dict[str, str] = {
    "image-only": "#7f7f7f",
    "text-only": "#bcbd22",
    "image+text": "#17becf",
    "captioning": "#8c564b",
    "palavra": "#9467bd",
    "pic2word": "#e377c2",
    "searle-oti": "#1f77b4",
    "searle": "#ff7f0e",
}
#: Colours of loss terms and of the two kinds of token.
SERIES_COLOURS: dict[str, str] = {
    "cos": "#1f77b4",
    "gpt": "#2ca02c",
    "total": "#222222",
    "distil": "#d62728",
    "OTI": "#1f77b4",
    "φ": "#ff7f0e",
    "raw": "#9ecae1",
    "EMA": "#08519c",
}
GROUND_TRUTH = "#2ca02c"
MISS = "#d9d9d9"


def method_colour(method: str) -> str:
    return METHOD_COLOURS.get(method, "#555555")


def method_label(method: str) -> str:
    return DISPLAY_NAMES.get(method, method)


def new_axes(ax: Axes | None = None, figsize: tuple[float, float] = (6, 4)) -> tuple[Figure, Axes]:
    """The given axes and their figure, or a fresh single-axes figure."""
    if ax is not None:
        return ax.figure, ax
    return plt.subplots(figsize=figsize, layout="constrained")


def figure_path(figures_dir: str | os.PathLike, name: str) -> Path:
    return Path(figures_dir) / f"{name}.png"


def save_figure(fig: Figure, figures_dir: str | os.PathLike | None, name: str, dpi: int = 150) -> None:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` (nothing for an empty ``figures_dir``).

    No "Software" metadata (matplotlib's version): the bytes depend on the figure only. Returns ``None``
    so that, as a cell's last line, it prints nothing.
    """
    if not figures_dir:
        return
    path = figure_path(figures_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white", metadata={"Software": None})


def show_image(
    ax: Axes, image: Image.Image | np.ndarray, title: str | None = None, border: str | None = None, fontsize: float = 9
) -> Figure:
    """An image without ticks, small ones with crisp pixels; ``border`` colours a thick frame."""
    array = np.asarray(image)
    ax.imshow(array, interpolation="nearest" if max(array.shape[:2]) < 128 else "antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(border is not None)
        if border is not None:
            spine.set_edgecolor(border)
            spine.set_linewidth(4)
    if title:
        ax.set_title(title, fontsize=fontsize)
    return ax.figure


def wrap(text: str, width: int = 28) -> str:
    """Break a caption into lines of at most ``width`` characters (titles of small panels)."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line] if line else lines)
