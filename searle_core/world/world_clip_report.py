"""How good the world CLIP is: zero-shot classification of held-out renders among every attribute
combination, per attribute, and the training log beside its weights (``searle world build``,
``searle bench world``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from searle_core.method.encoding import encode_text
from searle_core.world.attributes import ATTRIBUTES, all_combos, decode
from searle_core.world.grammar import caption_for
from searle_core.world.shapes_world import ShapesWorld, images_to_tensor


@torch.no_grad()
def zero_shot_report(backbone, world: ShapesWorld, names: list[str], batch_size: int = 1024) -> dict[str, float]:
    """Zero-shot classification of images among all attribute combinations, by their full captions.

    Args:
        backbone: the world CLIP.
        world: the world the images belong to.
        names: the images (held-out renders, e.g. a split's gallery: every combination, balanced).
        batch_size: images encoded at once.

    Returns:
        ``{"total": %, "colour": %, "shape": %, "size": %, "background": %, "images": N}``: the share
        whose best-scoring caption is their own combination (total) and, per attribute, the
        share whose best-scoring combination has the image's value of that attribute.
    """
    combos = np.array(all_combos())
    captions = [caption_for(decode(c)) for c in combos]
    text = F.normalize(encode_text(backbone.model, backbone.tokenize(captions)).float(), dim=-1)
    cfg = backbone.model.visual.preprocess_cfg
    predicted = []
    for start in range(0, len(names), batch_size):
        pixels = images_to_tensor(
            world.array(names[start : start + batch_size]), cfg["mean"], cfg["std"], backbone.device
        )
        image = F.normalize(backbone.model.encode_image(pixels).float(), dim=-1)
        predicted.append((image @ text.T).argmax(dim=1).cpu().numpy())
    guess, truth = combos[np.concatenate(predicted)], world.codes(names)
    report = {"total": 100.0 * float((guess == truth).all(axis=1).mean())}
    report.update({a: 100.0 * float((guess[:, i] == truth[:, i]).mean()) for i, a in enumerate(ATTRIBUTES)})
    report["images"] = len(names)
    return report


def held_out_names(world: ShapesWorld) -> list[str]:
    """Renders the world CLIP never trained on, every combination balanced: both splits' galleries."""
    return world.gallery_names("val") + world.gallery_names("test")


def training_log(weights: str | os.PathLike) -> dict | None:
    """The log written beside cached weights (losses, seconds, threads, config), if any."""
    path = Path(weights).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else None


def format_report(report: dict[str, float], log: dict | None = None) -> str:
    """The zero-shot table (total and per attribute) and the training time, as printed by the CLI."""
    cells = " | ".join(f"{a} {report[a]:.1f}" for a in ATTRIBUTES)
    lines = [
        f"zero-shot accuracy over all {len(all_combos())} attribute combinations, {report['images']} held-out "
        f"renders: {report['total']:.1f} %  ({cells})"
    ]
    if log:
        steps, batch = log["config"]["steps"], log["config"]["batch_size"]
        lines.append(
            f"{'shipped weights, ' if log.get('shipped') else ''}trained in {log['seconds']:.0f} s "
            f"({steps} steps of {batch}, {log.get('threads', '?')} torch threads; "
            f"final loss {np.mean(log['losses'][-20:]):.3f})"
        )
    return "\n".join(lines)


def zero_shot_accuracy(backbone, world: ShapesWorld, names: list[str]) -> float:
    """% of images whose full canonical caption, among all attribute combinations, scores highest."""
    return zero_shot_report(backbone, world, names)["total"]
