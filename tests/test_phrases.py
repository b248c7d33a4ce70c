"""Phrase banks: restricted unpickler, template and HF generators, filtering, concepts CSV."""

from __future__ import annotations

import collections
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import (
    CLI,
    circo,  # noqa: F401
    fails,
    images,  # noqa: F401
)
from cli_helpers import evaluate_fails as _evaluate_fails
from conftest import SHARED_DATA, missing_annotations

from searle_core.inversion.phrases import (
    UnsafePickleError,
    filter_phrase_bank,
    generate_phrases_hf,
    load_concepts_csv,
    load_phrase_pickle,
    save_phrase_pickle,
    template_phrases,
)

CONCEPTS_CSV = SHARED_DATA / "concepts" / "oidv7-class-descriptions.csv"


class _Exploit:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_unpickler_refuses_os_system_without_running_it(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"dog": ["a photo of dog that", _Exploit(marker)]}, protocol=protocol))
    with pytest.raises(UnsafePickleError) as err:
        load_phrase_pickle(path)
    msg = str(err.value)
    assert str(path) in msg and "system" in msg and ("posix" in msg or "os" in msg)
    assert not marker.exists()


def test_unpickler_refuses_other_globals(tmp_path):
    path = tmp_path / "ordered.pkl"
    path.write_bytes(pickle.dumps(collections.OrderedDict(dog=["a dog"])))
    with pytest.raises(UnsafePickleError, match="collections.OrderedDict"):
        load_phrase_pickle(path)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_bank_loads_and_round_trips(tmp_path, protocol):
    bank = {"dog": ["a photo of dog that runs", "a photo of dog that sleeps"], "cat": ("a photo of cat that",)}
    path = tmp_path / "bank.pkl"
    path.write_bytes(pickle.dumps(bank, protocol=protocol))
    loaded = load_phrase_pickle(path)
    assert loaded == {"dog": bank["dog"], "cat": ["a photo of cat that"]}
    save_phrase_pickle(loaded, tmp_path / "out" / "copy.pkl")
    assert load_phrase_pickle(tmp_path / "out" / "copy.pkl") == loaded
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["copy.pkl"]


def test_malformed_pickles_are_clear_errors(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps(["not", "a", "dict"]))
    with pytest.raises(ValueError, match="expected a dict"):
        load_phrase_pickle(path)
    path.write_bytes(pickle.dumps({"dog": [1, 2]}))
    with pytest.raises(ValueError, match="not all strings"):
        load_phrase_pickle(path)
    path.write_bytes(pickle.dumps({"dog": ["x"]})[:-3])
    with pytest.raises(pickle.UnpicklingError, match="list.pkl"):
        load_phrase_pickle(path)


def test_template_phrases_contain_their_concept():
    concepts = ["dog", "Ducks, geese and swans", "  tree ", "dog"]
    bank = template_phrases(concepts, n_per_concept=20, seed=3)
    assert list(bank) == ["dog", "Ducks, geese and swans", "tree"]
    for concept, phrases in bank.items():
        assert len(phrases) == 20 and len(set(phrases)) == 20
        assert all(p.startswith(f"a photo of {concept} that ") for p in phrases)
    assert filter_phrase_bank(bank) == bank
    assert template_phrases(concepts, 20, seed=3) == bank
    assert template_phrases(concepts, 20, seed=4) != bank
    assert len(template_phrases(["x"], 300)["x"]) == 300  # repeats once templates run out


def test_filter_phrase_bank():
    bank = {
        "dog": ["a photo of dog that runs", "a photo of dog that sits"],
        "cat": ["a photo of cat that", "a photo of a kitten"],  # one phrase lost the concept
        "Tree": ["a photo of tree that grows"],  # only a case-insensitive match
        "empty": [],
    }
    assert filter_phrase_bank(bank) == {"dog": bank["dog"]}
    assert set(filter_phrase_bank(bank, case_sensitive=False)) == {"dog", "Tree"}


class _FakeTokenizer:
    eos_token_id = 0

    def __call__(self, text, return_tensors="pt"):
        self.prompt = text
        ids = torch.arange(1, len(text.split()) + 1).unsqueeze(0)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def batch_decode(self, output, skip_special_tokens=True):
        return [f"{self.prompt} runs\n\nfast... home {i}" for i in range(output.shape[0])]


class _FakeModel:
    def to(self, device):
        return self

    def eval(self):
        return self

    def generate(self, **kwargs):
        self.kwargs = kwargs
        return torch.zeros(kwargs["num_return_sequences"], kwargs["max_length"], dtype=torch.long)


def test_generate_phrases_hf_uses_paper_settings():
    model, tok = _FakeModel(), _FakeTokenizer()
    bank = generate_phrases_hf(["dog ", "cat"], model=model, tokenizer=tok, device="cpu")
    assert list(bank) == ["dog", "cat"] and tok.prompt == "a photo of cat that"
    kw = model.kwargs
    assert (kw["num_return_sequences"], kw["max_length"], kw["temperature"], kw["no_repeat_ngram_size"]) == (
        256,
        35,
        0.5,
        2,
    )
    assert kw["do_sample"] is True
    assert len(bank["dog"]) == 256 and bank["dog"][0] == "a photo of dog that runs. fast. home 0"


def test_generate_phrases_hf_explains_missing_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="pip install transformers"):
        generate_phrases_hf(["dog"])


def test_concepts_csv_real_file():
    if not CONCEPTS_CSV.exists():
        pytest.skip(missing_annotations(CONCEPTS_CSV))
    names = load_concepts_csv(CONCEPTS_CSV)
    assert len(names) == 20931 and len(set(names)) == 20931
    assert names[0] == "'Nduja"
    assert "Ducks, geese and swans" in names and 'Fiat 500 "topolino"' in names


def test_concepts_csv_dedupes_in_order(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(
        '\ufeffLabelName,DisplayName\n/m/1,Dog\n/m/2,"Cat, wild"\n/m/3, Dog \n/m/4,\n/m/5,dog\n', encoding="utf-8"
    )
    assert load_concepts_csv(path) == ["Dog", "Cat, wild", "dog"]
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="DisplayName"):
        load_concepts_csv(path)


# ---- fault cases (@pytest.mark.audit_open; helpers in cli_helpers.py) ----
def _vocab_fails(capsys, tmp_path, circo, extra, *culprits):
    return _evaluate_fails(
        capsys, tmp_path, circo, *culprits, extra=["--method", "searle-oti", "--oti-steps", "1", *extra]
    )


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_phrase_pickle_that_runs_code_is_refused(circo, tmp_path, capsys):
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "phrases.pkl"
    path.write_bytes(pickle.dumps({"cat": Exploit()}))
    _vocab_fails(capsys, tmp_path, circo, ["--phrases", path], path, "posix.system")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_truncated_phrase_pickle(circo, tmp_path, capsys):
    path = tmp_path / "phrases.pkl"
    path.write_bytes(pickle.dumps({"cat": ["a photo of a cat"] * 50})[:40])
    _vocab_fails(capsys, tmp_path, circo, ["--phrases", path], path, "not a readable phrase bank pickle")


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_phrase_pickle_that_is_not_a_dict(circo, tmp_path, capsys):
    path = tmp_path / "phrases.pkl"
    path.write_bytes(pickle.dumps(["a photo of a cat"]))
    _vocab_fails(capsys, tmp_path, circo, ["--phrases", path], path, "expected a dict")


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_concept_csv_without_header(circo, tmp_path, capsys):
    path = tmp_path / "classes.csv"
    path.write_text("/m/01,Cat\n/m/02,Dog\n")
    _vocab_fails(capsys, tmp_path, circo, ["--concepts", path], path, "LabelName,DisplayName")


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_concept_csv_not_utf8(circo, tmp_path, capsys):
    path = tmp_path / "classes.csv"
    path.write_bytes(b"LabelName,DisplayName\n/m/01,Cat\n/m/02,Caf\xe9\n")
    _vocab_fails(capsys, tmp_path, circo, ["--concepts", path], path, "line 3", "not UTF-8")


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_concepts_without_usable_phrases(circo, tmp_path, capsys):
    from searle_core.inversion.phrases import save_phrase_pickle

    concepts = tmp_path / "classes.csv"
    concepts.write_text("LabelName,DisplayName\n/m/01,Cat\n")
    phrases = save_phrase_pickle({"Cat": ["a photo of a dog"]}, tmp_path / "phrases.pkl")
    _vocab_fails(capsys, tmp_path, circo, ["--concepts", concepts, "--phrases", phrases], concepts, "usable phrases")


OTI = ["oti", "--dataset", "imagenet", *CLI, "--oti-steps", "1", "--oti-batch-size", "4", "--lambda-gpt", "0"]


@pytest.mark.audit_open
@pytest.mark.usefixtures("one_thread", "opened")
def test_phrase_with_its_concept_past_clips_context_fails_at_load(images, tmp_path, capsys):
    bank = tmp_path / "phrases.pkl"
    long = "a photo of " + " ".join(["very"] * 80) + " large cat that sleeps"
    bank.write_bytes(pickle.dumps({"cat": [long], "dog": ["a photo of dog that runs"]}))
    argv = [*OTI[:-2], "--lambda-gpt", "0.5", "--dataset-path", images, "--phrases", bank]
    fails(capsys, [*argv, "--check-images", "none", "--out", tmp_path / "run"], bank, "'cat'", "77-token")
    assert not (tmp_path / "run" / "chunks").exists()
