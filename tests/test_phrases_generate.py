"""``searle phrases generate`` on a tiny randomly initialised GPT-Neo built from a config (offline):
the authors' prompt and settings reach ``generate``, the folder is what ``--phrases`` reads, and a
resumed run gives what an uninterrupted one gives."""

from __future__ import annotations

import json
import pickle

import pytest

from searle_core.cli import main
from searle_core.inversion import phrases
from searle_core.inversion.phrases import filter_phrase_bank, load_phrase_pickle
from searle_core.jobs import phrase_run

transformers = pytest.importorskip(
    "transformers", reason="the optional 'phrases' extra (transformers) is not installed: pip install 'searle[phrases]'"
)
WORDS = "a photo of that dog cat red car tree is runs on the grass sleeps big small and with".split()


@pytest.fixture(scope="module")
def tiny_gpt():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<eos>")
    config = transformers.GPTNeoConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_layers=2,
        num_heads=2,
        attention_types=[[["global", "local"], 1]],
        max_position_embeddings=64,
        window_size=8,
        bos_token_id=1,
        eos_token_id=1,
    )
    transformers.set_seed(0)
    return transformers.GPTNeoForCausalLM(config).eval(), tokenizer


@pytest.fixture
def patched(tiny_gpt, monkeypatch):
    calls = []
    model, tokenizer = tiny_gpt
    real = model.generate

    def generate(**kwargs):
        calls.append({k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask")})
        calls[-1]["prompt"] = tokenizer.decode(kwargs["input_ids"][0])
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", generate)
    monkeypatch.setattr(phrase_run, "load_causal_lm", lambda name: (model, tokenizer))
    return calls


def _concepts(tmp_path, names):
    path = tmp_path / "oidv7-class-descriptions.csv"
    path.write_text("LabelName,DisplayName\n" + "".join(f"/m/{i},{n}\n" for i, n in enumerate(names)))
    return path


def test_generate_writes_what_phrases_reads(tmp_path, patched):
    csv = _concepts(tmp_path, ["dog", " red car", "tree"])
    out = tmp_path / "GPTNeo"
    args = ["phrases", "generate", "--concepts", csv, "--out", out, "--device", "cpu", "--samples", 6]
    assert main([str(a) for a in args + ["--no-progress"]]) == 0
    assert [c["prompt"] for c in patched] == ["a photo of dog that", "a photo of red car that", "a photo of tree that"]
    settings = {k: patched[0][k] for k in ("do_sample", "max_length", "temperature", "no_repeat_ngram_size")}
    assert settings == {"do_sample": True, "max_length": 35, "temperature": 0.5, "no_repeat_ngram_size": 2}
    assert patched[0]["num_return_sequences"] == 6
    raw = pickle.loads((out / "concept_to_phrases.pkl").read_bytes())  # the authors' format: a plain dict
    assert list(raw) == ["dog", "red car", "tree"] and all(len(v) == 6 for v in raw.values())
    assert all(p.startswith("a photo of dog that") for p in raw["dog"])
    assert load_phrase_pickle(out) == raw  # --phrases reads the folder
    assert set(filter_phrase_bank(raw)) == {"dog", "red car", "tree"}  # the containment filter keeps them
    assert json.loads((out / "hyperparameters.json").read_text())["gpt_model"] == phrases.GPT_MODEL
    with pytest.raises(ValueError, match="--resume"):
        phrase_run.generate_phrase_folder(["dog"], out, progress=False)  # nothing of the user's overwritten


def test_resume_per_concept_equals_an_uninterrupted_run(tmp_path, patched, monkeypatch):
    names = ["dog", "cat", "red car", "tree"]
    whole = phrase_run.generate_phrase_folder(names, tmp_path / "whole", n_samples=4, device="cpu", progress=False)
    real, seen = phrase_run.generate_phrases_hf, []

    def dies_on_the_third(concepts, *args, **kwargs):
        seen.append(concepts[0])
        if len(seen) == 3:
            raise KeyboardInterrupt
        return real(concepts, *args, **kwargs)

    monkeypatch.setattr(phrase_run, "generate_phrases_hf", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        phrase_run.generate_phrase_folder(
            names, tmp_path / "cut", n_samples=4, device="cpu", progress=False, save_every=1
        )
    assert list(load_phrase_pickle(tmp_path / "cut")) == ["dog", "cat"]  # saved per concept
    monkeypatch.setattr(phrase_run, "generate_phrases_hf", real)
    patched.clear()
    resumed = phrase_run.generate_phrase_folder(
        names, tmp_path / "cut", n_samples=4, device="cpu", progress=False, resume=True
    )
    assert [c["prompt"] for c in patched] == ["a photo of red car that", "a photo of tree that"]
    assert resumed == whole
    with pytest.raises(ValueError, match="temperature=0.5"):
        phrase_run.generate_phrase_folder(
            names, tmp_path / "cut", n_samples=4, temperature=0.7, resume=True, progress=False
        )
