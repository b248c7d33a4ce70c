"""The offline default end to end: the world CLIP learned its world, and composed retrieval works.

Recorded values were measured on the quick world (CPU, seeds as committed, the 420-step quick world CLIP);
the tolerances absorb float differences between machines, not a change of recipe.
"""

import json

import pytest
import torch
import torch.nn.functional as F

from searle_core.cli import main
from searle_core.datasets.features import image_features
from searle_core.jobs.evaluation import evaluate
from searle_core.method.encoding import encode_with_pseudo_tokens
from searle_core.method.oti import OTIConfig
from searle_core.methods.context import MethodContext
from searle_core.methods.pipeline import gallery_features
from searle_core.world.setup import world_setup, world_vocabulary
from searle_core.world.world_clip import zero_shot_report

OTI_STEPS = 100
# Zero-shot over 216 combinations (chance 0.46 %) on the quick val gallery (432 renders), per attribute.
ZERO_SHOT = {"total": 86.81, "colour": 100.0, "shape": 86.81, "size": 100.0, "background": 100.0}
ZERO_SHOT_TOL = 3.0
# OTI tokens (of 32) whose "a photo of $" retrieves an image of their own attribute combination first.
OWN_IMAGE_HITS = 32
# val mAP@10 of the quick world.
MAP10 = {"image-only": 4.25, "text-only": 5.50, "image+text": 57.73, "searle-oti": 62.81}
MAP10_TOL = 2.0


@pytest.fixture(scope="module")
def world_and_clip():
    return world_setup(quick=True, device="cpu", progress=False)


@pytest.fixture(scope="module")
def quick_results(world_and_clip):
    world, backbone = world_and_clip
    bench = world.benchmark("val")
    ctx = MethodContext(vocabulary=world_vocabulary(), oti_config=OTIConfig(steps=OTI_STEPS), progress=False)
    gallery = gallery_features(backbone, bench, progress=False)
    return {
        m: evaluate(m, bench, backbone, ctx, gallery) for m in ("image-only", "text-only", "image+text", "searle-oti")
    }


@pytest.mark.slow
def test_world_clip_zero_shot(world_and_clip):
    world, backbone = world_and_clip
    report = zero_shot_report(backbone, world, world.gallery_names("val"))
    assert report["images"] == 432
    for attribute, stored in ZERO_SHOT.items():
        assert report[attribute] == pytest.approx(stored, abs=ZERO_SHOT_TOL), report


@pytest.mark.slow
def test_world_clip_is_deterministic_and_cached(world_and_clip):
    _, backbone = world_and_clip
    again = world_setup(quick=True, device="cpu", progress=False)[1]
    assert again.pretrained == backbone.pretrained
    for a, b in zip(backbone.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_oti_tokens_retrieve_their_own_image(world_and_clip):
    world, backbone = world_and_clip
    names = world.benchmark("val").reference_names()[:32]
    feats = image_features(backbone, world.images, names, progress=False, cache=False)
    from searle_core.method.oti import oti

    vocab = world_vocabulary()
    concepts = vocab.associate(backbone, feats, 15)
    tokens = oti(backbone, feats, concepts, vocab.phrase_bank, OTIConfig(steps=OTI_STEPS), seed=0).tokens
    with torch.no_grad():
        text = encode_with_pseudo_tokens(
            backbone.model, backbone.tokenize(["a photo of $"] * len(names)), tokens, backbone.dollar_token_id
        )
    sims = F.normalize(text, dim=-1) @ feats.T
    # Images with identical attributes are interchangeable, so a hit is any image of the same combination.
    codes = [tuple(c) for c in world.codes(names).tolist()]
    hits = [codes[int(sims[i].argmax())] == codes[i] for i in range(len(names))]
    assert sum(hits) >= OWN_IMAGE_HITS - 2


@pytest.mark.slow
def test_composed_query_map_as_recorded(quick_results):
    measured = {m: r.metrics["mAP@10"] for m, r in quick_results.items()}
    for method, stored in MAP10.items():
        assert measured[method] == pytest.approx(stored, abs=MAP10_TOL), measured
    # SEARLE-OTI far above the single-modality baselines.
    assert all(measured["searle-oti"] >= measured[b] + 20 for b in ("image-only", "text-only")), measured


@pytest.mark.slow
def test_metric_keys(quick_results):
    assert list(quick_results["image-only"].metrics) == [
        "mAP@5",
        "mAP@10",
        "mAP@25",
        "mAP@50",
        "Recall@1",
        "Recall@5",
        "Recall@10",
        "Recall@50",
    ]


@pytest.mark.slow
def test_cli_evaluate_json(world_and_clip, capsys):
    assert (
        main(["evaluate", "--dataset", "shapes", "--quick", "--method", "image+text", "--json", "--no-progress"]) == 0
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    metrics = json.loads(line)
    assert set(metrics) == {"mAP@5", "mAP@10", "mAP@25", "mAP@50", "Recall@1", "Recall@5", "Recall@10", "Recall@50"}


@pytest.mark.slow
def test_cli_world_build_and_invert(world_and_clip, tmp_path, capsys):
    assert main(["world", "build", "--quick", "--samples", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "zero-shot accuracy" in out
    images = sorted(tmp_path.glob("*.png"))
    assert len(images) == 2
    assert main(["invert", str(images[0]), "--quick", "--oti-steps", "30", "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "trained on" in out and str(images[0]) in out


def test_cli_errors(capsys):
    assert main(["invert", "/nonexistent.png", "--quick"]) == 2
    assert "no such image file" in capsys.readouterr().err
    assert main(["evaluate", "--dataset", "cirr", "--method", "image-only"]) == 2
    assert "--dataset-path" in capsys.readouterr().err
