"""``searle concepts associate`` writes the authors' ``*_top_250_ensembling_image_texts.csv``, and the
project reads such files as their scripts do (stripped, repeats dropped, the first ``top_k``)."""

from __future__ import annotations

import pandas as pd
import pytest

from searle_core.cli import main
from searle_core.inversion.concepts import authors_concepts_file_name, read_concepts_csv, write_concepts_csv

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = ["circle", "square", "star", "red", "blue", "green", "small", "large", "triangle", "heart", "moon", "cloud"]


def test_file_names_are_theirs():
    assert authors_concepts_file_name("ViT-B-32") == "ViT-B32_top_250_ensembling_image_texts.csv"
    assert authors_concepts_file_name("ViT-L-14-quickgelu") == "ViT-L14_top_250_ensembling_image_texts.csv"


def test_reads_a_file_written_as_theirs(tmp_path):
    """Their script builds a DataFrame with columns Image Name, 1..K and writes it with to_csv(index=False)."""
    rows = [["000000123", " dog", "cat ", "dog", "Ducks, geese and swans"], ["4", "tree", "red car", "bus", "sky"]]
    path = tmp_path / "ViT-B32_top_4_ensembling_image_texts.csv"
    pd.DataFrame(rows, columns=["Image Name", "1", "2", "3", "4"]).to_csv(path, index=False)
    assert read_concepts_csv(path) == {
        "000000123": ["dog", "cat", "Ducks, geese and swans"],  # stripped, the repeat dropped, commas kept
        "4": ["tree", "red car", "bus", "sky"],
    }
    assert read_concepts_csv(path, top_k=2)["4"] == ["tree", "red car"]
    # What the project writes reads back the same, and their pandas reads it as theirs.
    ours = write_concepts_csv(tmp_path / "ours.csv", ["000000123", "4"], [r[1:] for r in rows])
    assert pd.read_csv(ours, dtype=str).values.tolist() == rows
    (tmp_path / "bad.csv").write_text("name,1\nx,y\n")
    with pytest.raises(ValueError, match="bad.csv: expected a header starting 'Image Name"):
        read_concepts_csv(tmp_path / "bad.csv")


def test_concepts_associate_command(tmp_path, monkeypatch):
    from searle_core.clip.backbone import open_backbone
    from searle_core.datasets.features import configure_for_dataset, image_features
    from searle_core.inversion.concepts import Vocabulary
    from searle_core.world import ShapesWorld, WorldConfig

    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "data"))
    csv_path = tmp_path / "oidv7-class-descriptions.csv"
    csv_path.write_text("LabelName,DisplayName\n" + "".join(f"/m/{i},{w}\n" for i, w in enumerate(WORDS)))
    args = ["concepts", "associate", "--dataset", "shapes", "--split", "val", "--quick", "--pretrained", "none"]
    args += ["--device", "cpu", "--concepts", str(csv_path), "--top-k", "5", "--out", str(tmp_path / "out")]
    assert main(args + ["--no-progress", "--seed", "3"]) == 0
    got = read_concepts_csv(tmp_path / "out" / "shapes-clip_top_5_ensembling_image_texts.csv")
    names = ShapesWorld(WorldConfig.quick()).benchmark("val").reference_names()
    assert list(got) == list(names) and all(len(v) == 5 and set(v) <= set(WORDS) for v in got.values())
    backbone = configure_for_dataset(open_backbone("shapes-clip", "none", "cpu", 3), "shapes")
    world = ShapesWorld(WorldConfig.quick())
    features = image_features(backbone, world.images, list(names), progress=False)
    assert list(got.values()) == Vocabulary(WORDS, {}).associate(backbone, features, 5)


@pytest.mark.audit_open
def test_concepts_associate_never_replaces_an_existing_file(tmp_path, monkeypatch, capsys):
    """The authors' concept file of the same name in --out is kept (a run used to replace it silently); refused
    before any feature is computed; --force replaces it."""
    import searle_core.cli.concepts as cli

    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "data"))
    csv_path = tmp_path / "oidv7-class-descriptions.csv"
    csv_path.write_text("LabelName,DisplayName\n" + "".join(f"/m/{i},{w}\n" for i, w in enumerate(WORDS)))
    theirs = tmp_path / "out" / "shapes-clip_top_5_ensembling_image_texts.csv"
    theirs.parent.mkdir()
    theirs.write_text("Image Name,1\ntheirs,dog\n")
    args = ["concepts", "associate", "--dataset", "shapes", "--split", "val", "--quick", "--pretrained", "none"]
    args += ["--device", "cpu", "--concepts", str(csv_path), "--top-k", "5", "--out", str(theirs.parent)]
    computed = cli.image_features
    monkeypatch.setattr(cli, "image_features", lambda *a, **k: pytest.fail("features before the check"))
    assert main(args + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--out {theirs} exists; pass --force" in err and "Traceback" not in err
    assert theirs.read_text() == "Image Name,1\ntheirs,dog\n"
    monkeypatch.setattr(cli, "image_features", computed)
    assert main(args + ["--no-progress", "--force"]) == 0
    assert "theirs" not in read_concepts_csv(theirs)


def test_searle_oti_reads_each_images_concepts_from_a_concepts_file(tmp_path, monkeypatch, capsys):
    """`searle oti --concepts` takes the authors' concepts file, as their oti_inversion.py reads its
    ``*_top_100_ensembling_image_texts.csv``: each image's concepts come from its row, not from CLIP."""
    from searle_core.inversion.phrases import save_phrase_pickle
    from searle_core.jobs.oti_run import load_oti_run
    from searle_core.world import ShapesWorld, WorldConfig

    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "data"))
    names = ShapesWorld(WorldConfig.quick()).benchmark("val").reference_names()[:4]
    rows = [[n, " circle", "star ", "circle", "moon", "heart"] for n in names]
    rows[1][1:3] = ["cloud", "square"]
    path = tmp_path / "ViT-B32_top_100_ensembling_image_texts.csv"
    pd.DataFrame(rows, columns=["Image Name", "1", "2", "3", "4", "5"]).to_csv(path, index=False)
    bank = {w: [f"a photo of {w} that shines", f"a photo of a {w} here"] for w in ("circle", "star", "square", "moon")}
    bank["heart"] = ["a photo of love"]  # does not contain its concept: dropped, as the authors do
    save_phrase_pickle(bank, tmp_path / "phrases.pkl")
    args = ["oti", "--dataset", "shapes", "--split", "val", "--quick", "--pretrained", "none", "--device", "cpu"]
    args += [
        "--oti-steps",
        "2",
        "--oti-batch-size",
        "2",
        "--max-images",
        "4",
        "--no-progress",
        "--phrases",
        tmp_path / "phrases.pkl",
    ]
    assert main([str(a) for a in [*args, "--concepts", path, "--out", tmp_path / "run"]]) == 0
    assert "4 images' concepts from" in capsys.readouterr().err
    run = load_oti_run(tmp_path / "run")
    inputs, tokens = run.inputs, run.tokens
    assert inputs.names == names and tokens.shape[0] == 4
    assert inputs.concepts == [read_concepts_csv(path)[n] for n in names]  # stripped, repeats dropped
    assert inputs.concepts[1] == ["cloud", "square", "circle", "moon", "heart"]

    # An image without a row is said at once, naming the file and the image.
    pd.DataFrame(rows[1:], columns=["Image Name", "1", "2", "3", "4", "5"]).to_csv(tmp_path / "short.csv", index=False)
    assert main([str(a) for a in [*args, "--concepts", tmp_path / "short.csv", "--out", tmp_path / "run2"]]) == 2
    err = capsys.readouterr().err
    assert "short.csv: no concepts for 1 of the 4 images" in err and repr(names[0]) in err
    # Commands that associate concepts from features refuse such a file, saying which reads it.
    code = main(
        [str(a) for a in ["evaluate", "--dataset", "shapes", "--quick", "--pretrained", "none", "--device", "cpu"]]
        + ["--method", "searle-oti", "--oti-steps", "1", "--concepts", str(path), "--no-progress"]
    )
    assert code == 2 and "only `searle oti`" in capsys.readouterr().err


@pytest.mark.audit_open
def test_concepts_csv_with_a_quote_left_open_is_refused(tmp_path):
    """A quote left open swallowed the rest of the file: it loaded as fewer concepts without a word."""
    from searle_core.infra.errors import InputError
    from searle_core.inversion.phrases import load_concepts_csv

    path = tmp_path / "classes.csv"
    path.write_text('LabelName,DisplayName\n/m/1,"Cat\n/m/2,Dog\n/m/3,Bird\n')
    with pytest.raises(InputError, match=rf"{path}, line \d: not valid CSV .*quote left open"):
        load_concepts_csv(path)
    path.write_text('LabelName,DisplayName\n/m/1,"Cat, big"\n/m/2,Dog\n')  # the control: quotes closed
    assert load_concepts_csv(path) == ["Cat, big", "Dog"]
