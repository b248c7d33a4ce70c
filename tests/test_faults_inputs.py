"""Bad inputs through the CLI: datasets, annotations, prediction files, checkpoints, phrase banks,
concept lists, profiles and arguments. Each case: exit status 2, one error line naming the culprit,
nothing written or lost."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from faults import CLI, circo_annotations, fails, searle, snapshot, tiny_circo, write_image, write_json
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")
EVAL = ["evaluate", "--dataset", "circo", "--method", "image-only", *CLI, "--num-workers", "0"]


@pytest.fixture(autouse=True)
def _data(tmp_path, monkeypatch):
    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "searle_data"))


@pytest.fixture
def circo(tmp_path):
    return tiny_circo(tmp_path / "circo")


def _evaluate_fails(capsys, tmp_path, root, *culprits, extra=()) -> str:
    """``searle evaluate`` on ``root`` fails naming ``culprits``; no dataset file changed, no feature cached."""
    before = snapshot(root)
    line = fails(capsys, [*EVAL, "--dataset-path", root, *extra], *culprits)
    assert snapshot(root) == before
    assert not list((tmp_path / "searle_data").rglob("image-*.pt"))  # failed before any feature was computed
    return line


# ---- annotations ---------------------------------------------------------------------------------
def test_annotation_file_with_invalid_json_names_file_and_line(circo, tmp_path, capsys):
    ann = circo / "annotations/val.json"
    ann.write_text('[\n  {"id": 0,\n   "reference_img_id": 1\n')
    _evaluate_fails(capsys, tmp_path, circo, ann, "line 4", "not valid JSON")


def test_annotation_file_not_utf8(circo, tmp_path, capsys):
    ann = circo / "annotations/val.json"
    ann.write_bytes(json.dumps(circo_annotations()).encode().replace(b"is number 1", b"is n\xe9mber 1"))
    _evaluate_fails(capsys, tmp_path, circo, ann, "not UTF-8", "0xe9")


def test_annotation_missing_a_key_names_field_and_query(circo, tmp_path, capsys):
    anns = circo_annotations()
    del anns[1]["relative_caption"]
    write_json(circo / "annotations/val.json", anns)
    _evaluate_fails(capsys, tmp_path, circo, circo / "annotations/val.json", "id 1", "'relative_caption'")


def test_annotation_file_that_is_not_a_list(circo, tmp_path, capsys):
    write_json(circo / "annotations/val.json", {"0": circo_annotations()[0]})
    _evaluate_fails(capsys, tmp_path, circo, circo / "annotations/val.json", "expected a JSON list")


def test_annotation_entry_that_is_not_an_object(circo, tmp_path, capsys):
    write_json(circo / "annotations/val.json", [*circo_annotations(2), 17])
    _evaluate_fails(capsys, tmp_path, circo, circo / "annotations/val.json", "annotation #2")


def test_image_info_without_images_list(circo, tmp_path, capsys):
    info = circo / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
    write_json(info, {"licenses": []})
    _evaluate_fails(capsys, tmp_path, circo, info, "'images'")


def test_fashioniq_caption_without_captions_field(tmp_path, capsys):
    root = tmp_path / "fiq"
    for cat in ("dress", "shirt", "toptee"):
        write_json(root / f"image_splits/split.{cat}.val.json", ["a1", "a2"])
        write_json(root / f"captions/cap.{cat}.val.json", [{"candidate": "a1", "target": "a2", "captions": ["x", "y"]}])
        for asin in ("a1", "a2"):
            write_image(root / "images" / f"{asin}.jpg", 1)
    bad = root / "captions/cap.shirt.val.json"
    write_json(bad, [{"candidate": "a1", "target": "a2", "caption": "x"}])
    before = snapshot(root)
    fails(
        capsys,
        ["evaluate", "--dataset", "fashioniq", "--dataset-path", root, "--method", "image-only", *CLI],
        bad,
        "annotation #0",
        "'captions'",
    )
    assert snapshot(root) == before


def test_cirr_caption_without_pairid(tmp_path, capsys):
    from faults import tiny_cirr

    root = tiny_cirr(tmp_path / "cirr")
    caps = json.loads((root / "cirr/captions/cap.rc2.val.json").read_text())
    del caps[0]["pairid"]
    write_json(root / "cirr/captions/cap.rc2.val.json", caps)
    fails(
        capsys,
        ["evaluate", "--dataset", "cirr", "--dataset-path", root, "--method", "image-only", *CLI],
        root / "cirr/captions/cap.rc2.val.json",
        "'pairid'",
    )


def test_dataset_folder_that_does_not_exist(tmp_path, capsys):
    status, _, err = searle(capsys, *EVAL, "--dataset-path", tmp_path / "nowhere")
    assert status == 2 and "Traceback" not in err
    assert f"dataset folder {tmp_path / 'nowhere'} is incomplete" in err and not (tmp_path / "nowhere").exists()


# ---- images --------------------------------------------------------------------------------------
def _truncate(path):
    path.write_bytes(path.read_bytes()[:200])


def test_truncated_image_found_up_front_with_check_images_open(circo, tmp_path, capsys):
    victim = circo / "COCO2017_unlabeled/unlabeled2017/000000000002.jpg"
    write_image(victim, 2, size=(64, 64))
    _truncate(victim)  # its header still reads: only a full decode finds it
    _evaluate_fails(capsys, tmp_path, circo, victim, extra=["--check-images", "open"])


def test_truncated_image_skipped_with_on_missing_skip(circo, tmp_path, capsys):
    victim = circo / "COCO2017_unlabeled/unlabeled2017/000000000008.jpg"
    write_image(victim, 8, size=(64, 64))
    _truncate(victim)
    status, out, err = searle(
        capsys, *EVAL, "--dataset-path", circo, "--check-images", "open", "--on-missing", "skip", "--json"
    )
    assert status == 0, err
    assert "skipped 1 missing or unreadable image(s)" in err and str(victim) in err
    assert "mAP@10" in json.loads(out)


def test_image_too_large_to_decode_safely(circo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # 16x10 = 160 pixels: over twice the limit
    status, _, err = searle(capsys, *EVAL, "--dataset-path", circo, "--check-images", "none")
    assert status == 2
    line = [x for x in err.splitlines() if ": error: " in x][0]
    assert "too large to decode safely" in line and "unlabeled2017/0000000000" in line


def test_missing_image_names_file_and_query(circo, tmp_path, capsys):
    (circo / "COCO2017_unlabeled/unlabeled2017/000000000001.jpg").unlink()
    status, _, err = searle(capsys, *EVAL, "--dataset-path", circo)
    assert status == 2 and "Traceback" not in err
    assert "000000000001.jpg" in err and "reference_img_id of annotations/val.json query id 0" in err


# ---- prediction files ----------------------------------------------------------------------------
@pytest.fixture
def scoring(tmp_path):
    anns = write_json(tmp_path / "val.json", circo_annotations(2))
    return anns, tmp_path / "preds.json"


def _score_fails(capsys, anns, preds, *culprits):
    before = snapshot(anns.parent)
    fails(capsys, ["score", "circo", "--annotations", anns, "--predictions", preds], *culprits)
    assert snapshot(anns.parent) == before


def test_prediction_file_invalid_json(scoring, capsys):
    anns, preds = scoring
    preds.write_text('{"0": [1, 2, 3],\n "1": [4, 5\n')
    _score_fails(capsys, anns, preds, preds, "line 3", "not valid JSON")


def test_prediction_file_not_utf8(scoring, capsys):
    anns, preds = scoring
    preds.write_bytes(b'{"0": [1], "\xff": [2]}')
    _score_fails(capsys, anns, preds, preds, "not UTF-8")


def test_prediction_file_missing(scoring, capsys):
    anns, preds = scoring
    _score_fails(capsys, anns, preds, preds, "does not exist")


def test_prediction_list_with_a_float_id(scoring, capsys):
    anns, preds = scoring
    write_json(preds, {"0": [1.5] + list(range(100, 149)), "1": list(range(100, 150))})
    _score_fails(capsys, anns, preds, preds, "1.5")


# ---- checkpoints ---------------------------------------------------------------------------------
def _phi(tmp_path, random_backbone, name="phi.pt"):
    from searle_core.inversion.phi_files import save_phi
    from searle_core.method.phi import Phi

    torch.manual_seed(0)
    path = tmp_path / name
    save_phi(Phi.for_backbone(random_backbone), path)
    return path


def _searle_fails(capsys, tmp_path, circo, checkpoint, *culprits):
    return _evaluate_fails(
        capsys, tmp_path, circo, *culprits, extra=["--method", "searle", "--phi-checkpoint", checkpoint]
    )


def test_truncated_phi_checkpoint(circo, tmp_path, capsys, random_backbone):
    path = _phi(tmp_path, random_backbone)
    path.write_bytes(path.read_bytes()[:300])
    _searle_fails(capsys, tmp_path, circo, path, path, "damaged or not a torch file", "φ checkpoint")


def test_phi_checkpoint_that_is_a_text_file(circo, tmp_path, capsys):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    _searle_fails(capsys, tmp_path, circo, path, path, "damaged or not a torch file")


def test_phi_checkpoint_with_nan_weights(circo, tmp_path, capsys, random_backbone):
    path = _phi(tmp_path, random_backbone)
    state = torch.load(path, weights_only=True)
    state["Phi"]["layers.3.weight"][0, 0] = float("nan")
    torch.save(state, path)
    _searle_fails(capsys, tmp_path, circo, path, path, "layers.3.weight", "NaN")


def test_phi_checkpoint_that_runs_code_is_refused(circo, tmp_path, capsys):
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pt"
    torch.save({"Phi": Exploit()}, path)
    _searle_fails(capsys, tmp_path, circo, path, path, "refused to load this φ checkpoint")
    assert not (tmp_path / "pwned").exists()


def test_phi_checkpoint_of_another_layout(circo, tmp_path, capsys):
    path = tmp_path / "other.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, path)
    _searle_fails(capsys, tmp_path, circo, path, path, "not a φ checkpoint")


def test_phi_checkpoint_that_does_not_exist(circo, tmp_path, capsys):
    _searle_fails(capsys, tmp_path, circo, tmp_path / "SEARLE_ViT-B32.pt", "SEARLE_ViT-B32.pt", "not found")


def test_phi_producing_nan_tokens(circo, tmp_path, capsys, random_backbone):
    path = _phi(tmp_path, random_backbone)
    state = torch.load(path, weights_only=True)
    for layer in (0, 3, 6):  # finite weights whose products overflow: infinite or NaN tokens
        state["Phi"][f"layers.{layer}.weight"].fill_(1e30)
    torch.save(state, path)
    line = fails(
        capsys,
        [*EVAL, "--dataset-path", circo, "--method", "searle", "--phi-checkpoint", path],
        "φ produced",
        "NaN",
        "reference image",
    )
    assert "'1'" in line or "'2'" in line or "'3'" in line


def test_damaged_feature_cache_is_recomputed(circo, tmp_path, capsys):
    status, out, err = searle(capsys, *EVAL, "--dataset-path", circo, "--json")
    assert status == 0, err
    for path in (tmp_path / "searle_data").rglob("image-*.pt"):
        path.write_bytes(b"garbage")
    status, again, err = searle(capsys, *EVAL, "--dataset-path", circo, "--json")
    assert status == 0 and again == out


# ---- phrase banks and concept lists --------------------------------------------------------------
def _vocab_fails(capsys, tmp_path, circo, extra, *culprits):
    return _evaluate_fails(
        capsys, tmp_path, circo, *culprits, extra=["--method", "searle-oti", "--oti-steps", "1", *extra]
    )


def test_phrase_pickle_that_runs_code_is_refused(circo, tmp_path, capsys):
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "phrases.pkl"
    path.write_bytes(pickle.dumps({"cat": Exploit()}))
    _vocab_fails(capsys, tmp_path, circo, ["--phrases", path], path, "posix.system")
    assert not (tmp_path / "pwned").exists()


def test_truncated_phrase_pickle(circo, tmp_path, capsys):
    path = tmp_path / "phrases.pkl"
    path.write_bytes(pickle.dumps({"cat": ["a photo of a cat"] * 50})[:40])
    _vocab_fails(capsys, tmp_path, circo, ["--phrases", path], path, "not a readable phrase bank pickle")


def test_phrase_pickle_that_is_not_a_dict(circo, tmp_path, capsys):
    path = tmp_path / "phrases.pkl"
    path.write_bytes(pickle.dumps(["a photo of a cat"]))
    _vocab_fails(capsys, tmp_path, circo, ["--phrases", path], path, "expected a dict")


def test_concept_csv_without_header(circo, tmp_path, capsys):
    path = tmp_path / "classes.csv"
    path.write_text("/m/01,Cat\n/m/02,Dog\n")
    _vocab_fails(capsys, tmp_path, circo, ["--concepts", path], path, "LabelName,DisplayName")


def test_concept_csv_not_utf8(circo, tmp_path, capsys):
    path = tmp_path / "classes.csv"
    path.write_bytes(b"LabelName,DisplayName\n/m/01,Cat\n/m/02,Caf\xe9\n")
    _vocab_fails(capsys, tmp_path, circo, ["--concepts", path], path, "line 3", "not UTF-8")


def test_concepts_without_usable_phrases(circo, tmp_path, capsys):
    from searle_core.inversion.phrases import save_phrase_pickle

    concepts = tmp_path / "classes.csv"
    concepts.write_text("LabelName,DisplayName\n/m/01,Cat\n")
    phrases = save_phrase_pickle({"Cat": ["a photo of a dog"]}, tmp_path / "phrases.pkl")
    _vocab_fails(capsys, tmp_path, circo, ["--concepts", concepts, "--phrases", phrases], concepts, "usable phrases")


# ---- profiles ------------------------------------------------------------------------------------
PROFILE_OK = """description: mine
common: &common
  quick: true
notebooks:
  01_textual_inversion:
    <<: *common
    oti_steps: 5
"""


@pytest.mark.parametrize(
    "text, culprits",
    [
        (PROFILE_OK.replace("01_textual_inversion", "01_textual_inversions"), ["'01_textual_inversions'"]),
        (
            PROFILE_OK.replace("oti_steps: 5", "oti_steps: fifty"),
            ["notebooks.01_textual_inversion.oti_steps", "'fifty'", "expected a int"],
        ),
        (PROFILE_OK.replace("quick: true", "quick: 1"), ["notebooks.01_textual_inversion.quick", "expected a bool"]),
        (PROFILE_OK.replace("oti_steps: 5", "oti_step: 5"), ["unknown parameters ['oti_step']"]),
        (PROFILE_OK.replace("    oti_steps: 5", "\toti_steps: 5"), ["line 7", "not valid YAML"]),
        (PROFILE_OK.replace("description: mine", "description: [mine"), ["line ", "not valid YAML"]),
        (PROFILE_OK.replace("description: mine", "description: {a: 1}"), ["key 'description'"]),
        ("- a\n- b\n", ["expected a YAML mapping"]),
    ],
    ids=[
        "unknown-notebook",
        "wrong-type",
        "int-for-bool",
        "unknown-parameter",
        "tab-indent",
        "unclosed-bracket",
        "description-mapping",
        "not-a-mapping",
    ],
)
def test_bad_profile(tmp_path, capsys, text, culprits):
    profile = tmp_path / "mine.yaml"
    profile.write_text(text)
    fails(capsys, ["paper", "--profile", profile, "--out", tmp_path / "runs"], profile, *culprits)
    assert not (tmp_path / "runs").exists()


def test_profiles_of_the_repository_are_valid():
    from searle_core.notebook.papermill_runner import check_profile, list_profiles, load_profile

    for name in list_profiles():
        check_profile(load_profile(name))


# ---- arguments -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, flag",
    [
        (["evaluate", "--batch-size", "0"], "--batch-size"),
        (["evaluate", "--oti-steps", "-1"], "--oti-steps"),
        (["evaluate", "--num-workers", "-2"], "--num-workers"),
        (["oti", "--oti-steps", "0", "--out", "OUT"], "--oti-steps"),
        (["oti", "--max-images", "-495", "--out", "OUT"], "--max-images"),
        (["oti", "--oti-batch-size", "ten", "--out", "OUT"], "--oti-batch-size"),
        (["oti", "--checkpoint-every", "0", "--out", "OUT"], "--checkpoint-every"),
        (["oti", "--lambda-gpt", "-0.5", "--out", "OUT"], "--lambda-gpt"),
        (["train-phi", "--oti-tokens", "T", "--phi-epochs", "0", "--out", "OUT"], "--phi-epochs"),
        (["train-phi", "--oti-tokens", "T", "--lr", "0", "--out", "OUT"], "--lr"),
        (["train-phi", "--oti-tokens", "T", "--temperature", "nan", "--out", "OUT"], "--temperature"),
        (["table", "--bootstrap", "0"], "--bootstrap"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_bad_numbers_are_argument_errors(tmp_path, capsys, argv, flag):
    argv = [str(tmp_path / a) if a in ("OUT", "T") else a for a in argv]
    status, out, err = searle(capsys, *argv)
    assert status == 2 and f"argument {flag}" in err and "Traceback" not in err and not out
    assert not (tmp_path / "OUT").exists() and not (tmp_path / "searle_data").exists()


def test_submission_to_an_unwritable_folder_fails_before_any_work(circo, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    import searle_core.methods.pipeline

    def never(*a, **k):
        raise AssertionError("features computed before the output folder was checked")

    monkeypatch.setattr(searle_core.methods.pipeline, "gallery_features", never)
    fails(
        capsys,
        [
            "submission",
            "--dataset",
            "circo",
            "--dataset-path",
            circo,
            "--split",
            "test",
            "--method",
            "searle-oti",
            "--out",
            blocker / "sub/circo.json",
            *CLI,
        ],
        blocker / "sub",
        "not writable",
    )
    assert blocker.read_text() == "a file, not a folder"
