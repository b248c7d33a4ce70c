"""The benchmark's reference recipe and the project's speed-ups compute the same thing (no timings)."""

import json
import math

import pytest
import torch

from benchmarks.__main__ import main
from benchmarks.timing import bench_inputs, bench_oti, bench_retrieval
from reference.oti import reference_oti
from searle_core.method.encoding import encode_with_pseudo_tokens
from searle_core.method.oti import OTIConfig, oti
from searle_core.method.prefix_cache import PrefixCachedEncoder
from searle_core.method.regulariser import replace_concept
from searle_core.method.templates import TEMPLATES

pytestmark = pytest.mark.usefixtures("one_thread")


def test_reference_recipe_gives_the_project_tokens(random_backbone):
    """Same draws, full context, no caching: the tokens agree to rounding after the same steps."""
    feats, concepts, bank = bench_inputs(random_backbone, 4, phrases_per_concept=8)
    config = OTIConfig(steps=6)
    ref = reference_oti(random_backbone, feats, concepts, bank, config, seed=3)
    ours = oti(random_backbone, feats, concepts, bank, config, seed=3).tokens
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    other = reference_oti(random_backbone, feats, concepts, bank, config, seed=4)
    assert (other - ref).abs().max() > 1e-3  # the comparison is not vacuous: the seed matters


def test_prefix_encoder_matches_plain_encoding(random_backbone):
    bb = random_backbone
    _, _, bank = bench_inputs(bb, 1, phrases_per_concept=4)
    prompts = [t.format("$") for t in TEMPLATES] + [replace_concept(p, c) for c in list(bank)[:4] for p in bank[c]]
    prompts += ["$ and $ again", "a $ that is a $ too"]  # several '$': the first gets the token
    tokens = bb.tokenize(prompts)
    pseudo = torch.randn(len(prompts), bb.token_dim, generator=torch.Generator().manual_seed(0)) * 0.05
    encoder = PrefixCachedEncoder(bb.model, bb.dollar_token_id)
    assert encoder.enabled
    a = pseudo.clone().requires_grad_()
    b = pseudo.clone().requires_grad_()
    ours = encoder(tokens, a)
    plain = encode_with_pseudo_tokens(bb.model, tokens, b, bb.dollar_token_id, truncate=False)
    torch.testing.assert_close(ours, plain, atol=1e-5, rtol=1e-5)
    ours.square().sum().backward()
    plain.square().sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4)
    assert len(encoder) < len(prompts)  # prefixes are shared ("SOT a photo of", "SOT")
    again = encoder(tokens[:5], pseudo[:5])  # cached prefixes give the same numbers
    torch.testing.assert_close(again, ours[:5].detach(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no pseudo-word"):
        encoder(bb.tokenize(["no pseudo word"]), pseudo[:1])


def test_bench_oti_reports_throughput_and_agreement(random_backbone):
    result = bench_oti(random_backbone, steps=2, batch_size=3, warmup=False)
    assert result.images == 3 and result.steps == 2
    assert result.reference_images_per_s > 0 and result.project_images_per_s > 0
    assert result.ratio == pytest.approx(result.reference_seconds / result.project_seconds)
    assert result.max_abs_diff < 1e-5


def test_cli_bench_oti_json(capsys):
    assert (
        main(
            [
                "oti",
                "--backbone",
                "shapes-clip",
                "--pretrained",
                "none",
                "--device",
                "cpu",
                "--steps",
                "1",
                "--batch-size",
                "2",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"reference_images_per_s", "project_images_per_s", "ratio", "max_abs_diff"} <= set(out)
    assert all(math.isfinite(out[k]) for k in ("reference_images_per_s", "project_images_per_s", "ratio"))


def test_bench_retrieval_and_features_cli(capsys):
    r = bench_retrieval(gallery_size=500, queries=7, dim=16)
    assert r["queries"] == 7 and r["retrieval_seconds"] > 0
    assert (
        main(
            [
                "features",
                "--backbone",
                "shapes-clip",
                "--pretrained",
                "none",
                "--device",
                "cpu",
                "--n-images",
                "3",
                "--workers",
                "0",
                "--gallery",
                "300",
                "--queries",
                "5",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["features_images_per_s_workers_0"] > 0 and out["gallery_size"] == 300


def test_oti_batch_benchmark_reports_each_sizes_last_losses(random_backbone):
    """``benchmarks oti-batch``'s rows: per batch size, the last step's losses averaged over the images
    (restated here from ``oti`` on each batch, seeded as ``invert_images`` seeds it), and its timing."""
    from benchmarks.timing import bench_oti_batch_sizes
    from searle_core.method.oti import batch_seed

    feats, concepts, bank = bench_inputs(random_backbone, 4, seed=3)
    names = [f"img{i}" for i in range(4)]
    config = OTIConfig(steps=3)
    # 3: a batch of 3 and one of 1, so each batch's mean must be weighted by its images
    rows = bench_oti_batch_sizes(random_backbone, feats, names, concepts, bank, config, (3, 4), seed=5)
    assert [r["batch_size"] for r in rows] == [3, 4]
    for row in rows:
        size, cos, total = row["batch_size"], [], []
        for start in range(0, 4, size):
            part = slice(start, start + size)
            h = oti(random_backbone, feats[part], concepts[part], bank, config, seed=batch_seed(5, names[part])).history
            weight = len(names[part]) / 4
            cos.append(h["cos"][-1] * weight)
            total.append(h["total"][-1] * weight)
        assert row["cos"] == pytest.approx(sum(cos), rel=1e-5) and row["total"] == pytest.approx(sum(total), rel=1e-5)
        assert row["seconds"] > 0 and row["images_per_s"] == pytest.approx(4 / row["seconds"])


def _bench_fails(capsys, argv, *culprits) -> str:
    """``python -m benchmarks ARGV`` stops with status 2 and one error line naming ``culprits``."""
    with pytest.raises(SystemExit) as stopped:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("benchmarks ") and ": error: " in line]
    assert stopped.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert all(str(c) in lines[0] for c in culprits), lines[0]
    return lines[0]


@pytest.mark.parametrize("command", [["oti"], ["features"]])
@pytest.mark.parametrize("seed", ["99999999999999999999999", "-1"])
def test_seed_outside_torchs_range_names_the_flag_and_range(command, seed, capsys):
    _bench_fails(capsys, [*command, "--seed", seed], "--seed", "seed range", str(2**64 - 1))


@pytest.mark.parametrize("value", [str(2**63), "99999999999999999999999", "0", "-5"])
def test_step_counts_torch_cannot_take_are_errors_naming_the_flag(value, capsys):
    line = _bench_fails(capsys, ["oti", "--steps", value], "--steps", value)
    assert ("64 bits" in line) == (int(value) > 0), line


def test_agreement_is_the_smallest_cosine_and_largest_relative_difference():
    from benchmarks.timing import agreement

    base = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    other = torch.tensor([[1.0, 0.1], [0.0, 2.0]])
    cosine, rel = agreement(base, other)
    assert cosine == pytest.approx(1 / math.sqrt(1.01)) and rel == pytest.approx(0.1)
    assert agreement(base, base) == (pytest.approx(1.0), 0.0)


def test_precision_benchmarks_time_each_precision_on_the_same_inputs(random_backbone):
    """fp32 against itself agrees exactly (the same inputs and draws each round); bf16 moves the tokens a
    little, not a lot: the comparison can tell them apart."""
    from benchmarks.timing import bench_oti_precisions, bench_phi_precisions

    same = bench_oti_precisions(random_backbone, ("fp32", "fp32"), steps=2, batch_size=3, repeats=1, warmup=False)
    assert same.max_rel_diff["fp32"] == 0.0 and set(same.seconds) == {"fp32"}
    r = bench_oti_precisions(random_backbone, ("fp32", "bf16"), steps=2, batch_size=3, repeats=2, warmup=False)
    assert r.ratio["fp32"] == 1.0 and r.ratio["bf16"] == pytest.approx(r.seconds["fp32"] / r.seconds["bf16"])
    assert 1e-4 < r.max_rel_diff["bf16"] < 0.2 and 0.99 < r.cosine["bf16"] < 1.0
    phi = bench_phi_precisions(random_backbone, ("fp32", "bf16"), n_images=8, batch_size=4, repeats=1, warmup=False)
    assert phi.detail["steps"] == 2 and 0 < phi.max_rel_diff["bf16"] < 0.5 and phi.cosine["bf16"] > 0.9


@pytest.mark.parametrize("command", ["oti", "phi"])
def test_cli_precision_json(command, capsys):
    argv = [command, "--backbone", "shapes-clip", "--pretrained", "none", "--device", "cpu", "--precision", "fp32,bf16"]
    size = ["--steps", "1", "--batch-size", "2"] if command == "oti" else ["--n-images", "4", "--batch-size", "2"]
    assert main([*argv, *size, "--repeats", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out["seconds"]) == {"fp32", "bf16"} and out["ratio"]["fp32"] == 1.0 and out["threads"] >= 1


def test_precision_list_names_the_bad_value(capsys):
    _bench_fails(capsys, ["oti", "--precision", "fp32,bf8"], "--precision", "bf8", "fp32, fp16, bf16")
    _bench_fails(capsys, ["phi", "--precision", ","], "--precision")


def test_gpu_projection_arithmetic():
    from benchmarks.timing import projected_hours

    assert projected_hours(10.0, 100_000) == pytest.approx(100_000 / 10 / 3600)  # 2.78 h
    with pytest.raises(ValueError, match="positive"):
        projected_hours(0.0, 100)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_gpu_benchmark_without_cuda_says_so(capsys):
    assert main(["gpu", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "benchmarks gpu: error:" in err and "needs a CUDA device" in err


def test_precision_proof_rows_and_table(monkeypatch):
    """The proof's rows: each precision's value and the paired bootstrap of the difference, on stand-in
    scores (the real run is ``python -m benchmarks precision-proof``)."""
    import numpy as np

    from benchmarks import precision_proof as pp

    class Bench:
        queries = list(range(40))

    rng = np.random.default_rng(0)
    a = rng.uniform(0, 100, 40)
    fake = {"fp32": a, "bf16": a + 1.0}  # bf16 a point above on every query: the interval is [+1, +1]

    class Table:
        def __init__(self, precision):
            self.evaluations = {m: type("R", (), {"rankings": precision}) for m in pp.METHODS}

    study = lambda dataset, split, precision, **kw: type("S", (), {"bench": Bench(), "precision": precision})  # noqa: E731
    monkeypatch.setattr(pp, "open_study", study)
    monkeypatch.setattr(pp, "evaluate_setting", lambda s, methods, log: type("T", (), {"table": Table(s.precision)}))
    monkeypatch.setattr(pp, "per_query_scores", lambda bench, rankings, metric: (fake[rankings], None))
    rows = pp.precision_rows(("val",), metrics=("mAP@10",), n_resamples=200, log=lambda line: None)
    assert len(rows) == 2 and rows[0]["fp32"] == pytest.approx(a.mean())
    assert rows[0]["bf16-fp32"] == pytest.approx(1.0) and rows[0]["bf16-fp32 low"] == pytest.approx(1.0)
    assert "[+1.00, +1.00]" in pp.rows_markdown(rows)


def test_gpu_benchmark_rows_and_projection_on_a_stand_in(monkeypatch, capsys, random_backbone):
    """``benchmarks gpu``'s path end to end with CUDA's calls stood in for and the small CLIP on the CPU: one
    row per backbone, GPU-hours projected from each recipe's images/s."""
    import benchmarks.__main__ as bench_main

    monkeypatch.setattr(bench_main, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "stand-in")
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    names = []
    monkeypatch.setattr(
        bench_main, "load_backbone", lambda name, weights, device: names.append(name) or random_backbone
    )
    argv = ["gpu", "--backbones", "A,B", "--steps", "1", "--batch-size", "2", "--full-steps", "10", "--n-images", "360"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert names == ["A", "B"] and len(out["rows"]) == 2 and out["n_images"] == 360
    for row in out["rows"]:
        assert row["gpu"] == "stand-in"
        assert row["project_gpu_hours"] == pytest.approx(360 / row["project_images_per_s"] / 3600)
        assert row["reference_gpu_hours"] == pytest.approx(360 / row["reference_images_per_s"] / 3600)


def test_precision_proof_ablation_readings_side_by_side(monkeypatch):
    """Notebook 5's readings per precision, one row per variant (stand-in study and intervals)."""
    import pandas as pd

    from benchmarks import precision_proof as pp
    from searle_core.notebook import ablations

    class Study:
        def __init__(self, precision):
            self.precision = precision

        def subset(self, n):
            assert n == 50
            return self

    monkeypatch.setattr(pp, "open_study", lambda dataset, precision, seed, **kw: Study(precision))
    monkeypatch.setattr(ablations, "run_ablations", lambda study, variants, equal, rankings: None)
    shift = {"fp32": 0.0, "bf16": 0.5}
    monkeypatch.setattr(
        ablations,
        "intervals",
        lambda study, rankings: pd.DataFrame(
            [
                {
                    "part": "OTI",
                    "variant": "no EMA",
                    "metric": "mAP@10",
                    "difference": 2.0 + shift[study.precision],
                    "low": -1.0,
                    "high": 5.0,
                    "reading": "within noise",
                }
            ]
        ),
    )
    rows = pp.ablation_rows(log=lambda line: None)
    assert rows == [
        {
            "part": "OTI",
            "variant": "no EMA",
            "metric": "mAP@10",
            "fp32": "+2.0 [-1.0, +5.0] within noise",
            "bf16": "+2.5 [-1.0, +5.0] within noise",
        }
    ]


def test_precision_proof_passes_its_threads_to_the_study(monkeypatch, capsys):
    """``--threads`` reaches ``open_study``, which would otherwise set its own default."""
    import benchmarks.__main__ as bench_main

    seen = {}
    monkeypatch.setattr(bench_main, "precision_rows", lambda *a, **kw: seen.update(kw) or [])
    assert main(["precision-proof", "--threads", "1", "--oti-steps", "3", "--json"]) == 0
    assert seen["threads"] == 1 and seen["oti_steps"] == 3 and seen["phi_epochs"] == 70
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"] == []
