"""What the authors publish, read as they publish it: GPTNeo27B.zip (or the pickle it holds) and the
OTI experiment folders of their oti_inversion.py, as input to `searle train-phi`.

The files are small ones written here in the authors' exact formats: `concept_to_phrases.pkl`
(pickle of {concept: [phrases]}) under `GPTNeo27B/` in a zip, and `ema_oti_pseudo_tokens.pt`
(torch.save of an (N, d) tensor) + `image_names.pkl` (pickle of a list of file base names).
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from searle_core.cli import main
from searle_core.inversion.phrases import UnsafePickleError, load_phrase_pickle, template_phrases
from searle_core.jobs import load_oti_run
from searle_core.jobs.authors_oti import is_authors_oti, read_authors_oti

pytestmark = pytest.mark.usefixtures("one_thread")

CONCEPTS = ["Dog", "Cat", "Red car", "Tree", "Ducks, geese and swans"]


def write_release_zip(path, bank, member: str = "GPTNeo27B/concept_to_phrases.pkl") -> None:
    """The authors' GPTNeo27B.zip: their experiment folder (pickle, hyper-parameters, source)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("GPTNeo27B/", "")
        z.writestr(member, pickle.dumps(bank))
        z.writestr("GPTNeo27B/hyperparameters.json", json.dumps({"gpt_model": "EleutherAI/gpt-neo-2.7B"}))
        z.writestr("GPTNeo27B/source_code.py", "print('not run')\n")


def test_gpt_phrases_read_from_the_release_zip_its_folder_or_the_pickle(tmp_path):
    bank = template_phrases(CONCEPTS, n_per_concept=3)
    write_release_zip(tmp_path / "GPTNeo27B.zip", bank)
    assert load_phrase_pickle(tmp_path / "GPTNeo27B.zip") == bank
    # Unzipped as their README says: data/GPT_phrases/GPTNeo27B/concept_to_phrases.pkl.
    with zipfile.ZipFile(tmp_path / "GPTNeo27B.zip") as z:
        z.extractall(tmp_path / "GPT_phrases")
    assert load_phrase_pickle(tmp_path / "GPT_phrases") == bank
    assert load_phrase_pickle(tmp_path / "GPT_phrases/GPTNeo27B") == bank
    assert load_phrase_pickle(tmp_path / "GPT_phrases/GPTNeo27B/concept_to_phrases.pkl") == bank

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    write_release_zip(tmp_path / "evil.zip", {"Dog": [Exploit()]})
    with pytest.raises(UnsafePickleError, match="evil.zip:GPTNeo27B/concept_to_phrases.pkl"):
        load_phrase_pickle(tmp_path / "evil.zip")
    assert not (tmp_path / "pwned").exists()
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as z:
        z.writestr("readme.txt", "no phrases")
    with pytest.raises(ValueError, match="expected one concept_to_phrases.pkl"):
        load_phrase_pickle(tmp_path / "empty.zip")


def write_images(folder, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (10, 16, 3), dtype=np.uint8)).save(folder / name, format="JPEG")


@pytest.fixture
def authors_oti(tmp_path):
    """ImageNet-style images, and the authors' OTI experiment folder for them (names in their order)."""
    names = [f"ILSVRC2012_test_{i:08d}.JPEG" for i in range(1, 13)]
    write_images(tmp_path / "ImageNet1K/test", names)
    order = names[::-1]  # their order is the order their loader met the files, not sorted
    folder = tmp_path / "oti_pseudo_tokens/imagenet/test/exp"
    folder.mkdir(parents=True)
    tokens = torch.randn(len(order), 128, generator=torch.Generator().manual_seed(0)) * 0.02
    torch.save(tokens, folder / "ema_oti_pseudo_tokens.pt")
    torch.save(tokens + 1, folder / "oti_pseudo_tokens.pt")  # not the EMA ones: not what φ learns from
    with open(folder / "image_names.pkl", "wb") as f:
        pickle.dump(order, f)
    (folder / "hyperparameters.json").write_text(
        json.dumps({"clip_model_name": "ViT-B/32", "split": "test", "dataset_path": "/data/ImageNet1K"})
    )
    return folder, order, tokens, tmp_path / "ImageNet1K"


def test_train_phi_on_the_authors_oti_folder(authors_oti, tmp_path):
    folder, order, tokens, images = authors_oti
    assert is_authors_oti(folder)
    read = read_authors_oti(folder)
    assert read.names == order and torch.equal(read.tokens, tokens) and read.backbone == "ViT-B-32"

    csv = tmp_path / "classes.csv"
    csv.write_text("LabelName,DisplayName\n" + "".join(f'/m/{i},"{c}"\n' for i, c in enumerate(CONCEPTS)))
    write_release_zip(tmp_path / "GPTNeo27B.zip", template_phrases(CONCEPTS, n_per_concept=3))
    out = tmp_path / "phi"
    args = [
        "train-phi",
        "--oti-tokens",
        str(folder),
        "--images",
        str(images),
        "--backbone",
        "shapes-clip",
        "--pretrained",
        "none",
        "--device",
        "cpu",
        "--phi-epochs",
        "2",
        "--batch-size",
        "4",
        "--top-concepts",
        "3",
        "--val-dataset",
        "none",
        "--no-progress",
        "--concepts",
        str(csv),
        "--phrases",
        str(tmp_path / "GPTNeo27B.zip"),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    run = load_oti_run(out / "oti-import")
    inputs, imported, manifest = run.inputs, run.tokens, run.manifest
    # Their names (base names) matched to the folder's files (paths under --images), in their order.
    assert inputs.names == [f"test/{n}" for n in order] and torch.equal(imported, tokens)
    assert inputs.features.shape == (12, 128) and all(len(c) == 3 for c in inputs.concepts)
    assert manifest["info"]["authors_hyperparameters"]["clip_model_name"] == "ViT-B/32"
    assert manifest["hyperparameters"]["preprocess"] == "targetpad"  # their default --preprocess-type
    phi = torch.load(out / "phi.pt", weights_only=True)
    assert "Phi" in phi
    # Resumed: the import is reused as it is, not recomputed.
    stamp = (out / "oti-import/inputs.pt").stat().st_mtime_ns
    assert main(args + ["--resume"]) == 0
    assert (out / "oti-import/inputs.pt").stat().st_mtime_ns == stamp


def test_authors_oti_errors_name_the_file(authors_oti, tmp_path, capsys):
    folder, order, tokens, images = authors_oti
    base = [
        "train-phi",
        "--oti-tokens",
        str(folder),
        "--backbone",
        "shapes-clip",
        "--pretrained",
        "none",
        "--device",
        "cpu",
        "--phi-epochs",
        "1",
        "--val-dataset",
        "none",
        "--no-progress",
        "--lambda-gpt",
        "0",
        "--out",
        str(tmp_path / "phi"),
    ]
    assert main(base) == 2 and "pass --images" in capsys.readouterr().err
    os.remove(images / "test" / order[0])
    assert main(base + ["--images", str(images)]) == 2
    assert f"1 of its 12 images are not in the image folder (first: {order[0]})" in capsys.readouterr().err

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    with open(folder / "image_names.pkl", "wb") as f:
        pickle.dump([Exploit()], f)
    with pytest.raises(UnsafePickleError, match="image_names.pkl"):
        read_authors_oti(folder)
    assert not (tmp_path / "pwned").exists()
