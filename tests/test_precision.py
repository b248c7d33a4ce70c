"""Training precision and threads: native bf16 read from the CPU's flags, ``auto`` resolved where it pays, the
prefix cache under bf16 autocast computing what autocast computes, and the thread count set deliberately."""

import os

import pytest
import torch

from searle_core.infra import device as dev
from searle_core.method.encoding import encode_with_pseudo_tokens
from searle_core.method.prefix_cache import PrefixCachedEncoder
from searle_core.method.templates import TEMPLATES

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "flags, native",
    [
        ("fpu sse avx512f avx512_bf16 avx512_vnni", True),  # Zen 4, Cooper Lake and later Xeons
        ("fpu sse avx512f amx_tile amx_bf16", True),  # Sapphire Rapids' AMX
        ("fp asimd sve bf16 i8mm", True),  # Arm's ``Features`` line
        ("fpu sse avx2 avx512f avx512bw", False),  # AVX-512 without bf16 arithmetic: emulated, not native
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert dev.native_bf16(str(cpuinfo)) is native
    assert dev.native_bf16(str(tmp_path / "absent")) is False  # flags that cannot be read are not assumed


def test_auto_precision_is_bf16_only_where_it_pays(monkeypatch):
    cpu, cuda, wide = torch.device("cpu"), torch.device("cuda"), dev.BF16_MIN_WIDTH
    monkeypatch.setattr(dev, "native_bf16", lambda: True)
    assert dev.training_precision(cpu, "auto", wide) == "bf16"
    assert dev.training_precision(cpu, "auto", wide - 1) == "fp32"  # the world CLIP's 128-wide tower
    assert dev.training_precision(cpu, "auto") == "fp32"  # width unknown (a caller without a text tower)
    assert dev.training_precision(cuda, "auto", wide) == "fp16"  # the authors' on CUDA, whatever the width
    assert dev.training_precision(cpu, "fp32", wide) == "fp32"  # asked for: as asked
    monkeypatch.setattr(dev, "native_bf16", lambda: False)
    assert dev.training_precision(cpu, "auto", wide) == "fp32"
    assert dev.training_precision(cpu, "bf16", 1) == "bf16"
    with dev.train_autocast(cpu, "bf16", 1):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with dev.train_autocast(cpu, "auto", wide):
        assert not torch.is_autocast_enabled("cpu")


def test_set_threads_sets_the_count_deliberately(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        dev.set_threads(1)
        assert torch.get_num_threads() == 1
        dev.set_threads(0)
        assert torch.get_num_threads() == max(1, (os.cpu_count() or 2) // 2)  # the documented default
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun's: one per process, several processes
        dev.set_threads(0)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "many")  # unreadable: the default
        dev.set_threads(0)
        assert torch.get_num_threads() == max(1, (os.cpu_count() or 2) // 2)
    finally:
        torch.set_num_threads(before)


def _prompts(bb):
    prompts = [t.format("$") for t in TEMPLATES[:6]] + ["a $ beside a red cube", "$ and $ again"]
    pseudo = torch.randn(len(prompts), bb.token_dim, generator=torch.Generator().manual_seed(0)) * 0.05
    return bb.tokenize(prompts), pseudo


def test_prefix_cache_under_bf16_autocast_is_autocasts_encoding(random_backbone):
    """Weights cast once and attention in fp32 give the plain encoder's bf16 features up to bf16 rounding, and
    exactly what re-casting every weight at every call (autocast's own way) gives."""
    bb = random_backbone
    tokens, pseudo = _prompts(bb)
    encoder = PrefixCachedEncoder(bb.model, bb.dollar_token_id)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = encoder(tokens, pseudo).float()
        plain = encode_with_pseudo_tokens(bb.model, tokens, pseudo, bb.dollar_token_id, truncate=False).float()
        live = PrefixCachedEncoder(bb.model, bb.dollar_token_id)
        blocks = bb.model.transformer.resblocks
        weights = [
            (b.attn.in_proj_weight, b.attn.out_proj.weight, b.mlp.c_fc.weight, b.mlp.c_proj.weight) for b in blocks
        ]
        live._weights = lambda device_type: weights  # fp32 weights: autocast casts them at every call
        recast = live(tokens, pseudo).float()
    with torch.no_grad():
        fp32 = encoder(tokens, pseudo)
    assert torch.equal(ours, recast)
    scale = fp32.abs().max()
    torch.testing.assert_close(ours, plain, atol=float(scale) * 2e-2, rtol=0)
    assert (ours - fp32).abs().max() > scale * 1e-4  # the control: bf16 is not fp32 (the autocast took effect)
    assert list(encoder._cast) == [torch.bfloat16, None]  # one cast per dtype, kept


def test_every_searle_command_sets_the_threads(monkeypatch, tmp_path, capsys):
    """``--threads N`` where a command has it, else the default (0: half the cores), never torch's choice."""
    from searle_core import cli

    calls = []
    monkeypatch.setattr(cli, "set_threads", calls.append)
    missing = str(tmp_path / "absent")
    assert cli.main(["table", "--dataset", "cirr", "--dataset-path", missing, "--threads", "3", "--no-progress"]) == 2
    assert cli.main(["score", "circo", "--annotations", missing, "--predictions", missing]) == 2  # no --threads
    assert calls == [3, 0]
    with pytest.raises(SystemExit):
        cli.main(["table", "--threads", "-1"])
    assert "--threads" in capsys.readouterr().err


def test_open_study_sets_the_threads_its_settings_name(monkeypatch, tmp_path):
    from searle_core.notebook import study

    calls = []
    monkeypatch.setattr(study, "set_threads", calls.append)
    for threads in (2, None):  # None: the setting's default, 0
        with pytest.raises(OSError):  # the folder is absent: the study stops after setting the threads
            study.open_study("cirr", dataset_path=str(tmp_path / "absent"), threads=threads)
    assert calls == [2, 0]


def test_prefix_cache_runs_only_the_blocks_it_knows(random_backbone):
    """A block whose MLP is not open_clip's ``c_fc, gelu, c_proj`` (run as three calls) turns the cache off."""
    import copy

    model = copy.deepcopy(random_backbone.model)
    assert PrefixCachedEncoder(model, random_backbone.dollar_token_id).enabled
    fc, proj = model.transformer.resblocks[0].mlp.c_fc, model.transformer.resblocks[0].mlp.c_proj
    model.transformer.resblocks[0].mlp = torch.nn.Sequential(fc, torch.nn.GELU(), proj)  # same maths, unnamed
    assert not PrefixCachedEncoder(model, random_backbone.dollar_token_id).enabled


def test_trained_baselines_read_auto_for_their_text_tower(monkeypatch):
    """Pic2Word's and PALAVRA's trainer (``fit``) trains under bf16 autocast where OTI would, fp32 elsewhere."""
    from types import SimpleNamespace

    from searle_core.baselines.training import fit

    monkeypatch.setattr(dev, "native_bf16", lambda: True)
    module, seen = torch.nn.Linear(2, 1), []
    config = SimpleNamespace(seed=0, epochs=1, batch_size=2, lr=1e-3, weight_decay=0.0, precision="auto")

    def loss(idx):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return module(torch.ones(len(idx), 2)).sum()

    fit(module, 2, loss, config, "test", progress=False, width=dev.BF16_MIN_WIDTH)
    fit(module, 2, loss, config, "test", progress=False, width=dev.BF16_MIN_WIDTH - 1)  # the world's narrow tower
    assert seen == [torch.bfloat16, False]
