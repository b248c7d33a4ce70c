"""Tests of the synthetic ``shapes`` world: rendering, determinism, benchmark, grammar, concepts."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from searle_core.datasets.base import CIRBenchmark, CIRQuery
from searle_core.world import render
from searle_core.world.attributes import ATTRIBUTES, BACKGROUNDS, COLOURS, SHAPES, SIZES, VALUES, all_combos
from searle_core.world.grammar import (
    CONCEPT_ATTRIBUTES,
    caption_for,
    concepts,
    concepts_of,
    describe,
    phrase_bank,
    relative_caption,
    training_vocabulary,
)
from searle_core.world.render import render_codes
from searle_core.world.shapes_world import ASPECTS, ShapesWorld, WorldConfig, random_codes, random_jitter
from searle_core.world.world_clip import WorldCLIPConfig, training_batch

REPO = Path(__file__).resolve().parents[1]
N_COMBOS = len(SHAPES) * len(COLOURS) * len(SIZES) * len(BACKGROUNDS)


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld(WorldConfig())


@pytest.fixture(scope="module")
def quick() -> ShapesWorld:
    return ShapesWorld(WorldConfig.quick())


def _sample_names(w: ShapesWorld) -> list[str]:
    return w.pretrain_names()[:50] + w.gallery_names("val")[:50] + w.reference_pool("test")[:50]


def _fingerprint(w: ShapesWorld) -> str:
    """Hash of images of every pool and of both benchmarks' queries."""
    h = hashlib.sha256(w.array(_sample_names(w)).tobytes())
    for split in ("val", "test"):
        h.update(repr(w.benchmark(split).queries).encode())
    return h.hexdigest()


# ---- attributes and config -----------------------------------------------------------------------
def test_attribute_spec() -> None:
    assert len(SHAPES) >= 5 and {"circle", "square", "triangle", "star", "cross"} <= set(SHAPES)
    assert set(COLOURS) == {"red", "green", "blue", "yellow", "purple", "orange"}
    assert SIZES == ("small", "large") and set(BACKGROUNDS) == {"white", "black", "gray"}
    assert len(all_combos()) == N_COMBOS == len(SHAPES) * 36
    colours = np.array(list(COLOURS.values()), dtype=float)
    backgrounds = np.array(list(BACKGROUNDS.values()), dtype=float)
    # Every colour is far from every background and from every other colour: all combos visible.
    assert np.linalg.norm(colours[:, None] - backgrounds[None], axis=-1).min() > 100
    pair = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert pair[~np.eye(len(colours), dtype=bool)].min() > 75


def test_config_quick_cache_key_and_validation() -> None:
    default, q = WorldConfig(), WorldConfig.quick()
    assert (default.image_size, default.n_pretrain, default.gallery_per_combo) == (32, 2000, 5)
    assert (default.n_val_queries, default.n_test_queries, default.two_change_fraction) == (400, 400, 0.25)
    assert q.n_pretrain <= 500 and q.gallery_per_combo <= 2 and q.n_val_queries <= 120
    assert re.fullmatch(r"[0-9a-f]{12}", default.cache_key())
    assert default.cache_key() == WorldConfig().cache_key() != q.cache_key()
    assert WorldConfig(seed=1).cache_key() != default.cache_key()
    with pytest.raises(ValueError):
        WorldConfig(image_size=8)
    with pytest.raises(ValueError):
        WorldConfig(two_change_fraction=1.5)


# ---- determinism ---------------------------------------------------------------------------------
def test_same_config_is_identical_and_other_seed_differs(quick: ShapesWorld) -> None:
    twin = ShapesWorld(WorldConfig.quick())
    names = _sample_names(quick)
    assert np.array_equal(quick.array(names), twin.array(names))
    assert quick.benchmark("val").queries == twin.benchmark("val").queries
    other = ShapesWorld(WorldConfig.quick(seed=1))
    assert not np.array_equal(quick.array(names), other.array(names))
    assert [q.captions for q in quick.benchmark("val").queries] != [q.captions for q in other.benchmark("val").queries]


def test_identical_in_a_fresh_process(quick: ShapesWorld) -> None:
    code = (
        "import sys; sys.path.insert(0, 'tests');"
        "from test_shapes_world import _fingerprint;"
        "from searle_core.world import ShapesWorld, WorldConfig;"
        "print(_fingerprint(ShapesWorld(WorldConfig.quick())))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == _fingerprint(quick)


def test_images_do_not_depend_on_request_order(quick: ShapesWorld) -> None:
    names = _sample_names(quick)
    together = quick.array(names)
    assert np.array_equal(together[::-1], quick.array(names[::-1]))
    assert np.array_equal(together[7], np.asarray(quick.images.load_image(names[7])))


# ---- rendering -----------------------------------------------------------------------------------
def _jittered(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = random_codes(rng, n)
    return codes, render_codes(codes, random_jitter(rng, n), WorldConfig(image_size=size))


def _foreground(images: np.ndarray, codes: np.ndarray) -> np.ndarray:
    bg = np.array(list(BACKGROUNDS.values()))[codes[:, ATTRIBUTES.index("background")]]
    return np.abs(images.astype(int) - bg[:, None, None, :]).sum(-1) > 60


def test_background_and_foreground_colours() -> None:
    codes, images = _jittered(300, 32)
    for code, image in zip(codes, images):
        attrs = dict(zip(ATTRIBUTES, (VALUES[a][c] for a, c in zip(ATTRIBUTES, code))))
        corners = image[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert (corners == BACKGROUNDS[attrs["background"]]).all()  # shapes never touch corners
        pixels, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
        non_bg = [(c, tuple(p)) for p, c in zip(pixels, counts) if tuple(p) != BACKGROUNDS[attrs["background"]]]
        assert max(non_bg)[1] == COLOURS[attrs["colour"]]  # interior pixels are exactly the colour


def _bbox_feature(mask: np.ndarray, grid: int = 12) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    yi = ((np.arange(grid) + 0.5) * crop.shape[0] / grid).astype(int)
    xi = ((np.arange(grid) + 0.5) * crop.shape[1] / grid).astype(int)
    return crop[yi][:, xi].ravel().astype(float)


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_are_distinguishable(size: int) -> None:
    # Centred masks of different shapes at the same size overlap clearly less than identical ones.
    k = np.arange(len(SHAPES))
    for fraction in (0.2, 0.34):
        centre, radius = np.full(len(k), size / 2), np.full(len(k), size * fraction)
        m = render.coverage(k, centre, centre, radius, size) > 0.5
        iou = np.array([[(a & b).sum() / (a | b).sum() for b in m] for a in m])
        off = iou[~np.eye(len(k), dtype=bool)]
        assert off.max() < 0.9 and off.mean() < 0.6
    # Under position and size jitter, a 1-nearest-neighbour classifier on bounding-box-normalised
    # masks (same size class) recognises every held-out shape: jitter never makes one shape look
    # like another.
    codes, images = _jittered(1200, size, seed=1)
    feats = np.array([_bbox_feature(m) for m in _foreground(images, codes)])
    s_col, z_col = ATTRIBUTES.index("shape"), ATTRIBUTES.index("size")
    train, test = np.arange(600), np.arange(600, 1200)
    dist = ((feats[test][:, None] - feats[train][None]) ** 2).sum(-1)
    dist[codes[test][:, None, z_col] != codes[train][None, :, z_col]] = np.inf
    assert (codes[train][dist.argmin(1), s_col] == codes[test, s_col]).all()


@pytest.mark.parametrize("size", [32, 64])
def test_sizes_separate_and_scale(size: int) -> None:
    codes, images = _jittered(600, size)
    area = _foreground(images, codes).sum((1, 2)) / size**2
    for s in range(len(SHAPES)):
        on = codes[:, ATTRIBUTES.index("shape")] == s
        small = area[on & (codes[:, ATTRIBUTES.index("size")] == 0)]
        large = area[on & (codes[:, ATTRIBUTES.index("size")] == 1)]
        assert small.max() * 1.5 < large.min()  # "larger"/"smaller" is never ambiguous


def test_image_size_64_and_pil(quick: ShapesWorld) -> None:
    big = ShapesWorld(WorldConfig.quick(image_size=64))
    names = quick.gallery_names("val")[:20]
    small_images, big_images = quick.array(names), big.array(names)
    assert big_images.shape == (20, 64, 64, 3) and big_images.dtype == np.uint8
    codes = quick.codes(names)
    ratio = _foreground(big_images, codes).sum() / _foreground(small_images, codes).sum()
    assert 3.6 < ratio < 4.4  # same shapes, same layout, four times the pixels
    image = big.images.load_image(names[0])
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (64, 64)
    with pytest.raises(KeyError):
        quick.attributes("val_999999")


# ---- benchmark -----------------------------------------------------------------------------------
def _parse_relative(caption: str) -> tuple[str, str]:
    """Independent reading of a relative caption: (attribute, new value or size direction)."""
    if caption in ("is large", "is small"):
        return "size", caption.removeprefix("is ")
    m = re.fullmatch(r"is on a (\w+) background", caption)
    if m:
        return "background", m.group(1)
    m = re.fullmatch(r"is (a|an) (\w+)", caption)
    if m:
        assert m.group(1) == ("an" if m.group(2)[0] in "aeiou" else "a")
        return "shape", m.group(2)
    m = re.fullmatch(r"is (\w+)", caption)
    assert m and m.group(1) in COLOURS, caption
    return "colour", m.group(1)


def test_benchmark_structure(world: ShapesWorld) -> None:
    for split in ("val", "test"):
        bench = world.benchmark(split)
        assert isinstance(bench, CIRBenchmark) and bench.name == "shapes" and not bench.exclude_reference
        assert len(bench.queries) == 400 and len(bench.gallery) == N_COMBOS * 5
        assert all(isinstance(q, CIRQuery) for q in bench.queries)
        assert [q.query_id for q in bench.queries] == [str(i) for i in range(400)]
        assert all(re.fullmatch(rf"{split}_\d{{6}}", g) for g in bench.gallery)
        assert all(re.fullmatch(rf"{split}_ref_\d{{5}}", q.reference) for q in bench.queries)
        assert not set(bench.reference_names()) & set(bench.gallery)  # references not in gallery
        combos = Counter(tuple(world.attributes(g).values()) for g in bench.gallery)
        assert len(combos) == N_COMBOS and set(combos.values()) == {5}  # balanced gallery
    assert not set(world.benchmark("val").gallery) & set(world.benchmark("test").gallery)
    assert all(re.fullmatch(r"pretrain_\d{6}", n) for n in world.pretrain_names())
    assert len(world.pretrain_names()) == 2000


def test_ground_truths_are_exactly_the_matching_gallery_images(world: ShapesWorld) -> None:
    for split in ("val", "test"):
        bench = world.benchmark(split)
        gallery_attrs = {g: world.attributes(g) for g in bench.gallery}
        for q in bench.queries:
            ref = world.attributes(q.reference)
            wanted = dict(ref)
            changed = [_parse_relative(c) for c in q.captions]
            for attribute, value in changed:
                assert value != ref[attribute]  # a change really changes
                wanted[attribute] = value
            expected = [g for g in bench.gallery if gallery_attrs[g] == wanted]
            assert list(q.ground_truths) == expected and q.target == expected[0]
            assert len(expected) == world.config.gallery_per_combo
            kept = [a for a in ATTRIBUTES if a not in {a for a, _ in changed}]
            assert all(gallery_attrs[g][a] == ref[a] for g in q.ground_truths for a in kept)
            assert q.aspect == "+".join(a for a in ATTRIBUTES if a in {a for a, _ in changed})


def test_one_and_two_change_queries(world: ShapesWorld) -> None:
    queries = world.benchmark("val").queries
    two = [q for q in queries if len(q.captions) == 2]
    assert len(two) == round(400 * 0.25)
    assert all(len(q.captions) in (1, 2) for q in queries)
    for q in two:
        kinds = [_parse_relative(c)[0] for c in q.captions]
        assert kinds[0] != kinds[1] and "+" in q.aspect
    counts = Counter(q.aspect for q in queries)
    assert set(counts) == set(ASPECTS)
    assert max(counts[a] for a in ATTRIBUTES) - min(counts[a] for a in ATTRIBUTES) <= 1


def test_size_captions(world: ShapesWorld) -> None:
    seen = set()
    for q in world.benchmark("test").queries:
        for c in q.captions:
            if c in ("is large", "is small"):
                ref_size = world.attributes(q.reference)["size"]
                assert c == ("is large" if ref_size == "small" else "is small")
                assert world.attributes(q.target)["size"] != ref_size
                seen.add(c)
    assert seen == {"is large", "is small"}
    assert relative_caption("shape", "arrow") == "is an arrow"
    assert relative_caption("shape", "square") == "is a square"
    assert relative_caption("background", "white") == "is on a white background"


def test_aspect_selection(quick: ShapesWorld) -> None:
    full = quick.benchmark("val")
    colour = quick.benchmark("val", aspect="colour")
    assert colour.queries and all(q.aspect == "colour" for q in colour.queries)
    assert colour.gallery == full.gallery
    two = quick.benchmark("val", aspect="two")
    assert two.queries and all(len(q.captions) == 2 for q in two.queries)
    with pytest.raises(ValueError):
        quick.benchmark("val", aspect="texture")
    with pytest.raises(ValueError):
        quick.benchmark("train")


# ---- grammar, concepts, phrases ------------------------------------------------------------------
def _mentions(caption: str) -> dict[str, str]:
    """Attribute values a caption asserts, read word by word."""
    words = caption.split()
    out: dict[str, str] = {}
    for i, w in enumerate(words):
        if w in BACKGROUNDS and words[i + 1] == "background":
            out["background"] = w
        elif w in COLOURS:
            out["colour"] = w
        elif w in SHAPES:
            out["shape"] = w
        elif w in SIZES:
            out["size"] = w
    return out


def test_training_captions_are_true_and_in_vocabulary(quick: ShapesWorld) -> None:
    vocabulary = set(training_vocabulary())
    config = dataclasses.replace(WorldCLIPConfig.quick(), batch_size=3000)
    images, captions, _ = training_batch(quick, config, np.random.default_rng(0))
    assert images.shape == (3000, 32, 32, 3) and len(captions) == 3000
    emitted: set[str] = set()
    rng = np.random.default_rng(0)
    for attrs in (dict(zip(ATTRIBUTES, combo)) for combo in itertools.product(*VALUES.values())):
        for _ in range(10):
            caption = describe(attrs, rng)
            mentioned = _mentions(caption)
            assert mentioned and all(attrs[a] == v for a, v in mentioned.items()), caption
            emitted.update(caption.split())
    for caption in captions:
        assert caption == caption.lower() and re.fullmatch(r"[a-z ]+", caption)
        emitted.update(caption.split())
    assert emitted == vocabulary  # the vocabulary is exactly what the grammar emits
    assert not {"larger", "smaller"} & vocabulary  # the world has no comparatives
    assert len(set(captions)) > 500  # varied phrasings


def test_caption_for() -> None:
    attrs = {"colour": "red", "shape": "circle", "size": "small", "background": "black"}
    assert caption_for(attrs) == "a small red circle on a black background"
    attrs = {"colour": "orange", "shape": "arrow", "size": "large", "background": "gray"}
    assert caption_for(attrs) == "a large orange arrow on a gray background"


def test_concepts_and_phrase_bank() -> None:
    names = concepts()
    assert 50 <= len(names) <= 150 and len(set(names)) == len(names)
    assert set(SHAPES) <= set(names) and "red circle" in names
    bank = phrase_bank(n_per_concept=16, seed=0)
    assert list(bank) == names and phrase_bank(16, 0) == bank
    vocabulary = set(training_vocabulary())
    for concept, phrases in bank.items():
        assert len(phrases) == 16 and len(set(phrases)) >= 4
        for phrase in phrases:
            assert phrase.count(concept) == 1, (concept, phrase)  # L_gpt replaces this occurrence
            assert re.fullmatch(r"[a-z ]+", phrase) and set(phrase.split()) <= vocabulary
            # the phrase describes an image of the concept: it asserts the concept's attributes
            assert all(_mentions(phrase).get(a) == v for a, v in CONCEPT_ATTRIBUTES[concept].items())
    attrs = {"colour": "red", "shape": "circle", "size": "small", "background": "black"}
    assert {"circle", "red", "red circle", "small circle", "small red circle", "black background"} == set(
        concepts_of(attrs)
    )
