"""What pseudo-words look like: nearest words, S*'s path in 2-D, word-likeness, OTI vs φ."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from searle_core.plotting.common import SERIES_COLOURS, new_axes, show_image


def plot_nearest_words(
    words: Sequence[tuple[str, float]],
    ax: Axes | None = None,
    title: str | None = None,
    colour: str = SERIES_COLOURS["OTI"],
) -> Figure:
    """Horizontal bars of a token's nearest vocabulary words and their cosine similarity.

    Args:
        words: ``[(word, cosine), ...]`` best first (``inversion.nearest.nearest_words`` output).
        ax: axes.
        title: e.g. the image's caption.
        colour: bar colour.
    """
    fig, ax = new_axes(ax, figsize=(3.2, 2.6))
    labels = [w for w, _ in words]
    values = [s for _, s in words]
    ax.barh(range(len(words)), values, color=colour)
    ax.set_yticks(range(len(words)), labels, fontsize=9)
    ax.invert_yaxis()
    lo = min(0.0, min(values, default=0.0))
    ax.set_xlim(lo, max(max(values, default=0.0) * 1.25, 0.05))
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
    """One column per image: the image on top, its token's nearest words below (two rows of bars
    when ``extra_words`` gives a second token per image, e.g. φ's beside OTI's).

    Args:
        images: PIL images or arrays.
        words: nearest words of each image's token.
        titles: per image, e.g. its caption.
        extra_words: nearest words of a second token per image.
        labels: names of the two tokens (bar colours follow them).
        fig: figure to draw in (a new one sized to the grid if ``None``).
    """
    n = len(images)
    rows = 2 + (extra_words is not None)
    fig = fig or plt.figure(figsize=(2.7 * n, 2.3 + 2.4 * (rows - 1)), layout="constrained")
    axes = fig.subplots(rows, n, squeeze=False, gridspec_kw={"height_ratios": [0.9] + [1.2] * (rows - 1)})
    for i in range(n):
        show_image(axes[0, i], images[i], titles[i] if titles else None)
        plot_nearest_words(
            words[i],
            axes[1, i],
            title=f"{labels[0]} token" if extra_words is not None else None,
            colour=SERIES_COLOURS.get(labels[0], SERIES_COLOURS["OTI"]),
        )
        if extra_words is not None:
            plot_nearest_words(
                extra_words[i],
                axes[2, i],
                title=f"{labels[1]} token",
                colour=SERIES_COLOURS.get(labels[1], SERIES_COLOURS["φ"]),
            )
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
    """S*'s path during OTI projected in 2-D among the vocabulary words nearest to it.

    A 2-D projection cannot keep every distance, so the path's end may look nearer to some word
    than it is; ``end_words`` draws a dotted line from the end to each word it is truly nearest to
    (cosine in the full token space, written at the word), so the reader sees where it ended.

    Args:
        words_xy: (W, 2) projected word-embedding rows.
        word_labels: the W words.
        path_xy: (T, 2) projected tokens along the optimisation (start to end).
        ax: axes (several paths can share one by calling again with the same ``ax``).
        title: plot title.
        label: legend label of the path.
        colour: path colour.
        steps: the OTI step of each path point (start and end are annotated with them).
        end_words: ``[(word, cosine), ...]`` the end's nearest words (each must be in
            ``word_labels``; ``inversion.nearest.nearest_words`` of the last token).
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
        ax.annotate(
            f"step {steps[0]}", path_xy[0], fontsize=9, color=colour, xytext=(4, -10), textcoords="offset points"
        )
        ax.annotate(
            f"step {steps[-1]}", path_xy[-1], fontsize=9, color=colour, xytext=(7, 5), textcoords="offset points"
        )
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
    """How word-like tokens are, per setting: cosine to the nearest real word, and the token's norm.

    Args:
        table: one row per token with columns ``setting`` (name given by ``setting``), ``cosine``
            (to the nearest real word) and ``norm`` (``explain.token_wordness`` output).
        axes: one axes per column (a new figure if ``None``).
        setting: the column that names the settings compared.
        word_norm: mean norm of real word embeddings, drawn as a reference line.
        columns: which measures to draw, one panel each.
    """
    if axes is None:
        fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.2), layout="constrained", squeeze=False)
        axes = axes[0]
    fig = axes[0].figure
    settings = list(dict.fromkeys(table[setting]))
    palette = plt.get_cmap("tab10")
    labels = {
        "cosine": "cosine to the nearest real word",
        "norm": "token norm",
        "distance": "L2 distance to the nearest word",
    }
    for ax, column in zip(axes, columns):
        label = labels.get(column, column)
        for i, name in enumerate(settings):
            values = table.loc[table[setting] == name, column].to_numpy(dtype=float)
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
            ax.scatter(i + jitter, values, s=14, alpha=0.6, color=palette(i))
            ax.hlines(values.mean(), i - 0.3, i + 0.3, color="black", lw=2)
        if column == "norm" and word_norm is not None:
            ax.axhline(word_norm, ls="--", color="#777777", lw=1)
            # x in axes coordinates, y in data: the label stays inside the panel whatever the settings.
            ax.text(
                0.02,
                word_norm,
                "mean norm of real words",
                transform=ax.get_yaxis_transform(),
                fontsize=9,
                va="bottom",
                color="#555555",
            )
        ax.set_xticks(range(len(settings)), settings, fontsize=9)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    return fig


def plot_agreement(
    values: Sequence[float],
    ax: Axes | None = None,
    xlabel: str = "cosine(φ token, OTI token)",
    title: str = "OTI vs φ tokens, same images",
    reference: float | None = None,
    reference_label: str = "random pairs",
) -> Figure:
    """Histogram of a per-image agreement score, with an optional reference line (e.g. the mean over
    mismatched pairs, which shows what "no agreement" looks like)."""
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
