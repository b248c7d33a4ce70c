"""The world CLIP's shipped weights: stored as the recipe stores them, read instead of training, and
still what the recipe trains (its first steps' losses match the shipped training log)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from searle_core.world import world_clip
from searle_core.world.world_clip import (
    TOKEN_TABLE,
    WorldCLIPConfig,
    expand,
    finalise,
    pack,
    read_shipped,
    shipped_path,
    train_world_clip,
    training_log,
    untrained_rows,
    world_clip_weights,
)


def small_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        TOKEN_TABLE: torch.randn(50, 4, generator=g),
        "visual.weight": torch.randn(3, 3, generator=g) * 7,
        "steps": torch.tensor(5),
    }


def test_finalise_rounds_to_half_redraws_untrained_rows_and_is_idempotent():
    state = small_state()
    done = finalise(state, [0, 7, 49], seed=3)
    assert torch.equal(done["visual.weight"], state["visual.weight"].half().float())
    assert torch.equal(done["steps"], state["steps"])
    table = done[TOKEN_TABLE]
    assert torch.equal(table[[0, 7, 49]], state[TOKEN_TABLE][[0, 7, 49]].half().float())
    redrawn = untrained_rows((50, 4), seed=3)
    others = [i for i in range(50) if i not in (0, 7, 49)]
    assert torch.equal(table[others], redrawn[others]) and not torch.equal(redrawn, untrained_rows((50, 4), seed=4))
    again = finalise(done, [0, 7, 49], seed=3)
    assert all(torch.equal(again[k], done[k]) for k in done)


def test_pack_and_expand_give_back_the_finalised_weights():
    state = small_state()
    packed = pack(state, [0, 7, 49], seed=3, log={"losses": [1.0]})
    assert packed["token_rows"].dtype == torch.float16 and len(packed["token_rows"]) == 3  # only trained rows
    back, log = expand(packed)
    done = finalise(state, [0, 7, 49], seed=3)
    assert log == {"losses": [1.0]} and set(back) == set(done)
    assert all(torch.equal(back[k], done[k]) for k in done)
    with pytest.raises(ValueError, match="stored as 'other'"):
        expand({**packed, "storage": "other"})


@pytest.mark.parametrize("config", [WorldCLIPConfig.quick(), WorldCLIPConfig()], ids=["quick", "default"])
def test_each_recipe_has_its_shipped_weights(config):
    path = shipped_path(config.cache_key())
    assert path.is_file(), f"no shipped world CLIP for this recipe at {path}: run `make world-weights` and commit it"


def test_an_empty_cache_reads_the_shipped_weights_without_training(tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained although shipped weights match the recipe")

    monkeypatch.setattr(world_clip, "train_world_clip", no_training)
    config = WorldCLIPConfig.quick()
    path = world_clip_weights(tmp_path, config=config, progress=False)
    cached = torch.load(path, map_location="cpu", weights_only=True)
    shipped, log = read_shipped(config.cache_key())
    assert all(torch.equal(cached[k], shipped[k]) for k in shipped)
    assert training_log(path)["losses"] == log["losses"]


@pytest.mark.slow
def test_the_recipe_still_trains_what_was_shipped(one_thread):
    """The first steps of the quick recipe give the losses logged when the shipped weights were
    trained (warm-up steps do not depend on the total, so 6 steps suffice); a changed recipe does not."""
    config = WorldCLIPConfig.quick()
    logged = read_shipped(config.cache_key())[1]["losses"][:6]
    _, log = train_world_clip(dataclasses.replace(config, steps=6), progress=False)
    assert log["losses"] == pytest.approx(logged, rel=1e-3)
    _, changed = train_world_clip(dataclasses.replace(config, steps=6, lr=2.5e-3), progress=False)
    assert changed["losses"] != pytest.approx(logged, rel=1e-3)
