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
    """One row of a retrieval grid.

    Args:
        query_image: the reference image.
        caption: the relative caption (or the whole prompt).
        results: the top-k retrieved images, best first.
        hits: per result, whether it is a ground truth (framed green) or not (framed grey).
        label: text left of the row, e.g. the method.
        result_titles: optional per-result titles (e.g. similarities).
    """

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
    """Rows of query image + caption, then the top-k results with ground truths framed in green.

    Args:
        examples: the rows (all with the same number of results).
        fig: figure to draw in (sized to the grid if ``None``).
        title: figure title.
        cell: inches per image.
    """
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
            ax.set_title(
                f"{j + 1}{' ✓' if hit else ''}{(' ' + sub) if sub else ''}",
                fontsize=9,
                color=GROUND_TRUTH if hit else "#444444",
            )
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
    """Bars of one metric per method (grouped by e.g. backbone), paper values as black ticks.

    Args:
        table: long or wide frame with columns ``method``, ``metric`` values under the column
            named ``metric``, an optional ``group`` column and an optional paper column.
        metric: the column holding the values to draw.
        ax: axes.
        method: the column naming methods.
        group: a column whose values get separate bar groups (e.g. ``backbone``).
        paper: a column of the paper's values, drawn as markers on the bars.
        title: title.
        ylabel: y label (default: ``"<metric> (%)"``).
    """
    fig, ax = new_axes(ax, figsize=(7, 3.4))
    groups = list(dict.fromkeys(table[group])) if group else [None]
    methods = list(dict.fromkeys(table[method]))
    width = 0.8 / len(groups)
    hatches = ["", "//", "..", "xx"]
    for g, name in enumerate(groups):
        part = table if name is None else table[table[group] == name]
        values = [part.loc[part[method] == m, metric] for m in methods]
        ys = [float(v.iloc[0]) if len(v) else np.nan for v in values]
        xs = np.arange(len(methods)) + (g - (len(groups) - 1) / 2) * width
        ax.bar(
            xs,
            ys,
            width=width * 0.95,
            color=[method_colour(m) for m in methods],
            hatch=hatches[g % 4],
            edgecolor="white",
            label=str(name) if len(groups) > 1 else None,
        )
        for x, y in zip(xs, ys):
            if not np.isnan(y):
                ax.text(x, y, f"{y:.1f}", ha="center", va="bottom", fontsize=9)
        if paper and paper in part:
            ps = [part.loc[part[method] == m, paper] for m in methods]
            ps = np.array([float(p.iloc[0]) if len(p) and pd.notna(p.iloc[0]) else np.nan for p in ps])
            if np.isfinite(ps).any():
                ax.scatter(
                    xs,
                    ps,
                    marker="_",
                    s=300,
                    linewidths=2.5,
                    color="black",
                    zorder=3,
                    label="paper" if not any(c.get_label() == "paper" for c in ax.collections) else None,
                )
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
    """Horizontal bars of one metric per ablation variant, grouped by part (OTI, φ).

    Args:
        table: ``ablations.ablation_table`` output: columns ``part``, ``variant`` and ``metric``.
        metric: the metric to draw.
        ax: axes.
        baseline: the variant name of the full method in each part (drawn darker, dashed line).
        title: title.
    """
    fig, ax = new_axes(ax, figsize=(6.5, 0.32 * len(table) + 1.2))
    colours = {"OTI": method_colour("searle-oti"), "φ": method_colour("searle")}
    labels, y = [], 0
    for part, rows in table.groupby("part", sort=False):
        for _, row in rows.iterrows():
            full = baseline is not None and row["variant"] == baseline
            ax.barh(y, row[metric], color=colours.get(part, "#777777"), alpha=1.0 if full else 0.55)
            ax.text(row[metric], y, f" {row[metric]:.1f}", va="center", fontsize=9)
            if full:
                ax.axvline(row[metric], ls="--", lw=0.8, color=colours.get(part, "#777777"))
            labels.append(f"{part}: {row['variant']}")
            y += 1
        y += 0.5
    # The bars' positions as drawn above: each part starts half a bar after the previous one.
    positions, y = [], 0.0
    for _, rows in table.groupby("part", sort=False):
        positions += [y + i for i in range(len(rows))]
        y += len(rows) + 0.5
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
    """One metric against an ablated quantity (OTI steps, % of φ's training images).

    Args:
        x, y: the curve.
        ax: axes (call again with the same axes to add a curve).
        xlabel: what varies.
        metric: y label.
        label: legend label.
        colour: line colour.
        logx: logarithmic x axis (data fractions).
        reference: name -> value drawn as dashed horizontal lines (e.g. image-only).
        title: title.
    """
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
