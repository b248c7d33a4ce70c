"""Figures of the notebooks: each function draws on a given ``ax`` (or makes one) and returns the figure, so
notebooks stay thin and tests check each figure without running a notebook; grids of many axes take ``fig``."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
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
GROUND_TRUTH, MISS = "#2ca02c", "#d9d9d9"
LOSS_LABELS = {
    "cos": "L_cos (template ↔ image)",
    "gpt": "L_gpt (phrase regulariser)",
    "total": "total (weighted mean)",
    "distil": "L_distil (contrastive to OTI tokens)",
}
WORDNESS_LABELS = {
    "cosine": "cosine to the nearest real word",
    "norm": "token norm",
    "distance": "L2 distance to the nearest word",
}


def method_colour(method: str) -> str:
    return METHOD_COLOURS.get(method, "#555555")


def method_label(method: str) -> str:
    return DISPLAY_NAMES.get(method, method)


def new_axes(ax: Axes | None = None, figsize: tuple[float, float] = (6, 4)) -> tuple[Figure, Axes]:
    """The given axes and their figure, or a fresh single-axes figure."""
    return (ax.figure, ax) if ax is not None else plt.subplots(figsize=figsize, layout="constrained")


def save_figure(fig: Figure, figures_dir: str | os.PathLike | None, name: str) -> None:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` (nothing for an empty ``figures_dir``), without the
    "Software" metadata, so the bytes depend on the figure only."""
    if not figures_dir:
        return
    path = Path(figures_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight", facecolor="white", metadata={"Software": None})


def show_image(
    ax: Axes, image: Image.Image | np.ndarray, title: str | None = None, border: str | None = None
) -> Figure:
    """An image without ticks, small ones with crisp pixels, in a thin grey frame (a white background would
    melt into the page) or a thick one of colour ``border``."""
    array = np.asarray(image)
    ax.imshow(array, interpolation="nearest" if max(array.shape[:2]) < 128 else "antialiased")
    ax.set(xticks=[], yticks=[])
    for spine in ax.spines.values():
        spine.set(visible=True, edgecolor=border or "#bbbbbb", linewidth=4 if border else 0.8)
    if title:
        ax.set_title(title, fontsize=9)
    return ax.figure


def wrap(text: str, width: int = 28) -> str:
    """Break a caption at spaces into lines of at most ``width`` characters (titles of small panels)."""
    return textwrap.fill(" ".join(text.split()), width, break_long_words=False, break_on_hyphens=False)


# ---- curves: OTI's losses per step, φ's losses and validation per epoch, timings ----------------------
def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (window 1 = raw): the template and phrase draws make steps noisy."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or len(values) < window:
        return values
    head = np.cumsum(values[: window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(values, np.ones(window) / window, mode="valid")])


def plot_series(
    series: Mapping[str, Sequence[float]],
    ax: Axes | None = None,
    x: Sequence[float] | None = None,
    xlabel: str = "step",
    ylabel: str = "",
    title: str | None = None,
    smooth: int = 1,
    labels: Mapping[str, str] | None = None,
) -> Figure:
    """Named curves on one axes (against ``x``, or their index), smoothed over ``smooth`` points, in the
    shared series colours; legend ``labels`` default to the spelled-out loss names."""
    fig, ax = new_axes(ax)
    labels = {**LOSS_LABELS, **(labels or {})}
    for name, values in series.items():
        xs = np.asarray(x if x is not None else np.arange(len(values)))
        ax.plot(xs, _smooth(values, smooth), label=labels.get(name, name), color=SERIES_COLOURS.get(name), lw=1.6)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=9)
    return fig


def plot_oti_losses(history: Mapping[str, Sequence[float]], ax: Axes | None = None) -> Figure:
    """OTI's ``cos``, ``gpt`` and ``total`` losses (``OTIResult.history``) per step, smoothed over 10; an
    all-zero phrase loss (regulariser off) is left out."""
    series = {k: v for k, v in history.items() if len(v) and (k != "gpt" or np.any(np.asarray(v) != 0))}
    labels = {"xlabel": "OTI step", "ylabel": "loss (1 − cosine)", "title": "OTI losses per step"}
    return plot_series(series, ax, smooth=10, **labels)


def plot_ema_vs_raw(steps: Sequence[int], ema: Sequence[float], raw_final: float, ax: Axes | None = None) -> Figure:
    """The EMA token's mean prompt-image similarity at the recorded OTI ``steps``, and the last raw token's;
    the end values go in the legend, where no label collides with it."""
    labels = {"EMA": f"EMA token (last step {ema[-1]:.2f})"}
    ylabel, title = "cos(“a photo of $”, image)", "the EMA token along OTI"
    fig = plot_series({"EMA": ema}, ax, x=steps, xlabel="OTI step", ylabel=ylabel, title=title, labels=labels)
    ax = ax or fig.axes[0]
    raw = f"raw token, last step ({raw_final:.2f})"
    ax.scatter(
        [steps[-1]], [raw_final], marker="D", s=40, color=SERIES_COLOURS["raw"], edgecolor="black", zorder=4, label=raw
    )
    ax.legend(frameon=False, fontsize=9, loc="best")
    return fig


def plot_phi_history(
    history: Sequence[Mapping[str, float]], ax: Axes | None = None, chance: float | None = None
) -> Figure:
    """φ's losses per epoch from ``PhiTrainingResult.history`` rows (missing or all-zero keys skipped), and
    ``chance``, L_distil when φ tells no token from another (ln(2N − 1) for a batch of N), dashed."""
    series = {k: [row[k] for row in history] for k in ("distil", "gpt", "total") if history and k in history[0]}
    series = {k: v for k, v in series.items() if np.any(np.asarray(v, dtype=float) != 0)}
    labels = {"total": "total (λ_distil·L_distil + λ_gpt·L_gpt)"}
    x = [row["epoch"] for row in history]
    fig = plot_series(series, ax, x=x, xlabel="epoch", ylabel="loss", title="φ training losses", labels=labels)
    if chance is not None:
        ax = ax or fig.axes[0]
        ax.axhline(chance, ls="--", lw=1, color=SERIES_COLOURS["distil"], label=f"L_distil at chance ({chance:.2f})")
        ax.legend(frameon=False, fontsize=9)
    return fig


def plot_validation(
    history: Sequence[Mapping[str, float]],
    metric: str,
    ax: Axes | None = None,
    reference: Mapping[str, float] | None = None,
    title: str | None = None,
) -> Figure:
    """φ's validation ``metric`` per epoch (rows without it skipped), with ``reference`` methods' values
    as dashed lines."""
    fig, ax = new_axes(ax)
    rows = [r for r in history if r.get(metric) is not None]
    x, y = [r["epoch"] for r in rows], [r[metric] for r in rows]
    ax.plot(x, y, marker="o", ms=3, color=SERIES_COLOURS["φ"], label="φ (SEARLE)")
    for name, value in (reference or {}).items():
        ax.axhline(value, ls="--", lw=1.2, color=method_colour(name), label=method_label(name))
    ax.set(xlabel="epoch", ylabel=f"{metric} (%)", title=title or f"validation {metric} per epoch")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=9)
    return fig


def plot_time_per_image(
    seconds: Mapping[str, float], ax: Axes | None = None, title: str = "time to invert one image"
) -> Figure:
    """Bars of seconds per image (log scale: OTI and φ differ by orders of magnitude)."""
    fig, ax = new_axes(ax, figsize=(5, 2.6))
    names, values = list(seconds), list(seconds.values())
    bars = ax.barh(names, values, color=[SERIES_COLOURS.get(n, "#555555") for n in names])
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (log scale)")
    for bar, value in zip(bars, values):
        label = f"{value * 1e3:.2f} ms" if value < 1 else f"{value:.2f} s"
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {label}", va="center", fontsize=9)
    ax.set_xlim(min(values) / 3, max(values) * 30)
    ax.invert_yaxis()
    ax.set_title(title)
    return fig


# ---- pseudo-words: nearest words, S*'s 2-D path, word-likeness, OTI vs φ ----------------------------
def plot_nearest_words(
    words: Sequence[tuple[str, float]], ax: Axes | None = None, title: str | None = None, colour: str | None = None
) -> Figure:
    """Horizontal bars of a token's nearest words and their cosine (``nearest_words`` output, best first)."""
    fig, ax = new_axes(ax, figsize=(3.2, 2.6))
    values = [s for _, s in words]
    ax.barh(range(len(words)), values, color=colour or SERIES_COLOURS["OTI"])
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
) -> Figure:
    """One column per image: the image on top, its token's nearest words below, and a second token's
    (``extra_words``, e.g. φ's beside OTI's) under them; ``labels`` name the two tokens and pick colours."""
    n, two = len(images), extra_words is not None
    rows = 2 + two
    fig = plt.figure(figsize=(2.7 * n, 2.3 + 2.4 * (rows - 1)), layout="constrained")
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
    """S*'s (T, 2) path during OTI among the (W, 2) projected words (same ``ax`` again: another path).
    A 2-D projection cannot keep every distance, so ``end_words`` (the end's true nearest words) are joined
    to the end by dotted lines, their cosine written at the word; ``steps`` labels start and end."""
    fig, ax = new_axes(ax, figsize=(5, 4.5))
    if not any(getattr(c, "_is_word_cloud", False) for c in ax.collections):
        cloud = ax.scatter(words_xy[:, 0], words_xy[:, 1], s=22, color="#999999", zorder=2)
        cloud._is_word_cloud = True
        # A label whose word sits near an earlier word's goes one line lower per such neighbour, not on top of it.
        near = np.ptp(words_xy, axis=0) * (0.08, 0.05) + 1e-12
        for i, ((x, y), word) in enumerate(zip(words_xy, word_labels)):
            below = int((np.abs(words_xy[:i] - (x, y)) < near).all(axis=1).sum())
            ax.annotate(
                word, (x, y), fontsize=9, color="#444444", xytext=(3, 3 - 10 * below), textcoords="offset points"
            )
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
    ax.set(xlabel="PC 1", ylabel="PC 2", xticks=[], yticks=[])
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=9, loc="best")
    return fig


def plot_wordness(
    table: pd.DataFrame,
    axes: Sequence[Axes] | None = None,
    word_norm: float | None = None,
    columns: Sequence[str] = ("cosine", "norm"),
) -> Figure:
    """How word-like tokens are per ``setting`` (``explain.token_wordness`` rows): one panel per measure of
    ``columns``, ``word_norm`` (real words' mean norm) as a reference line."""
    if axes is None:
        fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.2), layout="constrained", squeeze=False)
        axes = axes[0]
    settings = list(dict.fromkeys(table.setting))
    palette = plt.get_cmap("tab10")
    for ax, column in zip(axes, columns):
        for i, name in enumerate(settings):
            values = table.loc[table.setting == name, column].to_numpy(dtype=float)
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
            ax.scatter(i + jitter, values, s=14, alpha=0.6, color=palette(i))
            ax.hlines(values.mean(), i - 0.3, i + 0.3, color="black", lw=2)
        if column == "norm" and word_norm is not None:
            ax.axhline(word_norm, ls="--", color="#777777", lw=1)
            # x in axes coordinates, y in data: the label stays inside the panel whatever the settings.
            where = {"transform": ax.get_yaxis_transform(), "va": "bottom"}
            ax.text(0.02, word_norm, "mean norm of real words", fontsize=9, color="#555555", **where)
        ax.set_xticks(range(len(settings)), settings, fontsize=9)
        ax.set_ylabel(WORDNESS_LABELS.get(column, column))
        ax.grid(axis="y", alpha=0.3)
    return axes[0].figure


def plot_agreement(
    values: Sequence[float],
    ax: Axes | None = None,
    reference: float | None = None,
    reference_label: str = "random pairs",
) -> Figure:
    """Histogram of the cosine between φ's and OTI's token of each image, with an optional reference line
    (e.g. the mean over mismatched pairs: what "no agreement" looks like)."""
    fig, ax = new_axes(ax, figsize=(5, 3))
    values = np.asarray(values, dtype=float)
    ax.hist(values, bins=20, color=SERIES_COLOURS["φ"], alpha=0.8, label=f"same image (mean {values.mean():.2f})")
    if reference is not None:
        ax.axvline(reference, ls="--", color="#555555", label=f"{reference_label} (mean {reference:.2f})")
    ax.set(xlabel="cosine(φ token, OTI token)", ylabel="images", title="OTI vs φ tokens, same images")
    ax.legend(frameon=False, fontsize=9)
    return fig


# ---- retrieval example grids, bars of results and ablations ------------------------------------------
@dataclass
class RetrievalExample:
    """One row of a retrieval grid: the reference image, its caption, the top results best first, whether
    each is a ground truth, a label left of the row (e.g. the method) and optional per-result titles."""

    query_image: object
    caption: str
    results: Sequence[object]
    hits: Sequence[bool]
    label: str = ""
    result_titles: Sequence[str] = field(default_factory=list)


def image_row(images: Sequence[object], titles: Sequence[str] | None = None) -> Figure:
    """Images side by side with wrapped titles (e.g. the images about to be inverted)."""
    fig = plt.figure(figsize=(1.8 * len(images), 1.8 * 1.35), layout="constrained")
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for i, (ax, img) in enumerate(zip(axes, images)):
        show_image(ax, img, wrap(titles[i], 22) if titles else None)
    return fig


def retrieval_grid(examples: Sequence[RetrievalExample], title: str | None = None) -> Figure:
    """Rows of query image + caption, then the top results with ground truths framed in green."""
    k, n, cell = max(len(e.results) for e in examples), len(examples), 1.3  # cell: inches per image
    fig = plt.figure(figsize=(cell * (k + 1.6), cell * 1.25 * n + (0.4 if title else 0)), layout="constrained")
    axes = fig.subplots(n, k + 1, squeeze=False, gridspec_kw={"width_ratios": [1.6] + [1] * k})
    for row, example in enumerate(examples):
        head = f"{method_label(example.label)}\n" if example.label else ""
        show_image(axes[row, 0], example.query_image, border="#1f77b4")
        axes[row, 0].set_title(head + wrap(f"+ “{example.caption}”", 26), fontsize=9, loc="left")
        for j in range(k):
            ax = axes[row, j + 1]
            if j >= len(example.results):
                ax.axis("off")
                continue
            hit = bool(example.hits[j])
            sub = example.result_titles[j] if j < len(example.result_titles) else ""
            show_image(ax, example.results[j], border=GROUND_TRUTH if hit else MISS)
            color = GROUND_TRUTH if hit else "#444444"
            ax.set_title(f"{j + 1}{' ✓' if hit else ''}{(' ' + sub) if sub else ''}", fontsize=9, color=color)
    if title:
        fig.suptitle(title + "  (green frame: ground truth)", fontsize=10)
    return fig


def plot_method_bars(
    table: pd.DataFrame,
    metric: str,
    ax: Axes | None = None,
    group: str | None = None,
    paper: str | None = None,
    title: str | None = None,
    ylabel: str | None = None,
) -> Figure:
    """Bars of the ``metric`` column per ``method``, one bar group per value of ``group`` (e.g. backbone),
    and the ``paper`` column's values as black ticks."""
    fig, ax = new_axes(ax, figsize=(7, 3.4))
    groups = list(dict.fromkeys(table[group])) if group else [None]
    methods = list(dict.fromkeys(table.method))
    width = 0.8 / len(groups)

    def first(part: pd.DataFrame, column: str) -> list[float]:
        values = [part.loc[part.method == m, column] for m in methods]
        return [float(v.iloc[0]) if len(v) and pd.notna(v.iloc[0]) else np.nan for v in values]

    for g, name in enumerate(groups):
        part = table if name is None else table[table[group] == name]
        ys = first(part, metric)
        xs = np.arange(len(methods)) + (g - (len(groups) - 1) / 2) * width
        colours, hatch = [method_colour(m) for m in methods], ["", "//", "..", "xx"][g % 4]
        label = str(name) if len(groups) > 1 else None
        ax.bar(xs, ys, width=width * 0.95, color=colours, hatch=hatch, edgecolor="white", label=label)
        for x, y in zip(xs, ys):
            if not np.isnan(y):
                ax.text(x, y, f"{y:.1f}", ha="center", va="bottom", fontsize=9)
        if paper and paper in part:
            ps = np.array(first(part, paper))
            if np.isfinite(ps).any():
                label = "paper" if not any(c.get_label() == "paper" for c in ax.collections) else None
                ax.scatter(xs, ps, marker="_", s=300, linewidths=2.5, color="black", zorder=3, label=label)
    ax.set_xticks(np.arange(len(methods)), [method_label(m) for m in methods], rotation=20, ha="right", fontsize=9)
    ax.set_ylabel(ylabel or f"{metric} (%)")
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, fontsize=9)
    return fig


def plot_ablation(
    table: pd.DataFrame, metric: str, ax: Axes | None = None, baseline: str | None = None, title: str | None = None
) -> Figure:
    """Horizontal bars of ``metric`` per ablation variant (columns ``part``, ``variant``), grouped by part;
    the ``baseline`` variant (the full method) darker, with a dashed line."""
    fig, ax = new_axes(ax, figsize=(6.5, 0.32 * len(table) + 1.2))
    colours = {"OTI": method_colour("searle-oti"), "φ": method_colour("searle")}
    labels, positions, y = [], [], 0.0
    for part, rows in table.groupby("part", sort=False):
        colour = colours.get(part, "#777777")
        for _, row in rows.iterrows():
            full = baseline is not None and row["variant"] == baseline
            ax.barh(y, row[metric], color=colour, alpha=1.0 if full else 0.55)
            ax.text(row[metric], y, f" {row[metric]:.1f}", va="center", fontsize=9)
            if full:
                ax.axvline(row[metric], ls="--", lw=0.8, color=colour)
            labels.append(f"{part}: {row['variant']}")
            positions.append(y)
            y += 1
        y += 0.5  # each part starts half a bar after the previous one
    ax.set_yticks(positions, labels, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} (%)")
    ax.set_xlim(0, table[metric].max() * 1.18)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or f"ablations: {metric}")
    return fig


def plot_ablation_curve(
    x: Sequence[float],
    y: Sequence[float],
    ax: Axes | None = None,
    xlabel: str = "",
    metric: str = "",
    label: str | None = None,
    colour: str | None = None,
    logx: bool = False,
    reference: dict[str, float] | None = None,
    title: str | None = None,
) -> Figure:
    """One metric against an ablated quantity (OTI steps, % of φ's training images); call again with the
    same ``ax`` to add a curve. ``reference``: name -> value as dashed lines (e.g. image-only)."""
    fig, ax = new_axes(ax, figsize=(4.5, 3.2))
    ax.plot(x, y, marker="o", label=label, color=colour)
    for xi, yi in zip(x, y):
        ax.annotate(f"{yi:.1f}", (xi, yi), fontsize=9, xytext=(0, 5), textcoords="offset points", ha="center")
    for name, value in (reference or {}).items():
        ax.axhline(value, ls="--", lw=1, color=method_colour(name), label=method_label(name))
    if logx:
        ax.set_xscale("log")
    ax.set_xticks(list(x), [f"{v:g}" for v in x])
    ax.set(xlabel=xlabel, ylabel=f"{metric} (%)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if label or reference:
        ax.legend(frameon=False, fontsize=9)
    return fig
