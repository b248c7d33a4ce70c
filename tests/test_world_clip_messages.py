"""What the first world-CLIP training says: one plain sentence, and not open_clip's warning that no
pretrained weights were loaded (random initialisation is the point there)."""

import logging

import torch

from searle_core.world import world_clip


def test_the_random_init_warning_is_dropped_only_while_the_world_clip_is_built(caplog):
    with caplog.at_level(logging.WARNING):
        with world_clip.quiet_log("No pretrained weights loaded"):
            logging.warning("No pretrained weights loaded for model 'shapes-clip'. Model initialized randomly.")
            logging.warning("another warning")
        logging.warning("No pretrained weights loaded for model 'ViT-B-32'. Model initialized randomly.")
    assert [r.getMessage() for r in caplog.records] == [
        "another warning",
        "No pretrained weights loaded for model 'ViT-B-32'. Model initialized randomly.",
    ]


def test_training_is_announced_once_in_a_sentence(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_training(config, progress=True):
        calls.append(progress)
        return {"token_embedding.weight": torch.zeros(49408, 2)}, {"losses": []}

    monkeypatch.setattr(world_clip, "train_world_clip", fake_training)
    path = world_clip.world_clip_weights(cache_dir=tmp_path, quick=True, use_shipped=False)  # as if none shipped
    out = capsys.readouterr().out
    assert out.startswith("Training the world CLIP (shapes-clip, ") and f"cached in {tmp_path}" in out
    world_clip.world_clip_weights(cache_dir=tmp_path, quick=True, use_shipped=False)  # cached: silent
    assert capsys.readouterr().out == "" and path.is_file() and calls == [True]
