"""Retrieval example grids and bar charts of results and ablations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from searle_core.plotting.common import GROUND_TRUTH, MISS, method_colour, method_label, new_axes, show_image, wrap


@dataclass
class RetrievalExample:
    """One row of a retrieval grid: the reference image, its caption (or whole prompt), the top results
    best first, per result whether it is a ground truth, a label left of the row (e.g. the method) and
    optional per-result titles (e.g. similarities)."""

    query_image: object
    caption: str
    results: Sequence[object]
    hits: Sequence[bool]
    label: str = ""
    result_titles: Sequence[str] = field(default_factory=list)


def image_row(
    images: Sequence[object], titles: Sequence[str] | None = None, fig: Figure | None = None, cell: float = 1.8
) -> Figure:
    """Images side by side with wrapped titles (e.g. the images about to be inverted)."""
    fig = fig or plt.figure(figsize=(cell * len(images), cell * 1.35), layout="constrained")
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for i, (ax, img) in enumerate(zip(axes, images)):
        show_image(ax, img, wrap(titles[i], 22) if titles else None)
    return fig


def retrieval_grid(
    examples: Sequence[RetrievalExample], fig: Figure | None = None, title: str | None = None, cell: float = 1.3
) -> Figure:
    """Rows of query image + caption, then the top results with ground truths framed in green
    (``cell``: inches per image; ``fig`` sized to the grid if ``None``)."""
    k = max(len(e.results) for e in examples)
    n = len(examples)
    fig = fig or plt.figure(figsize=(cell * (k + 1.6), cell * 1.25 * n + (0.4 if title else 0)), layout="constrained")
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
    method: str = "method",
    group: str | None = None,
    paper: str | None = None,
    title: str | None = None,
    ylabel: str | None = None,
) -> Figure:
    """Bars of the ``metric`` column per ``method``, one bar group per value of ``group`` (e.g. backbone),
    and the ``paper`` column's values as black ticks."""
    fig, ax = new_axes(ax, figsize=(7, 3.4))
    groups = list(dict.fromkeys(table[group])) if group else [None]
    methods = list(dict.fromkeys(table[method]))
    width = 0.8 / len(groups)

    def first(part: pd.DataFrame, column: str) -> list[float]:
        values = [part.loc[part[method] == m, column] for m in methods]
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
    """Horizontal bars of ``metric`` per ablation variant (columns ``part``,
    ``variant``), grouped by part; the ``baseline`` variant (the full method) darker, with a dashed line."""
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
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if label or reference:
        ax.legend(frameon=False, fontsize=9)
    return fig
