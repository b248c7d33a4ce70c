"""Curves: OTI's losses per step, φ's losses and validation metric per epoch, timings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from searle_core.plotting.common import SERIES_COLOURS, method_colour, method_label, new_axes

_LOSS_LABELS = {
    "cos": "L_cos (template ↔ image)",
    "gpt": "L_gpt (phrase regulariser)",
    "total": "total (weighted mean)",
    "distil": "L_distil (contrastive to OTI tokens)",
}


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (window 1 = raw); the template and phrase draws make steps noisy."""
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
    labels = {**_LOSS_LABELS, **(labels or {})}
    for name, values in series.items():
        xs = np.asarray(x if x is not None else np.arange(len(values)))
        ax.plot(xs, _smooth(values, smooth), label=labels.get(name, name), color=SERIES_COLOURS.get(name), lw=1.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=9)
    return fig


def plot_oti_losses(
    history: Mapping[str, Sequence[float]], ax: Axes | None = None, smooth: int = 10, title: str = "OTI losses per step"
) -> Figure:
    """OTI's ``cos``, ``gpt`` and ``total`` losses (``OTIResult.history``) per step; an all-zero phrase
    loss (regulariser off) is left out."""
    series = {k: v for k, v in history.items() if len(v) and (k != "gpt" or np.any(np.asarray(v) != 0))}
    return plot_series(series, ax, xlabel="OTI step", ylabel="loss (1 − cosine)", title=title, smooth=smooth)


def plot_ema_vs_raw(
    steps: Sequence[int],
    ema: Sequence[float],
    raw_final: float,
    ax: Axes | None = None,
    ylabel: str = "cos(“a photo of $”, image)",
    title: str = "the EMA token along OTI",
) -> Figure:
    """The EMA token's mean prompt-image similarity at the recorded OTI ``steps``, and the last raw token's.

    The end values are in the legend, not beside the points, where a label collided with the legend.
    """
    label = f"EMA token (last step {ema[-1]:.2f})"
    fig = plot_series({"EMA": ema}, ax, x=steps, xlabel="OTI step", ylabel=ylabel, title=title, labels={"EMA": label})
    ax = ax or fig.axes[0]
    raw = f"raw token, last step ({raw_final:.2f})"
    ax.scatter(
        [steps[-1]], [raw_final], marker="D", s=40, color=SERIES_COLOURS["raw"], edgecolor="black", zorder=4, label=raw
    )
    ax.legend(frameon=False, fontsize=9, loc="best")
    return fig


def plot_phi_history(
    history: Sequence[Mapping[str, float]],
    ax: Axes | None = None,
    keys: Sequence[str] = ("distil", "gpt", "total"),
    title: str = "φ training losses",
) -> Figure:
    """φ's losses per epoch from ``PhiTrainingResult.history`` rows (missing or all-zero keys skipped)."""
    series = {k: [row[k] for row in history] for k in keys if history and k in history[0]}
    series = {k: v for k, v in series.items() if np.any(np.asarray(v, dtype=float) != 0)}
    labels = {"total": "total (λ_distil·L_distil + λ_gpt·L_gpt)"}
    x = [row["epoch"] for row in history]
    return plot_series(series, ax, x=x, xlabel="epoch", ylabel="loss", title=title, labels=labels)


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
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title or f"validation {metric} per epoch")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=9)
    return fig


def plot_time_per_image(
    seconds: Mapping[str, float], ax: Axes | None = None, title: str = "time to invert one image"
) -> Figure:
    """Bars of seconds per image (log scale: OTI and φ differ by orders of magnitude)."""
    fig, ax = new_axes(ax, figsize=(5, 2.6))
    names = list(seconds)
    values = [seconds[n] for n in names]
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
