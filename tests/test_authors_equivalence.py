"""A smoke check of the CLI against the authors' SEARLE retrieval on ViT-B-32, and the CLI against the notebooks.

What it checks, and what it does not: both sides use the *same* CLIP model object (the project's), and the
rankings must agree on every query's top-1 with a top-10 overlap of at least 0.9, not be identical. The
independent comparison (its own model built from a weights file, rankings equal up to fp32 ties, with
controls) is ``test_authors_equivalence_files.py``. The "CLI vs notebook" tests at the end compare the two
entry points of one engine (``evaluate_methods``): a consistency check, not an equivalence to the authors.

``authors_rankings`` below restates, from the published code (miccunifi/SEARLE ``src/``:
``data_utils.targetpad_transform``, ``utils.extract_image_features`` /
``extract_pseudo_tokens_with_phi``, ``encode_with_pseudo_tokens.py``,
``generate_test_submission.circo_generate_test_dict``), what their CIRCO test submission computes,
without any of the project's code paths except the CLIP model itself:

- images: TargetPad(1.25) (pad with black, ``int((long / 1.25 - short) / 2)`` per side), bicubic
  resize of the short side, centre crop, RGB, ToTensor, CLIP normalisation;
- the gallery: ``encode_image`` in fp32, L2-normalised;
- SEARLE: φ applied to the *raw* ``encode_image`` output of each reference; SEARLE-OTI: the given tokens;
- the query ``a photo of $ that {relative caption}``, tokenised to 77, the *first* ``$`` embedding
  replaced by the token, the text transformer, EOT pooling, projection, L2-normalised;
- ranking: ``topk(query @ gallery.T, 50)``.

The dataset is a CIRCO-layout test split built from the real annotation file with generated images
(not square, so targetpad pads them). The backbone is open_clip ``ViT-B-32`` with random weights
(``--pretrained none``, seed 42), the authors' B/32 architecture; the φ checkpoint is in the authors'
layout ``{"epoch", "Phi"}``, the OTI tokens in theirs (``ema_oti_pseudo_tokens.pt`` + ``image_names.pkl``).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED_DATA, missing_annotations
from PIL import Image

from reference.authors import their_encode, their_preprocess
from searle_core.cli import main
from searle_core.method.phi import Phi

DATA = SHARED_DATA  # ../shared/data, else data/annotations (tests/conftest.py: annotations_dir)
SEED = 42
N_QUERIES = 10
N_DISTRACTORS = 42  # with the 10 references, 52 gallery images: full top-50 lists

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- a small CIRCO in the authors' layout ---------------------------------------------------------
def _image(path: Path, key: str, size=(48, 30)) -> None:
    """A smooth random picture (blurred noise: resizing it is not pure aliasing), the same per key."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    small.save(path, quality=95)


def build_circo(root: Path, split: str, n_queries: int = N_QUERIES, distractors: int = N_DISTRACTORS) -> Path:
    """``root/annotations/{split}.json`` (the first queries of the real file) and the COCO unlabeled
    image-info file and images their references (and, on val, ground truths) plus distractors need."""
    src = DATA / "circo" / "annotations" / f"{split}.json"
    if not src.is_file():
        pytest.skip(missing_annotations(src))
    anns = json.loads(src.read_text())[:n_queries]
    ids = list(dict.fromkeys(i for a in anns for i in [a["reference_img_id"], *a.get("gt_img_ids", [])]))
    ids += [900_000 + i for i in range(distractors)]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"{split}.json").write_text(json.dumps(anns))
    info = root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
    info.parent.mkdir(parents=True, exist_ok=True)
    info.write_text(json.dumps({"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]}))
    for i in ids:
        _image(root / "COCO2017_unlabeled" / "unlabeled2017" / f"{i:012d}.jpg", str(i))
    return root


# ---- the authors' retrieval, restated -----------------------------------------------------------
@torch.no_grad()
def extract_image_features(model, root: Path) -> dict[str, torch.Tensor]:
    """``utils.extract_image_features`` over every listed image: name -> raw fp32 ``encode_image``."""
    model = model.float().eval()
    preprocess = their_preprocess(model.visual.image_size[0])
    info = json.loads((root / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json").read_text())
    names = [str(i["id"]) for i in info["images"]]
    path = {str(i["id"]): root / "COCO2017_unlabeled/unlabeled2017" / i["file_name"] for i in info["images"]}
    feats = torch.cat(
        [
            model.encode_image(torch.stack([preprocess(Image.open(path[n])) for n in names[i : i + 32]]))
            for i in range(0, len(names), 32)
        ]
    ).float()
    return dict(zip(names, feats))


@torch.no_grad()
def authors_rankings(
    model,
    tokenizer,
    root: Path,
    features: dict[str, torch.Tensor],
    tokens_of=None,
    phi: Phi | None = None,
    normalise_phi_input: bool = False,
) -> dict[str, list[str]]:
    """``circo_generate_test_dict`` on ``root``'s test split: query id -> top-50 image ids.

    ``features``: :func:`extract_image_features` (the gallery is every listed image; a reference's
    raw features are its φ input, as ``extract_pseudo_tokens_with_phi`` computes them).
    """
    index_names = list(features)
    index_features = F.normalize(torch.stack(list(features.values())), dim=-1)
    anns = json.loads((root / "annotations/test.json").read_text())
    refs = [str(a["reference_img_id"]) for a in anns]
    if phi is not None:
        raw = torch.stack([features[r] for r in refs])
        tokens = phi.eval()(F.normalize(raw, dim=-1) if normalise_phi_input else raw)
    else:
        tokens = torch.stack([tokens_of[r] for r in refs])
    text = tokenizer([f"a photo of $ that {a['relative_caption']}" for a in anns])
    predicted = F.normalize(their_encode(model, text, tokens), dim=-1)
    top = torch.topk(predicted @ index_features.T, dim=-1, k=50).indices
    return {str(a["id"]): [index_names[i] for i in row] for a, row in zip(anns, top.tolist())}


# ---- the test ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def circo_test(tmp_path_factory) -> Path:
    return build_circo(tmp_path_factory.mktemp("CIRCO"), "test")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One feature cache for the module: the CLI encodes the gallery once for both methods."""
    return tmp_path_factory.mktemp("searle_data")


@pytest.fixture(scope="module")
def authors_features(circo_test, b32) -> dict[str, torch.Tensor]:
    return extract_image_features(b32.model, circo_test)


@pytest.fixture(scope="module")
def b32():
    """The model ``--backbone ViT-B-32 --pretrained none --seed 42`` loads: the same weights and
    activation are given to both pipelines (loading weights is the backbone loader's business)."""
    from searle_core.clip.backbone import open_backbone

    return open_backbone("ViT-B-32", "none", "cpu", SEED)


def _submission(tmp_path, root, method, *extra) -> dict[str, list[str]]:
    out = tmp_path / f"{method}.json"
    code = main(
        [
            "submission",
            "--dataset",
            "circo",
            "--dataset-path",
            str(root),
            "--split",
            "test",
            "--backbone",
            "ViT-B-32",
            "--pretrained",
            "none",
            "--seed",
            str(SEED),
            "--device",
            "cpu",
            "--num-workers",
            "0",
            "--no-progress",
            "--method",
            method,
            "--out",
            str(out),
            *map(str, extra),
        ]
    )
    assert code == 0
    return {q: [str(i) for i in ranked] for q, ranked in json.loads(out.read_text()).items()}  # ids are ints there


def _agree(ours: dict, theirs: dict) -> float:
    assert set(ours) == set(theirs) and all(len(v) == 50 for v in ours.values())
    assert all(ours[q][0] == theirs[q][0] for q in theirs), "top-1 differs"
    return float(np.mean([len(set(ours[q][:10]) & set(theirs[q][:10])) / 10 for q in theirs]))


@pytest.mark.slow
def test_searle_submission_equals_the_authors_pipeline(circo_test, b32, authors_features, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("SEARLE_DATA", str(cache))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        phi = Phi.for_backbone(b32)
    torch.save({"epoch": 19, "Phi": phi.state_dict()}, tmp_path / "SEARLE_ViT-B32.pt")  # the authors' layout
    ours = _submission(tmp_path, circo_test, "searle", "--phi-checkpoint", tmp_path / "SEARLE_ViT-B32.pt")
    theirs = authors_rankings(b32.model, b32.tokenizer, circo_test, authors_features, phi=phi)
    assert _agree(ours, theirs) >= 0.9
    # φ's input scale matters: fed normalised features (the old behaviour), the rankings are others.
    normalised = authors_rankings(
        b32.model, b32.tokenizer, circo_test, authors_features, phi=phi, normalise_phi_input=True
    )
    assert any(normalised[q][0] != theirs[q][0] for q in theirs)


def test_searle_oti_submission_with_the_authors_tokens(circo_test, b32, authors_features, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("SEARLE_DATA", str(cache))
    anns = json.loads((circo_test / "annotations/test.json").read_text())
    names = list(dict.fromkeys(str(a["reference_img_id"]) for a in anns))
    tokens = torch.randn(len(names), b32.token_dim, generator=torch.Generator().manual_seed(3)) * 0.5
    folder = tmp_path / "oti"  # what the authors' oti_inversion.py writes
    folder.mkdir()
    torch.save(tokens, folder / "ema_oti_pseudo_tokens.pt")
    (folder / "image_names.pkl").write_bytes(pickle.dumps(names))
    ours = _submission(tmp_path, circo_test, "searle-oti", "--oti-tokens", folder)
    theirs = authors_rankings(
        b32.model, b32.tokenizer, circo_test, authors_features, tokens_of=dict(zip(names, tokens))
    )
    assert _agree(ours, theirs) >= 0.9


# ---- the notebooks' engine against the CLI (defects 5 and 11) -----------------------------------------
@pytest.fixture(scope="module")
def circo_val(tmp_path_factory) -> Path:
    return build_circo(tmp_path_factory.mktemp("CIRCO-val"), "val", n_queries=20, distractors=30)


def _cli_table(out: Path, capsys, *args) -> dict:
    """``searle table --json`` in process on a random-weights ``shapes-clip``: method -> its JSON row."""
    code = main(
        [
            "table",
            "--backbone",
            "shapes-clip",
            "--device",
            "cpu",
            "--num-workers",
            "0",
            "--no-progress",
            "--compare-to",
            "none",
            "--out",
            str(out),
            "--json",
            *map(str, args),
        ]
    )
    assert code == 0
    return json.loads(capsys.readouterr().out.splitlines()[-1])


def _circo_args(root: Path) -> list[str]:
    return ["--dataset", "circo", "--dataset-path", str(root), "--split", "val"]


def _assert_same_rows(cli: dict, table) -> None:
    """The notebook engine's rows are the CLI's: same methods in order, metrics, variant labels."""
    assert [row.method for row in table.rows] == list(cli)
    for row in table.rows:
        theirs = {k: v for k, v in cli[row.method].items() if k not in ("seconds", "train_seconds", "variant")}
        assert row.metrics == pytest.approx(theirs, abs=1e-9), row.method
        assert row.variant == cli[row.method].get("variant"), row.method


def _without_times(csv_path: Path) -> list[list[str]]:
    """A written table's CSV rows without the columns that hold this run's seconds."""
    import csv

    rows = list(csv.reader(csv_path.open()))
    keep = [i for i, column in enumerate(rows[0]) if column not in ("seconds", "train_seconds")]
    return [[row[i] for i in keep] for row in rows]


def test_notebook_engine_preprocesses_as_the_cli_with_a_weights_file(circo_val, tmp_path, monkeypatch, capsys):
    """The observed defect: the same weights gave other image-only numbers in notebook 4 (no targetpad)."""
    from searle_core.clip.backbone import open_backbone
    from searle_core.notebook import results
    from searle_core.notebook.study import open_study

    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "cache"))
    torch.save(open_backbone("shapes-clip", "none", "cpu", 5).model.state_dict(), tmp_path / "weights.pt")
    cli = _cli_table(
        tmp_path / "tables",
        capsys,
        *_circo_args(circo_val),
        "--pretrained",
        tmp_path / "weights.pt",
        "--methods",
        "image-only",
    )
    study = open_study(
        "circo",
        backbone="shapes-clip",
        pretrained=str(tmp_path / "weights.pt"),
        device="cpu",
        dataset_path=str(circo_val),
        split="val",
    )
    table = results.evaluate_setting(study, ["image-only"], log=None).table
    _assert_same_rows(cli, table)
    clip = open_study(
        "circo",
        backbone="shapes-clip",
        pretrained=str(tmp_path / "weights.pt"),
        device="cpu",
        dataset_path=str(circo_val),
        split="val",
        preprocess="clip",
    )
    other = results.evaluate_setting(clip, ["image-only"], log=None).table.rows[0]
    assert other.metrics != table.rows[0].metrics  # the stand-in images are not square: the preprocessing shows


def test_cli_table_and_notebook_engine_give_the_same_numbers(circo_val, tmp_path, monkeypatch, capsys):
    """Same methods, same settings (random-weights CLIP, seed 42, the dataset's preprocessing, 3 OTI
    steps without concepts, a given φ): the same rows from ``searle table`` and from ``open_study`` +
    ``results.evaluate_setting`` (notebook 4), which both run ``report.evaluation.evaluate_methods``."""
    from searle_core.clip.backbone import open_backbone
    from searle_core.inversion.phi_files import save_phi
    from searle_core.notebook import results
    from searle_core.notebook.study import open_study

    root = circo_val
    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "cache"))
    backbone = open_backbone("shapes-clip", "none", "cpu", SEED)
    save_phi(Phi.for_backbone(backbone), tmp_path / "phi.pt", epoch=3)
    methods = ["image-only", "text-only", "image+text", "searle-oti", "searle"]
    cli = _cli_table(
        tmp_path / "tables",
        capsys,
        *_circo_args(root),
        "--pretrained",
        "none",
        "--methods",
        ",".join(methods),
        "--oti-steps",
        3,
        "--phi-checkpoint",
        tmp_path / "phi.pt",
    )
    study = open_study(
        "circo", backbone="shapes-clip", pretrained="none", device="cpu", dataset_path=str(root), split="val", seed=SEED
    )  # `pretrained: none` is accepted, as on the command line
    assert study.backbone.preprocess.preprocess_id == "targetpad"
    # Without concepts both run OTI without phrases (a shapes-clip backbone on CIRCO gets no world phrases).
    assert study.vocabulary is None
    setting = results.evaluate_setting(study, methods, oti_steps=3, phi_checkpoint=str(tmp_path / "phi.pt"), log=None)
    _assert_same_rows(cli, setting.table)
    assert cli["searle-oti"]["variant"] == "no phrases" and "variant" not in cli["searle"]  # no concepts; φ given
    assert cli["image-only"]["mAP@10"] != cli["image+text"]["mAP@10"]  # not a vacuous comparison
    assert setting.table.settings == {
        "preprocess": "targetpad",
        "eval_precision": "fp32",
        "train_precision": "fp32",
        "phi_epoch": 3,
        "phi_source": str(tmp_path / "phi.pt"),
    }
    written = (tmp_path / "tables" / "circo-val.csv").read_text().splitlines()
    assert written[0].endswith(",preprocess,eval_precision,train_precision,phi_epoch,phi_source")
    assert written[-1].endswith(f",targetpad,fp32,fp32,3,{tmp_path / 'phi.pt'}")


def test_cli_table_and_notebook_engine_agree_on_the_shapes_world(tmp_path, monkeypatch, capsys):
    """The one-path equality on the quick world with a random-weights CLIP: image-only, text-only,
    image+text, SEARLE-OTI at 2 and at 6 steps (with the world's phrase regulariser) and SEARLE with a
    given φ give the same numbers and the same written CSV through ``searle table`` and through notebook
    4's engine, each computing its own features (two caches)."""
    from searle_core.clip.backbone import open_backbone
    from searle_core.inversion.phi_files import save_phi
    from searle_core.notebook import results
    from searle_core.notebook.study import open_study
    from searle_core.report.table import write_table

    save_phi(Phi.for_backbone(open_backbone("shapes-clip", "none", "cpu", SEED)), tmp_path / "phi.pt", epoch=2)
    methods = ["image-only", "text-only", "image+text", "searle-oti", "searle"]
    oti = {}
    for steps in (2, 6):
        monkeypatch.setenv("SEARLE_DATA", str(tmp_path / f"cli-{steps}"))
        cli = _cli_table(
            tmp_path / f"cli-{steps}",
            capsys,
            "--dataset",
            "shapes",
            "--split",
            "val",
            "--quick",
            "--pretrained",
            "none",
            "--seed",
            SEED,
            "--methods",
            ",".join(methods),
            "--oti-steps",
            steps,
            "--phi-checkpoint",
            tmp_path / "phi.pt",
        )
        monkeypatch.setenv("SEARLE_DATA", str(tmp_path / f"notebook-{steps}"))
        study = open_study("shapes", quick=True, pretrained="none", device="cpu", seed=SEED)
        setting = results.evaluate_setting(
            study, methods, oti_steps=steps, phi_checkpoint=str(tmp_path / "phi.pt"), log=None
        )
        assert setting.ctx.oti_config.steps == steps and setting.ctx.oti_config.lambda_gpt == 0.5
        _assert_same_rows(cli, setting.table)
        notebook_csv = write_table(setting.table, tmp_path / f"notebook-{steps}", "shapes-val-quick")[0]
        assert _without_times(notebook_csv) == _without_times(tmp_path / f"cli-{steps}" / "shapes-val-quick.csv")
        assert cli["image-only"]["mAP@10"] != cli["image+text"]["mAP@10"] != cli["searle-oti"]["mAP@10"]
        oti[steps] = cli["searle-oti"]
    assert oti[2] != oti[6]  # the step count reached both paths
