"""The CLI against the authors' retrieval restated from a weights file, on images of every mode.

Unlike ``test_authors_equivalence.py`` the two sides share nothing but the files on disk: the
weights file (a CLIP state dict laid out as OpenAI's release, so QuickGELU), the φ file (the
authors' ``{"epoch", "Phi"}``), the annotations and the images. The reference side builds its own
model (open_clip's architecture, QuickGELU because the weights are OpenAI's, the state dict loaded
by hand), its own preprocessing (``data_utils.targetpad_transform``), its own φ (``phi.Phi``) and its
own prompt encoding (``encode_with_pseudo_tokens.py``, ``clip.tokenize``), and ranks as
``generate_test_submission.py`` (CIRCO test, CIRR test1: both server files) and ``validate.py``
(FashionIQ val scores) do. Rankings must be identical: every query, the whole top-50 list, up to
the order of images whose reference similarities differ by less than fp32 noise (``TIE``, 1e-6; a
random small CLIP gives cosines within 1e-3 of each other, and two images 3e-8 apart are ordered by
rounding). Every divergence below moves similarities by far more.

The CLIP is the small ``shapes-clip`` architecture (a ResNet image tower and a CLIP text
transformer, CLIP's tokenizer) with random weights: ViT-B-32 would cost minutes per dataset on a
CPU, and what is compared (loading, activation, preprocessing, prompt, ranking) does not depend on
the size. Images: CMYK and greyscale JPEGs, palette (with and without transparency), RGBA and 16-bit
PNGs, EXIF-rotated JPEGs, of mixed aspect ratios.

Controls (``test_each_divergence_changes_the_rankings``): the reference with one line changed (GELU on
load, RGB conversion before padding, the template, FashionIQ without the reversed captions) ranks
otherwise on these data, so a project doing any of those would fail the equality.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from standins import build_cirr, build_fashioniq, need, read_json, write_json

from reference.authors import TheirPhi, their_encode, their_preprocess
from searle_core.cli import evaluate as cli_evaluate
from searle_core.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

MODES = ("RGB", "CMYK", "L", "P", "P-transparent", "RGBA", "I;16", "EXIF")
SHAPES = ((48, 30), (30, 70), (40, 40), (90, 36), (33, 45))
TIE = 1e-6


def is_their_ranking(ranking: list[str], scores: dict[str, float], k: int, tie: float = TIE) -> bool:
    """Whether ``ranking`` is a top-``k`` of ``scores`` (the reference's similarities): ``k`` distinct
    images in non-increasing order, none left out that scores higher, each up to ``tie``."""
    if len(ranking) != min(k, len(scores)) or len(set(ranking)) != len(ranking) or not set(ranking) <= set(scores):
        return False
    values = [scores[n] for n in ranking]
    if any(b > a + tie for a, b in zip(values, values[1:])):
        return False
    rest = [v for n, v in scores.items() if n not in set(ranking)]
    return not rest or max(rest) <= values[-1] + tie


def same_rankings(ours: dict, theirs: dict, scores: dict, k: int) -> bool:
    """``ours`` equals ``theirs`` query by query, or differs only by the order of tied images."""
    return set(ours) == set(theirs) and all(
        ours[q] == theirs[q] or is_their_ranking(ours[q], scores[q], k) for q in theirs
    )


# ---- images of every mode ------------------------------------------------------------------------
def write_any_image(path: Path, key: str) -> None:
    """A smooth random picture whose mode and aspect ratio follow from ``key``. PNG-only modes are
    written as PNG data whatever the suffix (Pillow opens by content, as COCO's odd files are)."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    rng = np.random.default_rng(h)
    mode, size = MODES[h % len(MODES)], SHAPES[(h // 8) % len(SHAPES)]
    rgba = Image.fromarray(rng.integers(0, 256, (6, 8, 4), dtype=np.uint8), "RGBA").resize(size, Image.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        rgba.convert("RGB").save(path, format="JPEG", quality=95)
    elif mode in ("CMYK", "L"):
        rgba.convert("RGB").convert(mode).save(path, format="JPEG", quality=95)
    elif mode == "P":
        rgba.convert("RGB").quantize(48).save(path, format="PNG")
    elif mode == "P-transparent":
        rgba.convert("RGB").quantize(48).save(path, format="PNG", transparency=5)
    elif mode == "RGBA":
        rgba.save(path, format="PNG")
    elif mode == "I;16":
        grey = np.asarray(rgba.convert("L"), dtype=np.uint16)
        Image.fromarray(grey * 257 // 300).save(path, format="PNG")  # values up to ~218 and above 255
    else:
        exif = Image.Exif()
        exif[0x0112] = 8  # rotated: the authors' code (and so ours) ignores the orientation
        rgba.convert("RGB").save(path, format="JPEG", exif=exif.tobytes(), quality=95)


# ---- the authors' side, restated --------------------------------------------------------------------
class Theirs:
    """The reference pipeline: its own model from the weights file, preprocessing, φ and prompts."""

    def __init__(self, weights: Path, phi: Path, quick_gelu: bool = True, convert_first: bool = False, template=None):
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if k not in ("input_resolution", "context_length", "vocab_size")}
        self.model = open_clip.create_model("shapes-clip", pretrained=None, force_quick_gelu=quick_gelu)
        self.model.load_state_dict(state)
        self.model = self.model.float().eval()
        width = self.model.text_projection.shape[1]
        self.phi = TheirPhi(width, 4 * width, self.model.token_embedding.weight.shape[1], 0.5)
        self.phi.load_state_dict(torch.load(phi, map_location="cpu", weights_only=True)["Phi"])
        self.phi.eval()
        self.preprocess = their_preprocess(32, convert_first)
        self.template = template or "a photo of $ that {}"

    @torch.no_grad()
    def image_features(self, paths: dict[str, Path]) -> dict[str, torch.Tensor]:
        names = list(paths)
        feats = [
            self.model.encode_image(torch.stack([self.preprocess(Image.open(paths[n])) for n in names[i : i + 32]]))
            for i in range(0, len(names), 32)
        ]
        return dict(zip(names, torch.cat(feats).float()))

    @torch.no_grad()
    def queries(self, captions: list[str], ref_features: torch.Tensor) -> torch.Tensor:
        tokens = self.phi(ref_features)  # raw encode_image features, as extract_pseudo_tokens_with_phi
        text = open_clip.tokenize([self.template.format(c) for c in captions], context_length=77)
        return F.normalize(their_encode(self.model, text, tokens), dim=-1)


def circo_test(theirs: Theirs, root: Path) -> tuple[dict, dict]:
    """``circo_generate_test_dict``, and each query's similarities (query id -> image -> cosine)."""
    info = read_json(root / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json")["images"]
    feats = theirs.image_features(
        {str(i["id"]): root / "COCO2017_unlabeled/unlabeled2017" / i["file_name"] for i in info}
    )
    names, index = list(feats), F.normalize(torch.stack(list(feats.values())), dim=-1)
    anns = read_json(root / "annotations/test.json")
    predicted = theirs.queries(
        [a["relative_caption"] for a in anns], torch.stack([feats[str(a["reference_img_id"])] for a in anns])
    )
    similarity = predicted @ index.T
    top = torch.topk(similarity, dim=-1, k=50).indices
    rankings = {str(a["id"]): [names[i] for i in row] for a, row in zip(anns, top.tolist())}
    scores = {str(a["id"]): dict(zip(names, row)) for a, row in zip(anns, similarity.tolist())}
    return rankings, scores


def cirr_test1(theirs: Theirs, root: Path) -> tuple[dict, dict, dict, dict]:
    """``cirr_generate_test_dicts``: the recall and recall_subset files, and the similarities each
    ranks (the gallery without the reference; the reference's set without it)."""
    split = read_json(root / "cirr/image_splits/split.rc2.test1.json")
    feats = theirs.image_features({n: root / rel for n, rel in split.items()})
    names, index = np.array(list(feats)), F.normalize(torch.stack(list(feats.values())), dim=-1)
    caps = read_json(root / "cirr/captions/cap.rc2.test1.json")
    predicted = theirs.queries([c["caption"] for c in caps], torch.stack([feats[c["reference"]] for c in caps]))
    similarity = predicted @ index.T
    sorted_names = names[torch.argsort(1 - similarity, dim=-1).numpy()]
    recall, subset = {"version": "rc2", "metric": "recall"}, {"version": "rc2", "metric": "recall_subset"}
    scores, subset_scores = {}, {}
    for c, row, sims in zip(caps, sorted_names, similarity.tolist()):
        q, row = str(c["pairid"]), [n for n in row.tolist() if n != c["reference"]]
        members = set(c["img_set"]["members"])
        recall[q] = row[:50]
        subset[q] = [n for n in row if n in members][:3]
        scores[q] = {n: v for n, v in zip(names.tolist(), sims) if n != c["reference"]}
        subset_scores[q] = {n: v for n, v in scores[q].items() if n in members}
    return recall, subset, scores, subset_scores


def fashioniq_val(theirs: Theirs, root: Path, reversed_too: bool = True) -> dict[str, dict[str, float]]:
    """``fiq_val_retrieval`` per category: Recall@10 and @50 (in %), and the rankings."""
    out = {}
    for cat in ("dress", "shirt", "toptee"):
        gallery = read_json(root / f"image_splits/split.{cat}.val.json")
        feats = theirs.image_features({n: root / "images" / f"{n}.png" for n in gallery})
        names, index = np.array(list(feats)), F.normalize(torch.stack(list(feats.values())), dim=-1)
        caps = read_json(root / f"captions/cap.{cat}.val.json")
        refs = torch.stack([feats[c["candidate"]] for c in caps])
        a, b = [c["captions"][0].strip(".?, ") for c in caps], [c["captions"][1].strip(".?, ") for c in caps]
        forward = theirs.queries([f"{x} and {y}" for x, y in zip(a, b)], refs)
        backward = theirs.queries([f"{y} and {x}" for x, y in zip(a, b)], refs)
        predicted = F.normalize((forward + backward) / 2 if reversed_too else forward, dim=-1)
        sorted_names = names[torch.argsort(1 - predicted @ index.T, dim=-1).numpy()]
        labels = sorted_names == np.array([c["target"] for c in caps])[:, None]
        out[cat] = {k: float(labels[:, :k].sum() / len(labels) * 100) for k in (10, 50)}
        out[cat]["rankings"] = {f"{cat}{i}": row[:50].tolist() for i, row in enumerate(sorted_names)}
        similarity = (predicted @ index.T).tolist()
        out[cat]["scores"] = {f"{cat}{i}": dict(zip(names.tolist(), row)) for i, row in enumerate(similarity)}
    return out


def fiq_rankings(fiq: dict) -> tuple[dict, dict]:
    """All categories' rankings and similarities, keyed ``{category}{index in its caption file}``."""
    return (
        {q: r for cat in fiq.values() for q, r in cat["rankings"].items()},
        {q: r for cat in fiq.values() for q, r in cat["scores"].items()},
    )


# ---- the data and the files ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("equivalence")
    torch.manual_seed(11)
    model = open_clip.create_model("shapes-clip", pretrained=None)
    state = dict(model.state_dict())
    # OpenAI's release layout: these entries say "OpenAI's weights" (so QuickGELU) to both sides.
    state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    torch.save(state, root / "clip-openai-layout.pt")
    torch.manual_seed(12)
    width = model.text_projection.shape[1]
    phi = TheirPhi(width, 4 * width, model.token_embedding.weight.shape[1], 0.5)
    torch.save({"epoch": 19, "Phi": phi.state_dict()}, root / "phi_19.pt")
    return {"root": root, "weights": root / "clip-openai-layout.pt", "phi": root / "phi_19.pt"}


@pytest.fixture(scope="module")
def circo_root(files) -> Path:
    src = need("circo") / "annotations" / "test.json"
    anns = json.loads(src.read_text())[:16]
    ids = list(dict.fromkeys(a["reference_img_id"] for a in anns)) + [900_000 + i for i in range(44)]
    root = files["root"] / "CIRCO"
    write_json(root / "annotations/test.json", anns)
    info = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]}
    write_json(root / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json", info)
    for i in ids:
        write_any_image(root / "COCO2017_unlabeled/unlabeled2017" / f"{i:012d}.jpg", f"circo{i}")
    return root


@pytest.fixture(scope="module")
def cirr_root(files) -> Path:
    root = build_cirr(files["root"] / "CIRR", n_queries=16, extra_gallery=50, images=False)
    for name, rel in read_json(root / "cirr/image_splits/split.rc2.test1.json").items():
        write_any_image(root / rel, f"cirr{name}")
    return root


@pytest.fixture(scope="module")
def fiq_root(files) -> Path:
    root = build_fashioniq(files["root"] / "FashionIQ", n_queries=16, extra_gallery=60, images=False)
    for cat in ("dress", "shirt", "toptee"):
        for asin in read_json(root / f"image_splits/split.{cat}.val.json"):
            if not (root / "images" / f"{asin}.png").exists():
                write_any_image(root / "images" / f"{asin}.png", f"fiq{asin}")
    return root


def _cli(files, tmp_path, command: str, dataset: str, root: Path, split: str, *extra) -> None:
    args = [command, "--dataset", dataset, "--dataset-path", str(root), "--split", split]
    args += ["--backbone", "shapes-clip", "--pretrained", str(files["weights"]), "--device", "cpu"]
    args += ["--num-workers", "0", "--no-progress", "--method", "searle", "--phi-checkpoint", str(files["phi"])]
    assert main(args + [str(e) for e in extra]) == 0


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEARLE_DATA", str(tmp_path_factory.mktemp("searle_data")))
        yield


def test_the_images_cover_every_mode(circo_root, cirr_root, fiq_root):
    modes = set()
    for folder in (circo_root, cirr_root, fiq_root):
        for path in folder.rglob("*"):
            if path.suffix in (".jpg", ".png"):
                image = Image.open(path)
                modes.add("EXIF" if image.getexif().get(0x0112) else image.mode)
                modes.add("P-transparent" if "transparency" in image.info else "")
    assert set(MODES) <= modes


def test_circo_test_submission_is_the_authors(files, circo_root, env, tmp_path):
    _cli(files, tmp_path, "submission", "circo", circo_root, "test", "--out", tmp_path / "circo.json")
    ours = {q: [str(i) for i in r] for q, r in read_json(tmp_path / "circo.json").items()}
    theirs, scores = circo_test(Theirs(files["weights"], files["phi"]), circo_root)
    assert set(ours) == set(theirs) and all(len(r) == 50 for r in ours.values())
    assert same_rankings(ours, theirs, scores, 50)


def test_cirr_test1_files_are_the_authors(files, cirr_root, env, tmp_path):
    _cli(files, tmp_path, "submission", "cirr", cirr_root, "test1", "--out", tmp_path / "cirr")
    written = {read_json(p)["metric"]: read_json(p) for p in (tmp_path / "cirr").glob("*.json")}
    recall, subset, scores, subset_scores = cirr_test1(Theirs(files["weights"], files["phi"]), cirr_root)
    assert all(len(v) == 50 for k, v in recall.items() if k not in ("version", "metric"))
    header = {"version": "rc2", "metric": "recall"}
    assert {k: written["recall"][k] for k in header} == header
    assert written["recall_subset"]["metric"] == "recall_subset"
    strip = lambda d: {k: v for k, v in d.items() if k not in header}  # noqa: E731
    assert same_rankings(strip(written["recall"]), strip(recall), scores, 50)
    assert same_rankings(strip(written["recall_subset"]), strip(subset), subset_scores, 3)


def test_fashioniq_val_scores_are_the_authors(files, fiq_root, env, tmp_path, capsys, monkeypatch):
    captured = []

    def keep(*args, **kwargs):  # the CLI's own result (its rankings), as it prints its scores
        result = real(*args, **kwargs)
        captured.append((args[2], result[0]))
        return result

    real = cli_evaluate._evaluate
    monkeypatch.setattr(cli_evaluate, "_evaluate", keep)
    capsys.readouterr()
    _cli(files, tmp_path, "evaluate", "fashioniq", fiq_root, "val", "--json")
    ours = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    theirs = fashioniq_val(Theirs(files["weights"], files["phi"]), fiq_root)
    for cat in ("dress", "shirt", "toptee"):
        for k in (10, 50):
            assert ours[cat][f"Recall@{k}"] == pytest.approx(theirs[cat][k], abs=1e-9), (cat, k)
    # The rankings behind the scores, query by query (in each category's caption-file order).
    (bench, result), seen = captured[0], {}
    our_rankings = {}
    for q, ranking in zip(bench.queries, result.rankings):
        i = seen[q.category] = seen.get(q.category, -1) + 1
        caps = read_json(fiq_root / f"captions/cap.{q.category}.val.json")
        assert (q.reference, q.target) == (caps[i]["candidate"], caps[i]["target"])
        our_rankings[f"{q.category}{i}"] = list(ranking[:50])
    rankings, scores = fiq_rankings(theirs)
    assert same_rankings(our_rankings, rankings, scores, 50)


def test_each_divergence_changes_the_rankings(files, circo_root, cirr_root, fiq_root):
    """Controls: each changed line ranks otherwise on these data, so the equalities above would fail."""
    proper = Theirs(files["weights"], files["phi"])
    circo, circo_scores = circo_test(proper, circo_root)
    recall, _, recall_scores, _ = cirr_test1(proper, cirr_root)
    controls = {
        "GELU on load": Theirs(files["weights"], files["phi"], quick_gelu=False),
        "RGB before padding": Theirs(files["weights"], files["phi"], convert_first=True),
        "another template": Theirs(files["weights"], files["phi"], template="a photo of $ {}"),
    }
    for what, other in controls.items():
        assert not same_rankings(circo_test(other, circo_root)[0], circo, circo_scores, 50), what
        other_recall = {k: v for k, v in cirr_test1(other, cirr_root)[0].items() if k not in ("version", "metric")}
        assert not same_rankings(other_recall, {q: recall[q] for q in other_recall}, recall_scores, 50), what
    fiq, fiq_scores = fiq_rankings(fashioniq_val(proper, fiq_root))
    for what, got in {
        **{w: fashioniq_val(o, fiq_root) for w, o in controls.items()},
        "no reversed captions": fashioniq_val(proper, fiq_root, reversed_too=False),
    }.items():
        assert not same_rankings(fiq_rankings(got)[0], fiq, fiq_scores, 50), what
