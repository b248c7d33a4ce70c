"""A weights file built with GELU for a model OpenAI released says so in one line; files recognisably
OpenAI's in open_clip's format (hub copies, their config, their name) are built with QuickGELU.

The files hold the small ``shapes-clip`` (random weights; building ViT-B-32 here would cost a
350 MB file per case); the predicate that picks the models OpenAI released is checked on the real
names, and patched to include ``shapes-clip`` for the loading cases.
"""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

from searle_core.clip import backbone as backbone_module
from searle_core.clip.backbone import load_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


def _small_clip(quick_gelu: bool = False) -> torch.nn.Module:
    torch.manual_seed(3)
    return open_clip.create_model("shapes-clip", pretrained=None, force_quick_gelu=quick_gelu).eval()


def _features(model: torch.nn.Module) -> torch.Tensor:
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.encode_image(pixels)


def _uses_quick_gelu(model: torch.nn.Module) -> bool:
    kinds = {type(m).__name__ for m in model.modules()}
    assert kinds & {"QuickGELU", "GELU"}, kinds  # the tower has one of the two
    return "QuickGELU" in kinds


@pytest.fixture
def released(monkeypatch):
    """``shapes-clip`` treated as a model OpenAI released with QuickGELU (as ViT-B-32 is)."""
    real = backbone_module.released_by_openai_with_quick_gelu
    monkeypatch.setattr(
        backbone_module, "released_by_openai_with_quick_gelu", lambda name: name == "shapes-clip" or real(name)
    )


def _save(path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_small_clip().state_dict(), path)
    return str(path)


def test_the_models_openai_released_are_the_ones_warned_about():
    assert backbone_module.released_by_openai_with_quick_gelu("ViT-B-32")
    assert backbone_module.released_by_openai_with_quick_gelu("ViT-L-14")
    assert not backbone_module.released_by_openai_with_quick_gelu("ViT-B-32-quickgelu")  # already QuickGELU
    assert not backbone_module.released_by_openai_with_quick_gelu("shapes-clip")  # no OpenAI release


def test_a_gelu_build_prints_one_line_naming_both_ways(tmp_path, released, capsys):
    path = _save(tmp_path / "weights" / "open_clip_pytorch_model.bin")
    gelu = load_backbone("shapes-clip", path, device="cpu")
    assert not gelu.quick_gelu and not _uses_quick_gelu(gelu.model)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"openai:{path}" in err[0] and "shapes-clip-quickgelu" in err[0] and "GELU" in err[0]
    # Saying so (either way named in the line) builds QuickGELU and prints nothing.
    said = load_backbone("shapes-clip", f"openai:{path}", device="cpu")
    assert said.quick_gelu and _uses_quick_gelu(said.model)
    assert capsys.readouterr().err == ""


def test_a_model_openai_did_not_release_prints_nothing(tmp_path, capsys):
    load_backbone("shapes-clip", _save(tmp_path / "w.pt"), device="cpu")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "where",
    [
        # A Hugging Face cache of open_clip's hub copy (the repository three levels up).
        "hub/models--timm--vit_base_patch32_clip_224.openai/snapshots/" + "0" * 40 + "/open_clip_pytorch_model.bin",
        "vit_large_patch14_clip_224.openai/open_clip_pytorch_model.bin",  # a clone of the repository
        "ViT-B-32-quickgelu.bin",
        "clip_openai.safetensors.pt",
    ],
)
def test_files_recognisably_openais_get_quick_gelu(tmp_path, released, capsys, where):
    path = _save(tmp_path / where)
    built = load_backbone("shapes-clip", path, device="cpu")
    assert built.quick_gelu and _uses_quick_gelu(built.model)
    torch.testing.assert_close(_features(built.model), _features(_small_clip(quick_gelu=True)), rtol=0, atol=1e-5)
    assert capsys.readouterr().err == ""


def test_open_clip_config_beside_the_file_decides(tmp_path, released, capsys):
    path = _save(tmp_path / "copy" / "open_clip_pytorch_model.bin")
    config = tmp_path / "copy" / "open_clip_config.json"
    config.write_text(json.dumps({"model_cfg": {"embed_dim": 64, "quick_gelu": True}}))
    assert load_backbone("shapes-clip", path, device="cpu").quick_gelu
    config.write_text(json.dumps({"model_cfg": {"embed_dim": 64}}))
    assert not load_backbone("shapes-clip", path, device="cpu").quick_gelu
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    config.write_text("{not json")
    with pytest.raises(ValueError, match="open_clip_config.json"):
        load_backbone("shapes-clip", path, device="cpu")


def test_folders_that_merely_mention_openai_do_not_count(tmp_path):
    assert not backbone_module.named_or_configured_openai(_save(tmp_path / "test_openai_run" / "plain.pt"))
    assert not backbone_module.named_or_configured_openai(_save(tmp_path / "openai-stuff" / "weights.bin"))
    assert backbone_module.named_or_configured_openai(_save(tmp_path / "ViT-L-14-openai.pt"))
