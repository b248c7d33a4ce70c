"""What pseudo-words look like: nearest words, S*'s path in 2-D, word-likeness, OTI vs φ."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from searle_core.plotting.common import SERIES_COLOURS, new_axes, show_image

_WORDNESS_LABELS = {
    "cosine": "cosine to the nearest real word",
    "norm": "token norm",
    "distance": "L2 distance to the nearest word",
}


def plot_nearest_words(
    words: Sequence[tuple[str, float]],
    ax: Axes | None = None,
    title: str | None = None,
    colour: str = SERIES_COLOURS["OTI"],
) -> Figure:
    """Horizontal bars of a token's nearest words and their cosine (``nearest_words`` output, best first)."""
    fig, ax = new_axes(ax, figsize=(3.2, 2.6))
    values = [s for _, s in words]
    ax.barh(range(len(words)), values, color=colour)
    ax.set_yticks(range(len(words)), [w for w, _ in words], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(min(0.0, min(values, default=0.0)), max(max(values, default=0.0) * 1.25, 0.05))
    for i, value in enumerate(values):
        ax.text(value, i, f" {value:.2f}", va="center", fontsize=9)
    ax.set_xlabel("cosine to S*", fontsize=9)
    ax.tick_params(axis="x", labelsize=9)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def nearest_words_grid(
    images: Sequence,
    words: Sequence[Sequence[tuple[str, float]]],
    titles: Sequence[str] | None = None,
    extra_words: Sequence[Sequence[tuple[str, float]]] | None = None,
    labels: tuple[str, str] = ("OTI", "φ"),
    fig: Figure | None = None,
) -> Figure:
    """One column per image: the image on top, its token's nearest words below, and a second token's
    (``extra_words``, e.g. φ's beside OTI's) under them; ``labels`` name the two tokens and pick colours."""
    n, two = len(images), extra_words is not None
    rows = 2 + two
    fig = fig or plt.figure(figsize=(2.7 * n, 2.3 + 2.4 * (rows - 1)), layout="constrained")
    axes = fig.subplots(rows, n, squeeze=False, gridspec_kw={"height_ratios": [0.9] + [1.2] * (rows - 1)})
    for i in range(n):
        show_image(axes[0, i], images[i], titles[i] if titles else None)
        title = f"{labels[0]} token" if two else None
        plot_nearest_words(words[i], axes[1, i], title, SERIES_COLOURS.get(labels[0], SERIES_COLOURS["OTI"]))
        if two:
            colour = SERIES_COLOURS.get(labels[1], SERIES_COLOURS["φ"])
            plot_nearest_words(extra_words[i], axes[2, i], f"{labels[1]} token", colour)
    return fig


def plot_token_path(
    words_xy: np.ndarray,
    word_labels: Sequence[str],
    path_xy: np.ndarray,
    ax: Axes | None = None,
    title: str | None = None,
    label: str = "S*",
    colour: str = SERIES_COLOURS["EMA"],
    steps: Sequence[int] | None = None,
    end_words: Sequence[tuple[str, float]] | None = None,
) -> Figure:
    """S*'s (T, 2) path during OTI among the (W, 2) projected words; call again with the same ``ax`` for
    another path. ``steps`` annotates start and end with their OTI step.

    A 2-D projection cannot keep every distance, so ``end_words`` (the end's true nearest words, each among
    ``word_labels``) are joined to the end by dotted lines, with their cosine written at the word.
    """
    fig, ax = new_axes(ax, figsize=(5, 4.5))
    if not any(getattr(c, "_is_word_cloud", False) for c in ax.collections):
        cloud = ax.scatter(words_xy[:, 0], words_xy[:, 1], s=22, color="#999999", zorder=2)
        cloud._is_word_cloud = True
        for (x, y), word in zip(words_xy, word_labels):
            ax.annotate(word, (x, y), fontsize=9, color="#444444", xytext=(3, 3), textcoords="offset points")
    ax.plot(path_xy[:, 0], path_xy[:, 1], "-", color=colour, lw=1.5, alpha=0.9, label=label, zorder=3)
    ax.scatter(*path_xy[0], marker="o", s=40, facecolor="white", edgecolor=colour, zorder=4)
    ax.scatter(*path_xy[-1], marker="*", s=160, color=colour, edgecolor="black", lw=0.5, zorder=5)
    # Each path's cosines sit on their own line under the word, so two paths ending near it stay legible.
    series = getattr(ax, "_end_word_series", 0)
    for word, cosine in end_words or ():
        if word not in word_labels:
            raise ValueError(f"end word {word!r} is not among the plotted words {list(word_labels)}")
        x, y = words_xy[list(word_labels).index(word)]
        ax.plot([path_xy[-1, 0], x], [path_xy[-1, 1], y], ":", color=colour, lw=1.2, zorder=3)
        offset = (3, -11 - 10 * series)
        ax.annotate(f"{cosine:.2f}", (x, y), fontsize=9, color=colour, xytext=offset, textcoords="offset points")
    if end_words:
        ax._end_word_series = series + 1
    if steps is not None:
        for step, point, offset in ((steps[0], path_xy[0], (4, -10)), (steps[-1], path_xy[-1], (7, 5))):
            ax.annotate(f"step {step}", point, fontsize=9, color=colour, xytext=offset, textcoords="offset points")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=9, loc="best")
    return fig


def plot_wordness(
    table: pd.DataFrame,
    axes: Sequence[Axes] | None = None,
    setting: str = "setting",
    word_norm: float | None = None,
    columns: Sequence[str] = ("cosine", "norm"),
) -> Figure:
    """How word-like tokens are per setting (``explain.token_wordness`` rows, settings named by the
    ``setting`` column): one panel per measure of ``columns``, ``word_norm`` (real words' mean norm) as a
    reference line."""
    if axes is None:
        fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.2), layout="constrained", squeeze=False)
        axes = axes[0]
    settings = list(dict.fromkeys(table[setting]))
    palette = plt.get_cmap("tab10")
    for ax, column in zip(axes, columns):
        for i, name in enumerate(settings):
            values = table.loc[table[setting] == name, column].to_numpy(dtype=float)
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
            ax.scatter(i + jitter, values, s=14, alpha=0.6, color=palette(i))
            ax.hlines(values.mean(), i - 0.3, i + 0.3, color="black", lw=2)
        if column == "norm" and word_norm is not None:
            ax.axhline(word_norm, ls="--", color="#777777", lw=1)
            # x in axes coordinates, y in data: the label stays inside the panel whatever the settings.
            where = {"transform": ax.get_yaxis_transform(), "va": "bottom"}
            ax.text(0.02, word_norm, "mean norm of real words", fontsize=9, color="#555555", **where)
        ax.set_xticks(range(len(settings)), settings, fontsize=9)
        ax.set_ylabel(_WORDNESS_LABELS.get(column, column))
        ax.grid(axis="y", alpha=0.3)
    return axes[0].figure


def plot_agreement(
    values: Sequence[float],
    ax: Axes | None = None,
    xlabel: str = "cosine(φ token, OTI token)",
    title: str = "OTI vs φ tokens, same images",
    reference: float | None = None,
    reference_label: str = "random pairs",
) -> Figure:
    """Histogram of a per-image agreement score, with an optional reference line (e.g. the mean over
    mismatched pairs: what "no agreement" looks like)."""
    fig, ax = new_axes(ax, figsize=(5, 3))
    values = np.asarray(values, dtype=float)
    ax.hist(values, bins=20, color=SERIES_COLOURS["φ"], alpha=0.8, label=f"same image (mean {values.mean():.2f})")
    if reference is not None:
        ax.axvline(reference, ls="--", color="#555555", label=f"{reference_label} (mean {reference:.2f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=9)
    return fig
