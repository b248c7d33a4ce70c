"""Concept association with the Open Images V7 names: embedding, caching, top-k, the CLI's vocabulary."""

from __future__ import annotations

import os
import pickle
import sys

import pytest
import torch
import torch.nn.functional as F
from standins import protocol_env, searle_cache  # noqa: F401

from searle_core.inversion.concepts import (
    OTI_TOP_K,
    PHI_TOP_K,
    STORED_TOP_K,
    associate_concepts,
    concept_cache_key,
    embed_concepts,
)
from searle_core.inversion.phrases import UnsafePickleError, load_concepts_csv, save_phrase_pickle
from searle_core.method.templates import TEMPLATES

pytestmark = pytest.mark.usefixtures("protocol_env")  # one torch thread, a tmp SEARLE_DATA


@pytest.fixture(scope="module")
def open_images(shared_data) -> list[str]:
    return load_concepts_csv(shared_data / "concepts/oidv7-class-descriptions.csv")


def test_open_images_names_are_all_read_stripped_and_unique(open_images):
    assert len(open_images) == len(set(open_images)) == 20931
    assert open_images[:2] == ["'Nduja", "10 cane"]
    assert all(n == n.strip() and n for n in open_images)
    assert any("," in n for n in open_images)  # quoted names with commas survive the CSV reader


def test_embedding_is_the_normalised_mean_over_the_24_templates(open_images, random_backbone):
    concepts = open_images[:3] + ["Ducks, geese and swans"]
    plain = []
    for concept in concepts:
        tokens = random_backbone.tokenize([t.format(concept) for t in TEMPLATES])
        with torch.no_grad():  # open_clip's own encode_text, untruncated
            feats = F.normalize(random_backbone.model.encode_text(tokens).float(), dim=-1)
        plain.append(F.normalize(feats.mean(0), dim=-1))
    assert len(TEMPLATES) == 24
    got = embed_concepts(random_backbone, concepts, cache=False)
    torch.testing.assert_close(got, torch.stack(plain), atol=1e-5, rtol=1e-5)
    batched = embed_concepts(random_backbone, concepts, batch_size=48, cache=False)  # two concepts per pass
    torch.testing.assert_close(batched, got, atol=1e-5, rtol=1e-5)


def test_large_vocabularies_are_batched_with_a_bar_and_cached(
    open_images, random_backbone, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SEARLE_DATA", str(tmp_path))
    one = ("{}",)  # one template keeps 1,000 concepts cheap; the logic is the same for 24
    calls = []
    import searle_core.inversion.concepts as concepts_module

    real = concepts_module.encode_text
    monkeypatch.setattr(concepts_module, "encode_text", lambda *a, **k: calls.append(1) or real(*a, **k))
    feats = embed_concepts(random_backbone, open_images[:1000], templates=one, batch_size=256)
    assert feats.shape == (1000, random_backbone.embed_dim) and len(calls) == 4
    assert "embedding concepts" in capsys.readouterr().err  # large list: a progress bar by default
    cached = list((tmp_path / "cache/concepts").glob("concepts-*.pt"))
    assert [p.name for p in cached] == [f"concepts-{concept_cache_key(random_backbone, open_images[:1000], one)}.pt"]
    torch.testing.assert_close(embed_concepts(random_backbone, open_images[:1000], templates=one), feats)
    assert len(calls) == 4  # the second call read the cache
    embed_concepts(random_backbone, open_images[:999], templates=one, progress=False)  # small: not cached
    assert len(list((tmp_path / "cache/concepts").glob("*.pt"))) == 1
    keys = {
        concept_cache_key(random_backbone, open_images[:1000], one),
        concept_cache_key(random_backbone, open_images[:1000], TEMPLATES),
        concept_cache_key(random_backbone, open_images[1:1001], one),
    }
    torch.manual_seed(1)
    from searle_core.clip.backbone import load_backbone

    other = load_backbone("shapes-clip", pretrained=None, device="cpu")
    keys.add(concept_cache_key(other, open_images[:1000], one))
    assert len(keys) == 4  # templates, list and weights each change the key


def test_top_250_stored_top_15_and_150_are_prefixes_and_names_unique():
    torch.manual_seed(0)
    concepts = [f"c{i}" for i in range(400)] + ["c0", "c1", "c2"]  # repeated names
    concept_feats = F.normalize(torch.randn(len(concepts), 16), dim=-1)
    concept_feats[400:] = concept_feats[:3]
    images = torch.randn(5, 16)
    stored = associate_concepts(images, concept_feats, concepts)
    assert STORED_TOP_K == 250 and all(len(s) == 250 == len(set(s)) for s in stored)
    assert [s[:OTI_TOP_K] for s in stored] == associate_concepts(images, concept_feats, concepts, top_k=15)
    assert [s[:PHI_TOP_K] for s in stored] == associate_concepts(images, concept_feats, concepts, top_k=150)
    sims = F.normalize(images, dim=-1) @ concept_feats[:400].T
    assert [s[:15] for s in stored] == [[f"c{j}" for j in row] for row in sims.topk(15).indices.tolist()]
    with pytest.raises(ValueError, match="402 concept names for 403"):
        associate_concepts(images, concept_feats, concepts[:-1])


def _vocab(**kw):
    """The vocabulary a run on CIRCO opens with these settings, its notes on stderr as the CLI's."""
    from searle_core.jobs.from_settings import open_vocabulary
    from searle_core.settings import RunSettings

    return open_vocabulary(RunSettings(dataset="circo", **kw), note=lambda m: print(m, file=sys.stderr))


def test_cli_vocabulary_drops_concepts_without_matching_phrases(tmp_path, capsys):
    csv = tmp_path / "classes.csv"
    csv.write_text('LabelName,DisplayName\n/m/1,Dog\n/m/2,"Ducks, geese and swans"\n/m/3,Cat\n/m/4,Owl\n')
    bank = {
        "Dog": ["a photo of Dog that runs", "a photo of Dog that sleeps"],
        "Ducks, geese and swans": ["a photo of Ducks, geese and swans that swim"],
        "Cat": ["a photo of Cat that purrs", "a photo of a kitten that purrs"],
    }  # one phrase lacks "Cat"
    pkl = save_phrase_pickle(bank, tmp_path / "phrases.pkl")
    vocab = _vocab(concepts=str(csv), phrases=str(pkl))
    # Association runs over every concept (the authors' order); phrases exist only for the usable ones.
    assert vocab.concepts == ["Dog", "Ducks, geese and swans", "Cat", "Owl"]
    assert vocab.phrase_bank == {c: bank[c] for c in ["Dog", "Ducks, geese and swans"]}  # Cat: bad phrase; Owl: none
    assert "associated over all 4; 2 of 4 have usable phrases" in capsys.readouterr().err
    offline = _vocab(concepts=str(csv))
    assert offline.concepts == ["Dog", "Ducks, geese and swans", "Cat", "Owl"]
    assert all(c in p for c in offline.concepts for p in offline.phrase_bank[c])
    only_phrases = _vocab(phrases=str(pkl))
    assert only_phrases.concepts == list(bank) and list(only_phrases.phrase_bank) == ["Dog", "Ducks, geese and swans"]
    assert _vocab() is None


def test_cli_vocabulary_refuses_a_pickle_that_would_run_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"Dog": [Exploit()]}))
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        _vocab(phrases=str(evil))
    assert not (tmp_path / "pwned").exists()
