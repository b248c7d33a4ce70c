"""The world CLIP's training recipe: hard-negative groups, caption mix, the compact embedding table,
and the per-attribute zero-shot report (no training here; test_world_pipeline trains the quick CLIP)."""

import dataclasses

import numpy as np
import open_clip
import pytest
import torch

from searle_core.method.encoding import encode_text
from searle_core.world.attributes import ATTRIBUTES
from searle_core.world.shapes_world import ShapesWorld, WorldConfig
from searle_core.world.world_clip import (
    WorldCLIPConfig,
    _CompactEmbedding,
    format_report,
    mentioned_attributes,
    trained_token_ids,
    training_batch,
    zero_shot_report,
)


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(WorldConfig.quick(n_pretrain=4, n_val_queries=4, n_test_queries=4, gallery_per_combo=1))


def test_groups_differ_in_exactly_one_attribute_each_a_different_one(world):
    config = dataclasses.replace(WorldCLIPConfig.quick(), batch_size=40, group_size=5)
    images, captions, codes = training_batch(world, config, np.random.default_rng(0))
    assert images.shape == (40, 32, 32, 3) and len(captions) == 40
    for g in range(0, 40, 5):
        base, members = codes[g], codes[g + 1 : g + 5]
        changed = [(m != base).nonzero()[0].tolist() for m in members]
        assert all(len(c) == 1 for c in changed)
        assert sorted(c[0] for c in changed) == list(range(len(ATTRIBUTES)))  # each attribute once per group


def test_independent_images_and_full_captions(world):
    config = dataclasses.replace(WorldCLIPConfig.quick(), batch_size=64, group_size=1, full_caption_p=1.0)
    _, captions, codes = training_batch(world, config, np.random.default_rng(1))
    assert all(set(mentioned_attributes(c)) == set(ATTRIBUTES) for c in captions)
    assert len({tuple(c) for c in codes}) > 40  # no groups: (mostly) distinct combinations
    partial = dataclasses.replace(config, full_caption_p=0.0)
    _, captions, _ = training_batch(world, partial, np.random.default_rng(1))
    assert sum(set(mentioned_attributes(c)) == set(ATTRIBUTES) for c in captions) < 32


def test_compact_embedding_gives_the_full_tables_features(random_backbone):
    """Training on the rows the captions use is exact: same features as the full table."""
    model, tokenizer = random_backbone.model, open_clip.get_tokenizer("shapes-clip")
    compact = _CompactEmbedding(model.token_embedding, trained_token_ids(tokenizer))
    assert len(compact.ids) < 60
    tokens = tokenizer(["a photo of a small red circle on a white background", "an arrow that is orange"])
    with torch.no_grad():
        full = encode_text(model, tokens)
        table = model.token_embedding
        model.token_embedding = compact
        try:
            ours = encode_text(model, compact.compact(tokens))
        finally:
            model.token_embedding = table
    assert torch.equal(full, ours)


def test_zero_shot_report_per_attribute(random_backbone, world):
    names = world.gallery_names("val")[:50]
    report = zero_shot_report(random_backbone, world, names, batch_size=16)
    assert report["images"] == 50 and set(report) == {"total", *ATTRIBUTES, "images"}
    assert all(report["total"] <= report[a] <= 100 for a in ATTRIBUTES)
    assert report == zero_shot_report(random_backbone, world, names)  # batching changes nothing
    text = format_report(
        report, {"seconds": 12.3, "threads": 2, "losses": [1.0] * 20, "config": {"steps": 10, "batch_size": 8}}
    )
    assert "shape" in text and "trained in 12 s (10 steps of 8, 2 torch threads" in text


def test_cli_bench_world_json(capsys):
    """`python -m benchmarks world` trains afresh (here 2 steps) and prints the table and the training time."""
    import json

    from benchmarks.__main__ import main

    assert main(["world", "--quick", "--steps", "2", "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["steps"] == 2 and out["threads"] == 1 and out["train_seconds"] > 0
    assert out["zero_shot"]["images"] == 864 and set(out["zero_shot"]) == {"total", *ATTRIBUTES, "images"}


def test_random_weights_give_distinct_image_features(random_backbone):
    """BatchNorm statistics are measured on noise for random weights: images no longer collapse to one feature."""
    from searle_core.clip.backbone import calibrate_batch_norm

    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        feats = torch.nn.functional.normalize(random_backbone.model.encode_image(images), dim=-1)
    off_diagonal = (feats @ feats.T)[~torch.eye(8, dtype=torch.bool)]
    assert off_diagonal.mean() < 0.9
    state = torch.get_rng_state()
    calibrate_batch_norm(random_backbone.model)
    assert torch.equal(state, torch.get_rng_state())
    random_backbone.model.eval()
