"""OTI against the authors' loop (``src/oti_inversion.py``) restated, drawing as they do.

The restatement takes the raw inputs the authors' script reads: each image's row of its concepts
file (names unstripped, repeated), the phrase pickle unfiltered, ``top_k``. It filters the concepts as
theirs (a concept is dropped if ``phrase.replace(k, " $ ", 1)`` leaves no ``$`` in one of its phrases),
strips and de-duplicates each image's concepts with ``dict.fromkeys``, cuts them to ``top_k`` and
skips the filtered ones after the cut, builds one flat list of all the phrases of those concepts, and
at each step draws one phrase uniformly from it (``random.choice(range(len(phrases)))``), replacing
the first occurrence of its concept by ``" $ "``. It draws from the same seeded stream as the
project's :func:`oti` (the project draws every step's template indices first, then the phrases; their
global ``random`` interleaves ``random.choices`` for the templates: the same law, another order, so
the restatement takes the project's order to compare values). The project is given the same file read
by :func:`read_concepts_csv` and the same pickle through :func:`filter_phrase_bank`.

Then the authors' loop: ``templates[i].format(" $ ")``, ``clip.tokenize`` with truncation,
``encode_with_pseudo_tokens`` for both prompts, ``encode_text`` for the plain phrase,
``CosineEmbeddingLoss`` (target 1) for both terms, ``(λ_cos·cos + λ_gpt·gpt) / (λ_cos + λ_gpt)``,
AdamW, and the EMA ``decay·ema + (1 − decay)·tokens`` after each step. The initial tokens are the
same draw on both sides. The phrases drawn must be the same, the EMA tokens (the result) must
agree to within fp32 noise, and so must each step's loss (Adam barely sees a constant factor on the
loss, so the loss is where a missing normalisation shows).

Controls: the restatement with one line changed (no division by λ_cos + λ_gpt; the EMA updated
before the optimiser step; the phrases' concept replaced everywhere; the filtered concepts dropped
before the top-k cut) gives tokens or losses outside that tolerance, and the project drawing a
concept first and then one of its phrases (φ's draw) does too, so a project doing any of those would
fail.
"""

from __future__ import annotations

import copy
import csv
import random

import open_clip
import pytest
import torch
import torch.nn as nn
from standins import circo_standin, protocol_env, searle_cache  # noqa: F401

from reference.authors import their_encode
from searle_core.clip.backbone import open_backbone
from searle_core.inversion.concepts import read_concepts_csv
from searle_core.inversion.phrases import filter_phrase_bank
from searle_core.method import regulariser
from searle_core.method.oti import OTIConfig, oti

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS, SEED = 40, 5
#: ``utils.get_templates`` (PALAVRA's).
THEIR_TEMPLATES = [
    "This is a photo of a {}",
    "This photo contains a {}",
    "A photo of a {}",
    "This is an illustration of a {}",
    "This illustration contains a {}",
    "An illustrations of a {}",
    "This is a sketch of a {}",
    "This sketch contains a {}",
    "A sketch of a {}",
    "This is a diagram of a {}",
    "This diagram contains a {}",
    "A diagram of a {}",
    "A {}",
    "We see a {}",
    "{}",
    "We see a {} in this photo",
    "We see a {} in this image",
    "We see a {} in this illustration",
    "We see a {} photo",
    "We see a {} image",
    "We see a {} illustration",
    "{} photo",
    "{} image",
    "{} illustration",
]
#: Their phrase pickle, unfiltered: "bird" has a phrase without "bird", so they drop the concept.
BANK = {
    "dog": ["a photo of dog that runs on the grass", "a photo of dog that sleeps next to another dog"],
    "cat": ["a photo of cat that sits", "a photo of cat that looks at a cat toy", "a photo of cat that jumps"],
    "red car": ["a photo of red car that is parked", "a photo of red car that drives fast"],
    "tree": ["a photo of tree that stands alone"],
    "bird": ["a photo of bird that sings", "a photo of a sparrow that flies"],
    "boat": [f"a photo of boat that sails past island {i}" for i in range(6)],
}
#: Their concepts file's rows (unstripped names, a repeat, a filtered concept inside the top k).
ROWS = {
    "img-a": [" dog", "cat ", "dog", "boat", "tree"],
    "img-b": ["bird", "tree", "cat", "boat"],
    "img-c": ["tree", "dog", "red car"],
    "img-d": ["cat"],
}
TOP_K = 3


def their_draws(rows, bank, top_k, steps, n_templates, seed, variant=""):
    """Template indices and ``(phrases, concepts)`` per step, drawn as ``oti_inversion.py`` draws them."""
    rng = random.Random(seed)
    # The project's order of draws from the stream: every step's templates first (see the module).
    templates = [[rng.randrange(n_templates) for _ in rows] for _ in range(steps)]
    concepts_to_filter_out = set()
    for k, v in bank.items():
        for phrase in v:
            p = phrase.replace(k, " $ ", 1)
            if "$" not in p:
                concepts_to_filter_out.add(k)
    batch_gpt_phrases, batch_concepts = [], []
    for l_similar_concepts in rows:
        stripped_concepts = [str(w).strip() for w in l_similar_concepts]
        if variant == "filter before the top k":
            stripped_concepts = [w for w in stripped_concepts if w not in concepts_to_filter_out]
        l_similar_concepts = list(dict.fromkeys(stripped_concepts))[:top_k]
        l_phrases, l_concept_phrases = [], []
        for w in l_similar_concepts:
            if w in concepts_to_filter_out:
                continue
            for p in bank[w]:
                l_phrases.append(p)
                l_concept_phrases.append(w)
        batch_gpt_phrases.append(l_phrases)
        batch_concepts.append(l_concept_phrases)
    draws = []
    for _ in range(steps):
        indexes = [rng.choice(range(len(batch_gpt_phrases[i]))) for i in range(len(batch_gpt_phrases))]
        draws.append(
            (
                [batch_gpt_phrases[i][j] for i, j in enumerate(indexes)],
                [batch_concepts[i][j] for i, j in enumerate(indexes)],
            )
        )
    return templates, draws


def their_oti(model, features, init, templates_per_step, draws_per_step, config, variant=""):
    """The inner loop of ``oti_inversion.py`` for one batch, replaying the given draws: the EMA
    tokens and each step's loss."""
    losses = []
    tokens = nn.Parameter(init.clone())
    ema = tokens.clone().detach()
    optimizer = torch.optim.AdamW([tokens], lr=config.lr, weight_decay=config.weight_decay)
    criterion, target = nn.CosineEmbeddingLoss(), torch.as_tensor([1])
    for template_ids, (phrases, concepts) in zip(templates_per_step, draws_per_step):
        optimizer.zero_grad()
        template_texts = [THEIR_TEMPLATES[i].format(" $ ") for i in template_ids]
        count = -1 if variant == "replace everywhere" else 1
        oti_phrases = [p.replace(w, " $ ", count) for w, p in zip(concepts, phrases)]
        template_features = their_encode(model, open_clip.tokenize(template_texts), tokens)
        reg_features = model.encode_text(open_clip.tokenize(phrases))
        reg_oti_features = their_encode(model, open_clip.tokenize(oti_phrases), tokens)
        cos = criterion(template_features, features, target)
        gpt = criterion(reg_oti_features, reg_features, target)
        loss = config.lambda_cos * cos + config.lambda_gpt * gpt
        if variant != "no normalisation":
            loss = loss / (config.lambda_cos + config.lambda_gpt)
        if variant == "EMA before the step":
            ema = config.ema_decay * ema + (1 - config.ema_decay) * tokens.detach()
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        if variant != "EMA before the step":
            ema = config.ema_decay * ema + (1 - config.ema_decay) * tokens.detach()
    return ema.detach(), losses


def _project_oti(backbone, features, config, tmp_path, draw=None):
    """The project's OTI on the concepts file and pickle as it reads them, with its draws recorded
    (``draw``: force the sampler's draw, for the control)."""
    path = tmp_path / "ViT-B32_top_100_ensembling_image_texts.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Image Name", *map(str, range(1, 6))])
        writer.writerows([name, *row] for name, row in ROWS.items())
    by_name = read_concepts_csv(path)
    concepts = [by_name[name] for name in ROWS]
    replaced = []

    def replace(phrase, concept, *args):
        replaced.append((phrase, concept))
        return REAL_REPLACE(phrase, concept, *args)

    def sampler_init(self, *args, **kwargs):
        REAL_INIT(self, *args, **{**kwargs, "draw": draw or kwargs["draw"]})

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(regulariser, "replace_concept", replace)
        mp.setattr(regulariser.PhraseSampler, "__init__", sampler_init)
        result = oti(backbone, features, concepts, filter_phrase_bank(BANK), config, seed=SEED)
    # The draws are made up front: STEPS × 4 replacements, step by step, image by image.
    assert len(replaced) == STEPS * len(ROWS)
    n = len(ROWS)
    draws = [tuple(map(list, zip(*replaced[s * n : (s + 1) * n]))) for s in range(STEPS)]  # (phrases, concepts)
    return result, draws


REAL_REPLACE, REAL_INIT = regulariser.replace_concept, regulariser.PhraseSampler.__init__


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The project's OTI on 4 images, and the authors' draws from the same seed."""
    backbone = open_backbone("shapes-clip", "none", "cpu", 3)
    features = torch.randn(4, backbone.embed_dim, generator=torch.Generator().manual_seed(1))
    config = OTIConfig(steps=STEPS, precision="fp32", top_concepts=TOP_K)
    result, drawn = _project_oti(backbone, features, config, tmp_path_factory.mktemp("oti"))
    templates, draws = their_draws(list(ROWS.values()), BANK, TOP_K, STEPS, len(config.templates), SEED)
    init = torch.randn(4, backbone.token_dim, generator=torch.Generator().manual_seed(SEED)) * config.init_std
    model = copy.deepcopy(backbone.model).float().eval()
    return result, model, features, init, templates, draws, config, (backbone, drawn)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    # fp32 noise after STEPS Adam steps, relative to the tokens' size (about 0.02-0.2 here).
    return bool((a - b).abs().max() <= 1e-5 * b.abs().max())


def _same(result, theirs) -> bool:
    """The EMA tokens within fp32 noise and every step's loss too (Adam is nearly blind to a constant
    factor on the loss, so a missing normalisation shows in the losses, not in the tokens)."""
    tokens, losses = theirs
    return _close(result.tokens, tokens) and torch.allclose(
        torch.tensor(result.history["total"]), torch.tensor(losses), rtol=1e-5, atol=1e-6
    )


def test_oti_draws_the_authors_phrases(run):
    *_, draws, _, (_, drawn) = run
    assert drawn == draws
    # The draws exercise what they should: the flat list favours boat (6 of img-a's 11 phrases) and
    # the filtered "bird" leaves img-b only tree and cat (not boat, the next concept after the cut).
    assert {cs[1] for _, cs in draws} == {"tree", "cat"}
    assert sum(cs[0] == "boat" for _, cs in draws) > STEPS / 3


def test_oti_ema_tokens_are_the_authors(run):
    result, model, features, init, templates, draws, config, _ = run
    theirs, losses = their_oti(model, features, init, templates, draws, config)
    assert (theirs - init).abs().max() > 1e-2  # the tokens moved: not a comparison of two initial draws
    assert _close(result.tokens, theirs), (result.tokens - theirs).abs().max()
    assert _same(result, (theirs, losses)), (result.history["total"], losses)


@pytest.mark.parametrize("variant", ["no normalisation", "EMA before the step", "replace everywhere"])
def test_each_oti_divergence_is_seen(run, variant):
    result, model, features, init, templates, draws, config, _ = run
    assert not _same(result, their_oti(model, features, init, templates, draws, config, variant))


def test_filtering_before_the_top_k_cut_is_seen(run):
    result, model, features, init, templates, _, config, _ = run
    _, draws = their_draws(
        list(ROWS.values()), BANK, TOP_K, STEPS, len(config.templates), SEED, "filter before the top k"
    )
    assert not _same(result, their_oti(model, features, init, templates, draws, config))


def test_drawing_a_concept_first_is_seen(run, tmp_path):
    """φ's draw (a concept, then one of its phrases) in OTI gives other phrases and other tokens."""
    result, model, features, init, templates, draws, config, (backbone, _) = run
    concept_first, drawn = _project_oti(backbone, features, config, tmp_path, draw="concept")
    assert drawn != draws
    assert not _same(concept_first, their_oti(model, features, init, templates, draws, config))


def test_the_authors_circo_test_folder_with_repeated_references_writes_the_submission(
    circo_standin, protocol_env, tmp_path, capsys
):
    """Their CIRCO-test OTI folder has one token per query (800 queries, 798 distinct references): it loads with
    each reference's first token, as their ``names_list.index``, says which names repeat, and the submission is
    written from it."""
    import json
    import pickle

    from standins import CLI, read_json

    from searle_core.cli import main
    from searle_core.jobs.authors_oti import load_reference_tokens

    names = [str(q["reference_img_id"]) for q in read_json(circo_standin / "annotations/test.json")]
    repeated = sorted({n for n in names if names.count(n) > 1})
    assert repeated and len(set(names)) < len(names)
    folder = tmp_path / "oti_test"
    folder.mkdir()
    (folder / "image_names.pkl").write_bytes(pickle.dumps(names))
    tokens = torch.randn(len(names), 128, generator=torch.Generator().manual_seed(0))  # shapes-clip's token width
    torch.save(tokens, folder / "ema_oti_pseudo_tokens.pt")
    loaded = load_reference_tokens(folder)
    assert len(loaded) == len(set(names)) and torch.equal(loaded[repeated[0]], tokens[names.index(repeated[0])])
    assert repeated[0] in capsys.readouterr().err
    out = tmp_path / "circo.json"
    args = ["submission", "--dataset", "circo", "--dataset-path", str(circo_standin), "--split", "test"]
    assert main([*args, "--method", "searle-oti", "--oti-tokens", str(folder), "--out", str(out), *CLI]) == 0
    written = json.loads(out.read_text())
    assert len(written) == len(names) and all(len(r) == 50 for r in written.values())
