"""Options shared by several commands, so each means the same thing everywhere."""

from __future__ import annotations

import argparse
import json
import math
from searle_core.opening import open_backbone, configure_for_dataset


def add_backbone_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="shapes-clip",
                   help="open_clip model name (ViT-B-32, ViT-L-14, ...) or shapes-clip (default)")
    p.add_argument("--pretrained", default="default",
                   help="open_clip weights tag or a local weights file: OpenAI's ViT-B-32.pt / ViT-L-14.pt as "
                        "released, a state dict, safetensors; openai:FILE marks OpenAI weights (built with QuickGELU) "
                        "(default: openai; shapes-clip: the project-trained weights); 'none': random weights, seeded "
                        "by --seed (smoke tests)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--quick", action="store_true",
                   help="CI-sized shapes world and world CLIP (seconds instead of minutes)")


def load_backbone_from_args(args: argparse.Namespace):
    """The backbone named by ``--backbone``/``--pretrained``/``--device`` (and ``--quick``), with the
    dataset's image pipeline (:mod:`searle_core.opening`, shared with the notebooks).

    ``--pretrained none`` builds the architecture with random weights. They are drawn under the
    command's ``--seed`` (0 without one) in a forked RNG, so two runs build the same model, share
    feature caches, and leave the global random state untouched.
    """

    backbone = open_backbone(args.backbone, args.pretrained, args.device, getattr(args, "seed", 0), args.quick)
    return configure_images_from_args(backbone, args)


def configure_images_from_args(backbone, args: argparse.Namespace):
    """Apply ``--preprocess`` and ``--num-workers`` (commands with benchmark options) to the backbone.

    The defaults are decided by :func:`searle_core.opening.configure_for_dataset`, which the
    notebooks use too: ``targetpad`` 1.25 for every dataset (the authors' default; exact and free on
    the square ``shapes`` renders), 0 workers for ``shapes``, up to 8 for image files.
    """
    if not hasattr(args, "preprocess"):
        return backbone

    return configure_for_dataset(backbone, getattr(args, "dataset", "shapes"), args.preprocess,
                                 getattr(args, "num_workers", None))


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
