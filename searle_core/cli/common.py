"""Options shared by several commands, so each means the same thing everywhere."""

from __future__ import annotations

import argparse
import json
import math

from searle_core.clip.backbone import open_backbone
from searle_core.jobs.from_settings import open_model
from searle_core.settings import RunSettings, add_setting, from_namespace, nonnegative_int, positive_int


def add_backbone_options(p: argparse.ArgumentParser) -> None:
    """``--backbone``, ``--pretrained``, ``--device``, ``--quick``."""
    add_setting(p, "backbone")
    add_setting(
        p,
        "pretrained",
        help="open_clip weights tag or a local weights file (OpenAI's ViT-B-32.pt as released, a state dict, "
        "safetensors; openai:FILE: OpenAI weights, built with QuickGELU); default: openai, or the project-trained "
        "weights for shapes-clip; 'none': random weights seeded by --seed (smoke tests)",
    )
    add_setting(p, "device")
    add_setting(p, "quick")


def add_image_options(p, datasets: tuple[str, ...], default_split: str | None = None, **helps: str) -> None:
    """The images of a run: dataset, folder, split, category, what a missing image does, preprocessing,
    the backbone (``helps``: a setting's help where this command says more)."""
    add_setting(p, "dataset", choices=datasets, help=helps.get("dataset"))
    add_setting(p, "split", default=default_split, help=helps.get("split"))
    for name in ("dataset_path", "category", "preprocess"):
        add_setting(p, name, default=None, help=helps.get(name))
    add_setting(p, "num_workers", type=nonnegative_int)
    p.add_argument(
        "--on-missing",
        default="error",
        choices=("error", "skip"),
        help="a missing or unreadable image: fail naming it (default) or skip it and count it",
    )
    p.add_argument(
        "--check-images",
        default="exists",
        choices=("none", "exists", "open"),
        help="check images up front: stat them (default), also decode every one (open), or not at all",
    )
    add_backbone_options(p)


def add_run_options(p: argparse.ArgumentParser, json_help: str | None = "one JSON object on one line") -> None:
    """``--seed``, ``--no-progress`` and (unless ``json_help`` is ``None``) ``--json``."""
    add_setting(p, "seed")
    add_setting(p, "threads", type=nonnegative_int)
    p.add_argument("--no-progress", action="store_true")
    if json_help:
        p.add_argument("--json", action="store_true", help=json_help)


def add_out_options(p: argparse.ArgumentParser, out_help: str) -> None:
    """The run folder of a resumable run: ``--out``, ``--resume``, ``--force``."""
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--force",
        action="store_true",
        help="with --resume: accept changed hyper-parameters; without: delete the run in --out first",
    )


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The run settings of a command's options."""
    # A command without --seed draws random weights under seed 0.
    return from_namespace(args) if hasattr(args, "seed") else from_namespace(args, seed=0)


def load_backbone_from_args(args: argparse.Namespace):
    """The backbone the options name, with the dataset's image pipeline unless the command has no image
    options (``--pretrained none``: random weights drawn under ``--seed`` in a forked RNG)."""
    s = settings_from_args(args)
    if not hasattr(args, "preprocess"):
        return open_backbone(s.backbone, s.pretrained, s.device, s.seed, s.quick)
    return open_model(s)


def positive_ints(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated integers >= 1."""
    values = tuple(positive_int(s) for s in text.split(",") if s.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected integers such as 32,128, got {text!r}")
    return values


def print_json(obj) -> None:
    """One JSON object on one line; NaN becomes null so every JSON parser reads it."""

    def clean(x):
        if isinstance(x, float) and math.isnan(x):
            return None
        return {k: clean(v) for k, v in x.items()} if isinstance(x, dict) else x

    print(json.dumps(clean(obj)))


def format_metrics(metrics: dict, indent: str = "") -> str:
    """Metrics as aligned lines, nested dicts (FashionIQ categories, CIRCO aspects) indented."""
    lines = []
    width = max([16] + [len(k) + 2 for k, v in metrics.items() if not isinstance(v, dict)])
    for key, value in metrics.items():
        if isinstance(value, dict):
            lines += [f"{indent}{key}:", format_metrics(value, indent + "  ")]
        else:
            lines.append(f"{indent}{key:<{width}}{value:7.2f}")
    return "\n".join(lines)
