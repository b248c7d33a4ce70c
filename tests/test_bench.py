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
