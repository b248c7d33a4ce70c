"""OTI against the authors' loop (``src/oti_inversion.py``) restated, fed the same random draws.

The project's :func:`oti` is run with its draws recorded (the template index of each image at each
step, and each image's regulariser concept and phrase); the restatement below replays them in the
authors' loop: ``templates[i].format(" $ ")``, ``phrase.replace(concept, " $ ", 1)``, ``clip.tokenize``
with truncation, ``encode_with_pseudo_tokens`` for both prompts, ``encode_text`` for the plain
phrase, ``CosineEmbeddingLoss`` (target 1) for both terms, ``(λ_cos·cos + λ_gpt·gpt) / (λ_cos + λ_gpt)``,
AdamW, and the EMA ``decay·ema + (1 − decay)·tokens`` after each step. The initial tokens are the
same draw on both sides. The EMA tokens (the result) must agree to within fp32 noise.

Controls: the restatement with one line changed (no division by λ_cos + λ_gpt; the EMA updated
before the optimiser step; the phrases' concept replaced everywhere) gives tokens outside that
tolerance, so a project doing any of those would fail.
"""

from __future__ import annotations

import copy
import importlib

import open_clip
import pytest
import torch
import torch.nn as nn
from test_authors_equivalence_files import their_encode

from searle_core.datasets.backbone_setup import open_backbone
from searle_core.inversion import regulariser
from searle_core.inversion.oti import OTIConfig, oti

oti_module = importlib.import_module("searle_core.inversion.oti")  # the package exports the function as `oti`

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
BANK = {
    "dog": ["a photo of dog that runs on the grass", "a photo of dog that sleeps next to another dog"],
    "cat": ["a photo of cat that sits", "a photo of cat that looks at a cat toy", "a photo of cat that jumps"],
    "red car": ["a photo of red car that is parked", "a photo of red car that drives fast"],
    "tree": ["a photo of tree that stands alone"],
}
CONCEPTS = [["dog", "cat"], ["red car"], ["tree", "dog", "red car"], ["cat"]]


def their_oti(model, features, init, templates_per_step, draws_per_step, config, variant=""):
    """The inner loop of ``oti_inversion.py`` for one batch, replaying the given draws."""
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
        loss.backward()
        optimizer.step()
        if variant != "EMA before the step":
            ema = config.ema_decay * ema + (1 - config.ema_decay) * tokens.detach()
    return ema.detach()


@pytest.fixture(scope="module")
def run():
    """The project's OTI on 4 images with its draws recorded."""
    backbone = open_backbone("shapes-clip", "none", "cpu", 3)
    features = torch.randn(4, backbone.embed_dim, generator=torch.Generator().manual_seed(1))
    config = OTIConfig(steps=STEPS, precision="fp32")
    recorded = {"templates": None, "replaced": []}
    real_draw, real_replace = oti_module._draw_templates, regulariser.replace_concept

    def draw_templates(*args):
        recorded["templates"] = real_draw(*args)
        return recorded["templates"]

    def replace(phrase, concept, *args):
        recorded["replaced"].append((phrase, concept))
        return real_replace(phrase, concept, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(oti_module, "_draw_templates", draw_templates)
        mp.setattr(regulariser, "replace_concept", replace)
        result = oti(backbone, features, CONCEPTS, BANK, config, seed=SEED)
    # The draws are made up front: STEPS × 4 replacements, step by step, image by image.
    assert len(recorded["replaced"]) == STEPS * len(CONCEPTS)
    draws = [
        tuple(map(list, zip(*recorded["replaced"][s * 4 : (s + 1) * 4])))  # (phrases, concepts)
        for s in range(STEPS)
    ]
    init = torch.randn(4, backbone.token_dim, generator=torch.Generator().manual_seed(SEED)) * config.init_std
    model = copy.deepcopy(backbone.model).float().eval()
    return result, model, features, init, recorded["templates"], draws, config


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    # fp32 noise after STEPS Adam steps, relative to the tokens' size (about 0.02-0.2 here).
    return bool((a - b).abs().max() <= 1e-5 * b.abs().max())


def test_oti_ema_tokens_are_the_authors(run):
    result, model, features, init, templates, draws, config = run
    theirs = their_oti(model, features, init, templates, draws, config)
    assert (theirs - init).abs().max() > 1e-2  # the tokens moved: not a comparison of two initial draws
    assert _close(result.tokens, theirs), (result.tokens - theirs).abs().max()


@pytest.mark.parametrize("variant", ["no normalisation", "EMA before the step", "replace everywhere"])
def test_each_oti_divergence_is_seen(run, variant):
    result, model, features, init, templates, draws, config = run
    assert not _close(result.tokens, their_oti(model, features, init, templates, draws, config, variant))
