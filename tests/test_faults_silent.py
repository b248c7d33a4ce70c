"""Inputs that would give silently wrong results, each caught or read correctly.

1. images replaced in place were answered from the feature cache;
2. a φ URL was answered from torch's hub cache by file name, whatever the host;
3. a mistyped profile key was ignored;
4. a repeated CIRCO ``id`` / CIRR ``pairid`` was accepted;
5. a prediction file with a repeated key scored the last copy;
6. a ``$`` in a relative caption became a second pseudo-word.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from faults import CLI, fails, snapshot, tiny_circo, tiny_cirr, write_image, write_json

from searle_core.datasets import FileImageSource, load_circo, load_cirr
from searle_core.datasets.base import CIRQuery
from searle_core.datasets.features import configure_images, image_features
from searle_core.infra.errors import InputError
from searle_core.method.encoding import encode_token_embeddings
from searle_core.metrics.circo_server import CIRCOScoringError, score_circo
from searle_core.retrieval.queries import SEARLE_PROMPT, pseudo_query_features


@pytest.fixture(autouse=True)
def _data(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "searle_data"))


# ---- 1. stale features ---------------------------------------------------------------------------
def test_images_replaced_in_place_are_encoded_anew(tmp_path, random_backbone):
    backbone = configure_images(random_backbone, "clip")
    names = [f"img{i}" for i in range(4)]
    paths = {n: write_image(tmp_path / "images" / f"{n}.png", i) for i, n in enumerate(names)}
    source = FileImageSource(paths)
    old = image_features(backbone, source, names, progress=False)
    for i, n in enumerate(names):  # same names, new content; mtime moved on as a copy would
        write_image(paths[n], 1000 + i)
        os.utime(paths[n], ns=(os.stat(paths[n]).st_atime_ns, os.stat(paths[n]).st_mtime_ns + 10**9))
    fresh = image_features(backbone, FileImageSource(paths), names, progress=False, cache=False)
    assert not torch.allclose(old, fresh)
    # The same source object (in-memory reuse) and a new one (the disk cache, as a new process) both see the change.
    assert torch.equal(image_features(backbone, source, names, progress=False), fresh)
    assert torch.equal(image_features(backbone, FileImageSource(paths), names, progress=False), fresh)
    # Unchanged files still come from the cache: two cache files, one per file state.
    assert len(list((tmp_path / "searle_data/cache/features").glob("image-*.pt"))) == 2


# ---- 2. φ downloads ------------------------------------------------------------------------------
def _phi_file(path, backbone):
    from searle_core.inversion.phi_files import save_phi
    from searle_core.method.phi import Phi

    torch.manual_seed(0)
    save_phi(Phi.for_backbone(backbone), path)
    return path


def test_phi_url_cache_is_keyed_by_the_whole_url(tmp_path, monkeypatch, random_backbone):
    from searle_core.infra import downloads
    from searle_core.inversion.phi_files import load_phi

    good = _phi_file(tmp_path / "good.pt", random_backbone)
    # A file of the same name in torch's hub cache must never answer another URL.
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints/SEARLE_ViT-B32.pt").write_bytes(good.read_bytes())
    fetched = []

    def download(url, dst, hash_prefix=None, progress=True):
        fetched.append(url)
        if "does-not-exist" in url:
            raise OSError("Name or service not known")
        dst_bytes = good.read_bytes()
        with open(dst, "wb") as f:
            f.write(dst_bytes)

    monkeypatch.setattr(downloads, "fetch_url_to_file", download)
    bad_url = "https://does-not-exist.invalid/SEARLE_ViT-B32.pt"
    with pytest.raises(InputError, match=f"could not download {bad_url}"):
        load_phi(bad_url, random_backbone)
    url = "https://example.org/weights/SEARLE_ViT-B32.pt"
    load_phi(url, random_backbone)
    load_phi(url, random_backbone)  # second time from the cache
    assert fetched == [bad_url, url]
    cached = list((tmp_path / "searle_data/cache/phi").glob("*SEARLE_ViT-B32.pt"))
    assert len(cached) == 1 and cached[0].name != "SEARLE_ViT-B32.pt"

    # A known checksum that does not match: refused, and the bad copy is not kept.
    other = "https://example.org/other/SEARLE_ViT-B32.pt"
    monkeypatch.setitem(downloads.KNOWN_SHA256, other, "0" * 64)
    with pytest.raises(InputError, match="SHA-256"):
        load_phi(other, random_backbone)
    assert len(list((tmp_path / "searle_data/cache/phi").glob("*SEARLE_ViT-B32.pt"))) == 1
    monkeypatch.setitem(downloads.KNOWN_SHA256, other, downloads.sha256_of(good))
    assert load_phi(other, random_backbone) is not None


# ---- 3. profiles ---------------------------------------------------------------------------------
def test_mistyped_profile_key_is_an_error_before_anything_runs(tmp_path, capsys):
    from searle_core.notebook.papermill_runner import load_profile

    profile = tmp_path / "mine.yaml"
    profile.write_text("description: mine\nnotebook:\n  01_textual_inversion: {oti_steps: 5}\n")
    with pytest.raises(InputError, match=rf"{profile}: unknown key 'notebook'"):
        load_profile(profile)
    line = fails(capsys, ["paper", "--profile", profile, "--out", tmp_path / "runs"], profile, "'notebook'")
    assert "expected description, figures, notebooks" in line
    assert not (tmp_path / "runs").exists()


# ---- 4. duplicate query ids ----------------------------------------------------------------------
def test_repeated_circo_id_is_rejected_on_load(tmp_path, capsys):
    ann_file = tiny_circo(tmp_path / "circo", n=3) / "annotations/val.json"
    anns = json.loads(ann_file.read_text())
    anns[2]["id"] = 1
    write_json(ann_file, anns)
    with pytest.raises(InputError, match=rf"{ann_file}: id 1 appears 2 times"):
        load_circo(tmp_path / "circo", "val")
    fails(
        capsys,
        ["evaluate", "--dataset", "circo", "--dataset-path", tmp_path / "circo", "--method", "image-only", *CLI],
        ann_file,
        "id 1",
    )
    # The test split too: `searle submission` must not write one query fewer.
    test_file = tmp_path / "circo/annotations/test.json"
    test = json.loads(test_file.read_text())
    test[1]["id"] = 0
    write_json(test_file, test)
    before = snapshot(tmp_path)
    fails(
        capsys,
        [
            "submission",
            "--dataset",
            "circo",
            "--dataset-path",
            tmp_path / "circo",
            "--method",
            "image-only",
            "--out",
            tmp_path / "sub/circo.json",
            *CLI,
        ],
        test_file,
        "id 0",
    )
    assert snapshot(tmp_path) == before and not (tmp_path / "sub/circo.json").exists()


def test_repeated_cirr_pairid_is_rejected_on_load(tmp_path):
    root = tiny_cirr(tmp_path / "cirr", n=3, pairids=[7, 8, 7])
    with pytest.raises(InputError, match=rf"{root / 'cirr/captions/cap.rc2.val.json'}: pairid 7 appears 2 times"):
        load_cirr(root, "val")
    assert len(load_cirr(tiny_cirr(tmp_path / "ok", n=3), "val").queries) == 3


# ---- 5. repeated keys in a prediction file -------------------------------------------------------
def test_prediction_file_with_a_repeated_key_is_rejected(tmp_path, capsys):
    anns = write_json(
        tmp_path / "val.json",
        [
            {"id": 0, "reference_img_id": 1, "target_img_id": 2, "gt_img_ids": [2], "relative_caption": "x"},
            {"id": 1, "reference_img_id": 3, "target_img_id": 4, "gt_img_ids": [4], "relative_caption": "y"},
        ],
    )
    good, bad = list(range(100, 150)), list(range(200, 250))
    preds = tmp_path / "preds.json"
    preds.write_text(f'{{"0": {json.dumps(good)}, "1": {json.dumps(good)}, "0": {json.dumps(bad)}}}')
    with pytest.raises(CIRCOScoringError, match=rf"{preds}: key '0' appears 2 times"):
        score_circo(anns, preds)
    fails(capsys, ["score", "circo", "--annotations", anns, "--predictions", preds], preds, "'0'")


# ---- 6. a dollar sign in a relative caption ------------------------------------------------------
def test_dollar_in_a_caption_stays_text(random_backbone):
    backbone = random_backbone
    token = torch.randn(backbone.token_dim, generator=torch.Generator().manual_seed(0))
    queries = [CIRQuery("0", "ref", ("costs $20 less",)), CIRQuery("1", "ref", ("is red",))]
    got = pseudo_query_features(backbone, queries, {"ref": token}, SEARLE_PROMPT)

    prompts = [SEARLE_PROMPT.format(q.captions[0]) for q in queries]
    ids = backbone.tokenize(prompts)
    assert int((ids[0] == backbone.dollar_token_id).sum()) == 2  # the prompt's $ and the caption's
    model = backbone.model
    with torch.no_grad():
        embeddings = model.token_embedding(ids)
        for row in range(len(prompts)):  # only the first '$' of each prompt is the pseudo-word
            first = int((ids[row] == backbone.dollar_token_id).nonzero()[0])
            embeddings[row, first] = token
        want = torch.nn.functional.normalize(encode_token_embeddings(model, ids, embeddings).float(), dim=-1)
    assert torch.allclose(got, want, atol=1e-6)
