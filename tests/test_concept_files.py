"""``searle concepts associate`` writes the authors' ``*_top_250_ensembling_image_texts.csv``, and the
project reads such files as their scripts do (stripped, repeats dropped, the first ``top_k``)."""

from __future__ import annotations

import pandas as pd
import pytest

from searle_core.cli import main
from searle_core.inversion.concept_files import authors_concepts_file_name, read_concepts_csv, write_concepts_csv

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
    from searle_core.datasets.backbone_setup import configure_for_dataset, open_backbone
    from searle_core.datasets.features import image_features
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
