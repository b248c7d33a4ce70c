"""Options shared by several commands, so each means the same thing everywhere."""

from __future__ import annotations

import argparse
import json
import math

from searle_core.datasets.backbone_setup import configure_for_dataset, open_backbone
from searle_core.infra.settings import RunSettings, add_setting, from_namespace


def add_backbone_options(p: argparse.ArgumentParser) -> None:
    """``--backbone``, ``--pretrained``, ``--device``, ``--quick``: the fields of :class:`RunSettings`."""
    add_setting(p, "backbone", help="open_clip model name (ViT-B-32, ViT-L-14, ...) or shapes-clip (default)")
    add_setting(
        p,
        "pretrained",
        help="open_clip weights tag or a local weights file: OpenAI's ViT-B-32.pt / ViT-L-14.pt as "
        "released, a state dict, safetensors; openai:FILE marks OpenAI weights (built with QuickGELU) "
        "(default: openai; shapes-clip: the project-trained weights); 'none': random weights, seeded "
        "by --seed (smoke tests)",
    )
    add_setting(p, "device")
    add_setting(p, "quick", help="CI-sized shapes world and world CLIP (seconds instead of minutes)")


def settings_from_args(args: argparse.Namespace | RunSettings) -> RunSettings:
    """The run settings of a command's options (every option named as a :class:`RunSettings` field).

    Settings pass through unchanged, so helpers shared with other code take either.
    """
    if isinstance(args, RunSettings):
        return args
    # A command without --seed (``searle bench``) draws random weights under seed 0, as it always has.
    return from_namespace(args) if hasattr(args, "seed") else from_namespace(args, seed=0)


def load_backbone_from_args(args: argparse.Namespace | RunSettings):
    """The backbone named by ``--backbone``/``--pretrained``/``--device`` (and ``--quick``), with the
    dataset's image pipeline (:mod:`searle_core.datasets.backbone_setup`, shared with the notebooks).

    ``--pretrained none`` builds the architecture with random weights. They are drawn under the
    command's ``--seed`` (0 without one) in a forked RNG, so two runs build the same model, share
    feature caches, and leave the global random state untouched.
    """

    s = settings_from_args(args)
    backbone = open_backbone(s.backbone, s.pretrained, s.device, s.seed, s.quick)
    if isinstance(args, argparse.Namespace) and not hasattr(args, "preprocess"):
        return backbone  # a command without image options (`searle invert` sets its own)
    return configure_images_from_args(backbone, s)


def configure_images_from_args(backbone, args: argparse.Namespace | RunSettings):
    """Apply ``--preprocess`` and ``--num-workers`` to the backbone.

    The defaults are decided by :func:`searle_core.datasets.backbone_setup.configure_for_dataset`, which the
    notebooks use too: ``targetpad`` 1.25 for every dataset (the authors' default; exact and free on
    the square ``shapes`` renders), 0 workers for ``shapes``, up to 8 for image files.
    """

    s = settings_from_args(args)
    return configure_for_dataset(backbone, s.dataset, s.preprocess or None, s.num_workers)


def print_json(obj) -> None:
    """One JSON object on one line; NaN becomes null so every JSON parser reads it."""

    def clean(x):
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return x

    print(json.dumps(clean(obj)))


def format_metrics(metrics: dict, indent: str = "") -> str:
    """Metrics as aligned lines, nested dicts (FashionIQ categories, CIRCO aspects) indented."""
    lines = []
    # Columns line up within a block whatever its longest key (CIRCO's aspect names are long).
    width = max([16] + [len(k) + 2 for k, v in metrics.items() if not isinstance(v, dict)])
    for key, value in metrics.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(format_metrics(value, indent + "  "))
        else:
            lines.append(f"{indent}{key:<{width}}{value:7.2f}")
    return "\n".join(lines)
