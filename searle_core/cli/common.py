"""Options shared by several commands, so each means the same thing everywhere."""

from __future__ import annotations

import argparse
import json
import math


def add_backbone_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="shapes-clip",
                   help="open_clip model name (ViT-B-32, ViT-L-14, ...) or shapes-clip (default)")
    p.add_argument("--pretrained", default="default",
                   help="open_clip weights tag or a local weights file (default: openai; shapes-clip: the "
                        "project-trained weights)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--quick", action="store_true",
                   help="CI-sized shapes world and world CLIP (seconds instead of minutes)")


def load_backbone_from_args(args: argparse.Namespace):
    from ..backbone import load_backbone

    kwargs = {"quick": args.quick} if args.backbone == "shapes-clip" and args.pretrained == "default" else {}
    return load_backbone(args.backbone, args.pretrained, device=args.device, **kwargs)


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
    for key, value in metrics.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(format_metrics(value, indent + "  "))
        else:
            lines.append(f"{indent}{key:<16}{value:7.2f}")
    return "\n".join(lines)
