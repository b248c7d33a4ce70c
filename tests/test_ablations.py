"""Ablations: the variants are the paper's, each changes exactly one thing, and a tiny run works."""

import dataclasses

import pandas as pd
import pytest
import torch

from searle_core.inversion.concepts import Vocabulary
from searle_core.notebook import ablations


def test_oti_variants():
    rows = ablations.oti_variants(350, (50, 150, 350))
    names = [v.name for v in rows]
    assert names == [ablations.FULL, "no phrase regulariser", "templates only", "50 steps", "150 steps", "no EMA"]
    by_name = {v.name: v for v in rows}
    assert by_name["no phrase regulariser"].oti == {"lambda_gpt": 0.0}
    assert by_name["templates only"].phrases == "templates" and by_name["templates only"].oti == {}
    assert by_name["no EMA"].oti == {"use_ema": False}
    assert by_name["50 steps"].oti == {"steps": 50}
    # With a shorter full run (the quick profile), 350 steps is a row of its own.
    assert "350 steps" in [v.name for v in ablations.oti_variants(150, (50, 150, 350))]


def test_phi_variants():
    rows = ablations.phi_variants((0.01, 0.03, 0.1, 1.0))
    by_name = {v.name: v for v in rows}
    assert list(by_name) == [
        ablations.FULL,
        "no distillation (cosine to image)",
        "no phrase regulariser",
        "1 % of images",
        "3 % of images",
        "10 % of images",
    ]
    assert by_name["no distillation (cosine to image)"].loss == {"distil_to_image": True}
    assert by_name["no phrase regulariser"].loss == {"lambda_gpt": 0.0}
    assert by_name["3 % of images"].data_fraction == 0.03
    assert all(v.part == "φ" for v in rows)


def test_template_vocabulary_keeps_concepts():
    vocab = Vocabulary(["red circle", "star"], {"red circle": ["a big red circle"], "star": ["a star on gray"]})
    templated = ablations.template_vocabulary(vocab)
    assert templated.concepts == vocab.concepts
    assert templated.phrase_bank == {"red circle": ["a photo of red circle"], "star": ["a photo of star"]}
    # Every phrase still contains its concept, as the regulariser requires.
    assert all(c in p for c, ps in templated.phrase_bank.items() for p in ps)


def test_subsets_are_nested_and_sized():
    small, mid, full = (ablations.subset_indices(500, f, seed=42) for f in (0.01, 0.1, 1.0))
    assert len(small) == 5 and len(mid) == 50 and full == list(range(500))
    assert set(small) <= set(mid) <= set(full)
    assert ablations.subset_indices(10, 0.01, 0) != []  # at least one image
    assert small == ablations.subset_indices(500, 0.01, seed=42)


def test_equal_step_epochs():
    from types import SimpleNamespace

    world_study = SimpleNamespace(world=object(), unlabeled=(None, list(range(500))), seed=0)
    # 500 images in batches of 64: 8 steps per epoch; 5 images (1 %): 1 step per epoch.
    assert ablations.equal_step_epochs(world_study, 60, None, 0.01) == 480
    assert ablations.equal_step_epochs(world_study, 60, 250, 0.1) == 240  # 250 images: 4 steps; 25: 1
    assert ablations.equal_step_epochs(world_study, 60, 250, 0.5) == 120  # 125 images: 2 steps


def test_ablation_curve_and_markdown():
    table = pd.DataFrame(
        [
            {"part": "OTI", "variant": ablations.FULL, "mAP@10": 30.0, "steps": 150, "data %": None},
            {"part": "OTI", "variant": "no EMA", "mAP@10": 29.0, "steps": 150, "data %": None},
            {"part": "OTI", "variant": "50 steps", "mAP@10": 20.0, "steps": 50, "data %": None},
            {"part": "φ", "variant": ablations.FULL, "mAP@10": 28.0, "steps": None, "data %": 100.0},
            {"part": "φ", "variant": "1 % of images", "mAP@10": 10.0, "steps": None, "data %": 1.0},
            {"part": "φ", "variant": "no phrase regulariser", "mAP@10": 25.0, "steps": None, "data %": 100.0},
        ]
    )
    assert ablations.ablation_curve(table, "OTI", "mAP@10") == ([50.0, 150.0], [20.0, 30.0])
    assert ablations.ablation_curve(table, "φ", "mAP@10") == ([1.0, 100.0], [10.0, 28.0])
    md = ablations.markdown(table[["part", "variant", "mAP@10"]])
    assert md.splitlines()[0] == "| part | variant | mAP@10 |"
    assert "| OTI | no EMA | 29.00 |" in md


@pytest.mark.slow
def test_tiny_ablation_run(tiny_study, monkeypatch, capsys):
    calls = []
    real = ablations.train_study_phi

    def spy(study, oti_config, epochs, images, loss_overrides, fraction, validate):
        calls.append({"epochs": epochs, "loss": loss_overrides, "fraction": fraction, "validate": validate})
        return real(study, oti_config, epochs, images, loss_overrides, fraction, validate=validate)

    monkeypatch.setattr(ablations, "train_study_phi", spy)
    torch.manual_seed(0)
    settings = dataclasses.replace(tiny_study.settings, oti_steps=12, phi_epochs=2)
    study = dataclasses.replace(tiny_study, settings=settings)
    variants = ablations.oti_variants(12, (10, 12, 14)) + ablations.phi_variants((0.25, 1.0))
    table = ablations.run_ablations(study, variants, metric="mAP@10")
    printed = capsys.readouterr().out
    assert list(table.part) == ["OTI"] * 6 + ["φ"] * 4
    assert list(table.variant[:6]) == [
        ablations.FULL,
        "no phrase regulariser",
        "templates only",
        "10 steps",
        "14 steps",
        "no EMA",
    ]
    assert {"mAP@10", "Recall@1", "seconds"} <= set(table.columns)
    assert table["mAP@10"].between(0, 100).all()
    assert table.loc[table.variant == "10 steps", "steps"].item() == 10
    # The 10-step row is the full run's snapshot (a quarter of its time), 14 steps a run of its own.
    oti_rows = table[table.part == "OTI"].set_index("variant")
    full_s, ten_s = oti_rows.loc[ablations.FULL, "seconds"], oti_rows.loc["10 steps", "seconds"]
    assert ten_s < full_s
    # A row read from the cache says so: the 10-step row reads the full run, which ran just before it.
    assert oti_rows.loc["10 steps", "cached"] and not oti_rows.loc["14 steps", "cached"]  # 14: a run of its own
    assert "OTI: 10 steps: mAP@10" in printed and "read from the cache; its first run took" in printed
    # φ variants: the loss change reaches φ's training; no validation. 24 images are one batch of 64,
    # and so are 6: the 25 % φ takes as many steps with as many epochs.
    assert [c["loss"] for c in calls] == [{}, {"distil_to_image": True}, {"lambda_gpt": 0.0}, {}]
    assert [c["fraction"] for c in calls] == [1.0, 1.0, 1.0, 0.25]
    assert calls[3]["epochs"] == 2 and calls[0]["epochs"] == 2
    assert ablations.equal_step_epochs(study, 2, None, 0.25) == 2
    assert not any(c["validate"] for c in calls)


@pytest.mark.slow
def test_snapshots_are_the_ema_of_shorter_runs(tiny_study):
    """The EMA after k steps of a long run is a k-step run's result (constant lr; draws aside)."""
    from searle_core import OTIConfig
    from searle_core.notebook.inversions import benchmark_oti

    long = benchmark_oti(tiny_study, OTIConfig(steps=12, lambda_gpt=0.0), tiny_study.vocabulary)
    short = benchmark_oti(tiny_study, OTIConfig(steps=10, lambda_gpt=0.0), tiny_study.vocabulary)
    # Without the regulariser the only draws are the templates, drawn first: identical for 10 steps.
    assert torch.allclose(long.snapshots[10], short.tokens, atol=1e-5)
    assert not torch.allclose(long.raw, long.tokens)
    again = benchmark_oti(tiny_study, OTIConfig(steps=12, lambda_gpt=0.0), tiny_study.vocabulary)
    assert not again.trained_now and torch.equal(again.tokens, long.tokens)


@pytest.mark.slow
def test_phi_validation_curve_is_the_benchmark_asked_for(tiny_study):
    """A cached φ validated on another benchmark (or not at all) is retrained to validate on this one."""
    from searle_core import OTIConfig
    from searle_core.notebook.inversions import train_study_phi

    config = OTIConfig(steps=4)
    plain = train_study_phi(tiny_study, config, epochs=2, validate=False, progress=False)
    assert not any("mAP@10" in row for row in plain.history)
    small = tiny_study.subset(3)
    on_small = train_study_phi(small, config, epochs=2, progress=False)
    assert on_small.trained_now and "mAP@10" in on_small.history[-1]
    on_full = train_study_phi(tiny_study, config, epochs=2, progress=False)
    assert on_full.trained_now  # the cached curve was the 3-query subset's
    again = train_study_phi(tiny_study, config, epochs=2, progress=False)
    assert not again.trained_now and again.history == on_full.history
    reused = train_study_phi(small, config, epochs=2, validate=False, progress=False)
    assert not reused.trained_now  # without validation any cached φ of the same recipe serves
    # Validation does not change training: the retrained φ is the same network.
    for a, b in zip(plain.phi.state_dict().values(), on_full.phi.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_each_variant_changes_one_setting_and_says_which():
    from searle_core.notebook import ablations

    variants = ablations.oti_variants(150, (50, 150, 350)) + ablations.phi_variants((0.1, 1.0))
    table = ablations.variant_table(variants)
    changed = table[table.setting != "(none)"]
    assert changed.groupby(["part", "variant"]).size().max() == 1  # one changed setting per variant
    assert set(table[table.setting == "(none)"].variant) == {ablations.FULL}
    # The full rows say what ran, never "the paper's settings" (a quick run is not the paper's).
    said = ablations.variant_table(variants, {"OTI": "150 OTI steps", "φ": "60 epochs on 250 images"})
    assert said[said.setting == "(none)"].value.tolist() == ["150 OTI steps", "60 epochs on 250 images"]
    assert "paper" not in " ".join(map(str, table.value)) + ablations.FULL
    by_name = dict(zip(zip(changed.part, changed.variant), zip(changed.setting, changed.value)))
    assert by_name["OTI", "no phrase regulariser"] == ("OTIConfig.lambda_gpt", 0.0)
    assert by_name["OTI", "50 steps"] == ("OTIConfig.steps", 50) and ("OTI", "150 steps") not in by_name
    assert by_name["φ", "10 % of images"] == ("share of φ's unlabeled images", 0.1)


def test_ablation_intervals_read_as_the_interval_says():
    from searle_core.datasets.base import CIRBenchmark, CIRQuery, ImageSource
    from searle_core.notebook import ablations

    gallery = [f"g{i}" for i in range(60)]
    queries = [CIRQuery(str(i), f"r{i}", ("x",), gallery[i], (gallery[i],)) for i in range(40)]
    bench = CIRBenchmark("shapes", "val", queries, gallery, ImageSource())
    right = [[gallery[i]] + [g for g in gallery if g != gallery[i]][:9] for i in range(40)]
    wrong = [[g for g in gallery if g != gallery[i]][:10] for i in range(40)]
    mixed = [right[i] if i % 2 else wrong[i] for i in range(40)]
    study = type("S", (), {"bench": bench})()
    rankings = {
        ("OTI", ablations.FULL): right,
        ("OTI", "broken"): wrong,
        ("OTI", "same"): right,
        ("φ", ablations.FULL): mixed,
        ("φ", "better"): right,
    }
    table = ablations.intervals(study, rankings, n_resamples=500).set_index("variant")
    assert table.loc["broken", "reading"] == "clearly lower" and table.loc["broken", "difference"] == -100.0
    assert table.loc["same", "reading"] == "within noise" and table.loc["same", "difference"] == 0.0
    assert table.loc["better", "reading"] == "clearly higher"
    assert table.loc["better", "difference"] == pytest.approx(50.0, rel=1e-9)
