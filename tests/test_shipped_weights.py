"""The world CLIP's shipped weights: stored as the recipe stores them, read instead of training, and
still what the recipe trains (its first steps' losses match the shipped training log)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from searle_core.infra.errors import InputError
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


@pytest.mark.audit_open
def test_shipped_weights_are_checked_against_their_recorded_sha256(tmp_path, monkeypatch):
    """One flipped bit in a shipped file is refused naming it (it changed every number silently), before it can
    be cached; a truncated file too (it was a traceback)."""
    config = WorldCLIPConfig.quick()
    shipped = shipped_path(config.cache_key())
    copy = tmp_path / "weights" / shipped.name
    copy.parent.mkdir()
    data = bytearray(shipped.read_bytes())
    data[len(data) // 2] ^= 1
    copy.write_bytes(bytes(data))
    (copy.parent / "SHA256SUMS").write_bytes((shipped.parent / "SHA256SUMS").read_bytes())
    monkeypatch.setattr(world_clip, "SHIPPED_DIR", copy.parent)
    for damaged in (bytes(data), shipped.read_bytes()[:1000]):
        copy.write_bytes(damaged)
        with pytest.raises(InputError, match=f"{copy}: the shipped world CLIP weights are damaged"):
            world_clip_weights(tmp_path / "cache", config=config, progress=False)
        assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    copy.write_bytes(shipped.read_bytes())  # restored: read and cached
    assert torch.equal(read_shipped(config.cache_key())[0][TOKEN_TABLE], expand(torch.load(shipped))[0][TOKEN_TABLE])


@pytest.mark.audit_open
def test_a_cache_made_from_other_shipped_weights_is_rebuilt(tmp_path, capsys):
    """The world CLIP's cache is keyed by the shipped file's content: an entry cached from other (or damaged)
    shipped weights is rebuilt, saying so, instead of served under the recipe's key for ever."""
    config = WorldCLIPConfig.quick()
    path = world_clip_weights(tmp_path, config=config, progress=False)
    good = torch.load(path, weights_only=True)
    log = training_log(path)
    assert log["shipped"] == world_clip.shipped_sha256()[shipped_path(config.cache_key()).name]
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in good.items()}, path)  # as from damaged weights
    path.with_suffix(".json").write_text(json.dumps({**log, "shipped": "0" * 64}))
    capsys.readouterr()
    assert world_clip_weights(tmp_path, config=config, progress=False) == path
    assert "cached from other shipped weights" in capsys.readouterr().out
    assert all(torch.equal(v, good[k]) for k, v in torch.load(path, weights_only=True).items())
    path.with_suffix(".json").write_text(json.dumps({k: v for k, v in log.items() if k != "shipped"}))
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in good.items()}, path)
    world_clip_weights(tmp_path, config=config, progress=False)  # trained here (no shipped record): served
    assert not torch.equal(torch.load(path, weights_only=True)[TOKEN_TABLE], good[TOKEN_TABLE])
