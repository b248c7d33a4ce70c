"""Figures of the notebooks: every function draws on a given ``ax`` (or makes one) and returns the figure,
so notebooks stay thin and tests check each figure without running a notebook. Grids of many axes take
``fig=None`` instead and build their own layout.

- :mod:`.curves`: loss curves, validation per epoch, trajectories, timings.
- :mod:`.tokens`: nearest words, S*'s 2-D path, how word-like tokens are, OTI vs φ agreement.
- :mod:`.retrieval`: images, retrieval example grids, results and ablation bars.
"""

from searle_core.plotting.common import figure_path, save_figure
from searle_core.plotting.curves import (
    plot_ema_vs_raw,
    plot_oti_losses,
    plot_phi_history,
    plot_time_per_image,
    plot_validation,
)
from searle_core.plotting.retrieval import (
    RetrievalExample,
    image_row,
    plot_ablation,
    plot_ablation_curve,
    plot_method_bars,
    retrieval_grid,
)
from searle_core.plotting.tokens import (
    nearest_words_grid,
    plot_agreement,
    plot_nearest_words,
    plot_token_path,
    plot_wordness,
)

__all__ = [
    "figure_path",
    "save_figure",
    "plot_oti_losses",
    "plot_ema_vs_raw",
    "plot_phi_history",
    "plot_validation",
    "plot_time_per_image",
    "RetrievalExample",
    "image_row",
    "retrieval_grid",
    "plot_method_bars",
    "plot_ablation",
    "plot_ablation_curve",
    "plot_nearest_words",
    "nearest_words_grid",
    "plot_token_path",
    "plot_wordness",
    "plot_agreement",
]
