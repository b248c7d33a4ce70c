"""Every plotting function draws on the axes it is given and returns that figure; saving works."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from searle_core import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def image(seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


def test_curves_draw_on_given_axes():
    fig, axes = plt.subplots(1, 4)
    history = {
        "cos": list(np.linspace(1, 0.2, 50)),
        "gpt": list(np.linspace(0.8, 0.3, 50)),
        "total": list(np.linspace(0.9, 0.25, 50)),
    }
    assert plotting.plot_oti_losses(history, ax=axes[0]) is fig
    assert len(axes[0].lines) == 3
    # A phrase loss of zeros (regulariser off) is not drawn.
    plotting.plot_oti_losses({**history, "gpt": [0.0] * 50}, ax=axes[1])
    assert len(axes[1].lines) == 2
    rows = [
        {"epoch": e, "distil": 2 - e / 10, "gpt": 0.5, "total": 2.5 - e / 10, "mAP@10": 10 + e} for e in range(1, 6)
    ]
    assert plotting.plot_phi_history(rows, ax=axes[2], chance=float(np.log(2 * 8 - 1))) is fig
    chance = [line for line in axes[2].lines if line.get_linestyle() == "--"]  # the chance level, dashed
    assert [line.get_ydata()[0] for line in chance] == [pytest.approx(np.log(15))]
    assert "L_distil at chance (2.71)" in [t.get_text() for t in axes[2].get_legend().get_texts()]
    assert plotting.plot_validation(rows, "mAP@10", ax=axes[3], reference={"searle-oti": 14.0}) is fig
    assert axes[3].lines[0].get_ydata().tolist() == [11, 12, 13, 14, 15]


@pytest.mark.parametrize("shape", ["rising", "still rising", "falling", "flat, raw below"])
def test_ema_panel_legend_clears_the_end_values(shape):
    """The EMA's and the raw token's last values are in the legend, and the legend covers neither the EMA
    curve's end nor the raw token's marker, whatever the curve does."""
    steps = np.arange(0, 151, 10)
    ema = {
        "rising": 0.9 - 0.3 * np.exp(-steps / 30),
        "still rising": 0.55 + 0.002 * steps,
        "falling": 0.9 - 0.002 * steps,
        "flat, raw below": 0.7 + 0.001 * np.sin(steps),
    }[shape]
    raw = float(ema[-1]) - (0.01 if shape != "flat, raw below" else 0.02)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    plotting.plot_ema_vs_raw(list(steps), list(ema), raw, ax=axes[1])
    fig.canvas.draw()
    ax = axes[1]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"EMA token (last step {ema[-1]:.2f})", f"raw token, last step ({raw:.2f})"]
    assert not ax.texts  # no label beside the points for the legend to cover
    legend = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
    for point in [(steps[-1], ema[-1]), (steps[-1], raw)]:
        assert not legend.contains(*ax.transData.transform(point)), (shape, point)


def test_time_per_image_is_log_scaled():
    fig = plotting.plot_time_per_image({"OTI": 0.5, "φ": 1e-5})
    assert fig.axes[0].get_xscale() == "log"


def test_token_plots():
    fig, axes = plt.subplots(1, 3)
    words = [("red", 0.8), ("circle", 0.5), ("blue", 0.1)]
    assert plotting.plot_nearest_words(words, ax=axes[0]) is fig
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["red", "circle", "blue"]
    words_xy = np.random.default_rng(0).normal(size=(5, 2))
    path = np.cumsum(np.random.default_rng(1).normal(size=(10, 2)), 0)
    assert plotting.plot_token_path(words_xy, list("abcde"), path, ax=axes[1], steps=list(range(10))) is fig
    # A second path on the same axes does not redraw the words.
    n_texts = len(axes[1].texts)
    plotting.plot_token_path(words_xy, list("abcde"), path + 1, ax=axes[1], label="no reg", colour="red")
    assert len(axes[1].texts) == n_texts
    assert plotting.plot_agreement(np.linspace(0.5, 0.9, 20), ax=axes[2], reference=0.1) is fig


def test_token_path_labels_of_near_words_do_not_overlap():
    """Two words at almost the same point get labels a line apart; words far apart keep the same offset."""
    fig, ax = plt.subplots()
    words_xy = np.array([[0.0, 0.0], [0.01, 0.005], [1.0, 1.0]])
    plotting.plot_token_path(words_xy, ["red", "rose", "blue"], np.array([[0.5, 0.5], [0.6, 0.6]]), ax=ax)
    offsets = {t.get_text(): t.xyann for t in ax.texts if t.get_text() in ("red", "rose", "blue")}
    assert offsets["red"] == offsets["blue"] == (3, 3) and offsets["rose"] == (3, -7)
    plt.close(fig)


def test_token_path_joins_its_end_to_the_words_it_is_nearest_to():
    fig, ax = plt.subplots()
    words_xy = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    path = np.array([[5.0, 5.0], [2.0, 2.0]])
    plotting.plot_token_path(words_xy, ["red", "circle", "blue"], path, ax=ax, end_words=[("blue", 0.61), ("red", 0.4)])
    dotted = [line.get_xydata() for line in ax.lines if line.get_linestyle() == ":"]
    assert [d.tolist() for d in dotted] == [[[2.0, 2.0], [0.0, 1.0]], [[2.0, 2.0], [0.0, 0.0]]]
    assert {"0.61", "0.40"} <= {t.get_text() for t in ax.texts}
    with pytest.raises(ValueError, match="'square' is not among the plotted words"):
        plotting.plot_token_path(words_xy, ["red", "circle", "blue"], path, ax=ax, end_words=[("square", 0.9)])
    plt.close(fig)


def test_nearest_words_grid_and_wordness():
    words = [[("red", 0.8), ("circle", 0.4)]] * 3
    fig = plotting.nearest_words_grid([image(i) for i in range(3)], words, titles=["a", "b", "c"], extra_words=words)
    assert len(fig.axes) == 9
    table = pd.DataFrame(
        {"setting": ["with"] * 4 + ["without"] * 4, "cosine": np.linspace(0.1, 0.8, 8), "norm": np.linspace(0.5, 3, 8)}
    )
    fig = plotting.plot_wordness(table, word_norm=0.6)
    assert len(fig.axes) == 2


def test_every_image_has_a_frame():
    """An image on a white background keeps its edge on a white page: a thin grey frame, or the coloured one."""
    fig = plotting.image_row([image(0), image(1)], ["a", "b"])
    for ax in fig.axes:
        assert all(spine.get_visible() and spine.get_linewidth() > 0 for spine in ax.spines.values())
        assert ax.spines["top"].get_edgecolor()[:3] == pytest.approx(matplotlib.colors.to_rgb("#bbbbbb"))


def test_retrieval_grid_marks_ground_truths():
    examples = [
        plotting.RetrievalExample(
            image(0), "is blue", [image(i) for i in range(4)], [False, True, False, False], label="SEARLE-OTI"
        )
    ] * 2
    fig = plotting.retrieval_grid(examples, title="examples")
    assert len(fig.axes) == 10
    hit_ax = fig.axes[2]  # row 0: query, result 1, result 2 (the hit)
    assert hit_ax.spines["left"].get_edgecolor()[:3] == pytest.approx(matplotlib.colors.to_rgb(plotting.GROUND_TRUTH))
    assert "✓" in hit_ax.get_title()


def test_method_bars_and_ablations():
    table = pd.DataFrame(
        {
            "method": ["image-only", "searle-oti"] * 2,
            "backbone": ["B"] * 2 + ["L"] * 2,
            "mAP@10": [5.0, 20.0, 6.0, 22.0],
            "paper": [1.6, 7.8, np.nan, 11.0],
        }
    )
    fig, ax = plt.subplots()
    assert plotting.plot_method_bars(table, "mAP@10", ax=ax, group="backbone", paper="paper") is fig
    assert len(ax.patches) == 4
    abl = pd.DataFrame(
        {
            "part": ["OTI", "OTI", "φ"],
            "variant": ["full (paper)", "no EMA", "full (paper)"],
            "mAP@10": [20.0, 18.0, 19.0],
        }
    )
    fig, ax = plt.subplots()
    assert plotting.plot_ablation(abl, "mAP@10", ax=ax, baseline="full (paper)") is fig
    assert [t.get_text() for t in ax.get_yticklabels()] == ["OTI: full (paper)", "OTI: no EMA", "φ: full (paper)"]
    fig, ax = plt.subplots()
    assert plotting.plot_ablation_curve([50, 150, 350], [10, 15, 20], ax=ax, reference={"image-only": 5}) is fig


def test_save_figure(tmp_path):
    fig = plotting.plot_time_per_image({"OTI": 0.5, "φ": 1e-5})
    plotting.save_figure(fig, "", "x")
    assert not list(tmp_path.iterdir())
    plotting.save_figure(fig, tmp_path / "figs", "timing")
    path = tmp_path / "figs" / "timing.png"
    assert path.stat().st_size > 1000


def test_saved_figure_bytes_depend_on_the_figure_only(tmp_path):
    fig, ax = plt.subplots()
    plotting.plot_time_per_image({"OTI": 0.5, "φ": 1e-5}, ax=ax)
    plotting.save_figure(fig, tmp_path / "a", "f")
    plotting.save_figure(fig, tmp_path / "b", "f")
    first, second = (tmp_path / "a" / "f.png").read_bytes(), (tmp_path / "b" / "f.png").read_bytes()
    assert first == second
    # No matplotlib version (nor any other text chunk) in the file: another environment writes the same bytes.
    assert b"tEXt" not in first and b"matplotlib" not in first.lower()


def _small_texts(fig) -> list[tuple[str, float]]:
    fig.canvas.draw()  # tick labels exist once drawn
    return [
        (t.get_text(), t.get_fontsize())
        for t in fig.findobj(matplotlib.text.Text)
        if t.get_text().strip() and t.get_visible() and t.get_fontsize() < 9
    ]


def test_figure_text_is_at_least_9_points():
    """Readable at notebook width: no title, label, legend, tick or annotation below 9 pt."""
    fig, axes = plt.subplots(1, 3)
    plotting.plot_nearest_words([("red", 0.8), ("circle", 0.5)], ax=axes[0], title="t")
    path = np.cumsum(np.random.default_rng(1).normal(size=(10, 2)), 0)
    plotting.plot_token_path(
        np.random.default_rng(0).normal(size=(5, 2)), list("abcde"), path, ax=axes[1], steps=list(range(10)), title="t"
    )
    plotting.plot_agreement(np.linspace(0.5, 0.9, 20), ax=axes[2], reference=0.1)
    example = plotting.RetrievalExample(
        image(0), "is blue", [image(i) for i in range(4)], [False, True, False, False], "x"
    )
    grid = plotting.retrieval_grid([example] * 2, title="examples")
    row = plotting.image_row([image(i) for i in range(3)], ["a", "b", "c"])
    assert [_small_texts(f) for f in (fig, grid, row)] == [[], [], []]
