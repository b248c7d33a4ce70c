"""OpenAI weights on the paper path: the `openai` tag and local files are built with QuickGELU, OpenAI's
TorchScript release and plain state dicts load, and open_clip's "QuickGELU mismatch" warning never fires.

Nothing is downloaded: a Hugging Face cache folder is faked with random weights under the hub name
open_clip 3.3 looks up for ViT-B-32 `openai`, and the hub library is put offline.
"""

from __future__ import annotations

import warnings

import open_clip
import pytest
import torch

from searle_core.clip import backbone as backbone_module
from searle_core.clip.backbone import load_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


def features(model: torch.nn.Module, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Image features of random pixels and text features of two captions."""
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    text = open_clip.get_tokenizer("ViT-B-32")(["a photo of a dog", "a red square on a gray background"])
    with torch.no_grad():
        return model.encode_image(pixels), model.encode_text(text)


def assert_same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> None:
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)


def fake_hub_cache(root, monkeypatch, name: str = "ViT-B-32") -> object:
    """Random weights where ``hf_hub_download`` finds open_clip's file for ``name``/``openai`` offline."""
    import huggingface_hub.constants as hub
    from safetensors.torch import save_file

    repo_id = open_clip.get_pretrained_cfg(name, "openai")["hf_hub"].rstrip("/")
    assert repo_id == "timm/vit_base_patch32_clip_224.openai"  # open_clip 3.3.0's hub name
    commit = "0" * 40
    repo = root / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    # fp16 halves the file; both sides of the comparison read the same file.
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    path = snapshot / "open_clip_model.safetensors"  # the name open_clip tries first
    save_file(state, str(path))
    for var, value in (("HF_HOME", root), ("HF_HUB_CACHE", root / "hub"), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(var, str(value))
    # huggingface_hub read the variables when it was imported: set what it reads at call time.
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(root / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    return path


def test_openai_tag_is_built_with_quick_gelu_without_a_warning(tmp_path, monkeypatch):
    path = fake_hub_cache(tmp_path, monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # open_clip's "QuickGELU mismatch" warning would fail here
        backbone = load_backbone("ViT-B-32", "openai", device="cpu")
    assert backbone.quick_gelu and backbone.weights_id == "openai+quickgelu"
    reference = open_clip.create_model("ViT-B-32", pretrained=str(path), force_quick_gelu=True).eval()
    ours = features(backbone.model)
    assert_same(ours, features(reference))
    # The activation matters: the GELU model on the same weights gives other features.
    with pytest.warns(UserWarning, match="QuickGELU mismatch"):
        gelu = open_clip.create_model("ViT-B-32", pretrained="openai").eval()
    assert (features(gelu)[0] - ours[0]).abs().max() > 1e-3
    # A tag trained with GELU keeps GELU.
    assert not backbone_module.tag_uses_quick_gelu("ViT-B-32", "laion2b_s34b_b79k")


def _small_clip(quick_gelu: bool = False) -> torch.nn.Module:
    torch.manual_seed(1)
    return open_clip.create_model("shapes-clip", pretrained=None, force_quick_gelu=quick_gelu).eval()


def _torchscript_archive(path) -> None:
    """A TorchScript archive laid out as OpenAI's: the CLIP's parameters under their own names plus
    input_resolution, context_length and vocab_size in its state dict."""
    model = _small_clip()

    class Released(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.visual(image)

    released = Released()
    for name, child in model.named_children():
        released.add_module(name, child)
    for name, param in model.named_parameters(recurse=False):
        released.register_parameter(name, param)
    for name, value in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
        released.register_buffer(name, torch.tensor(value))
    torch.jit.save(torch.jit.trace(released, torch.zeros(1, 3, 32, 32), check_trace=False), str(path))


def test_openai_torchscript_release_and_state_dicts_load_as_quick_gelu(tmp_path, monkeypatch):
    archive = tmp_path / "shapes-openai.pt"
    _torchscript_archive(archive)
    assert backbone_module.is_torchscript_archive(archive)
    with pytest.raises(RuntimeError, match="TorchScript"):
        torch.load(archive, weights_only=True)  # what open_clip does with a file: the defect
    reference = _small_clip(quick_gelu=True)  # same seed: same weights
    expected = features(reference)

    # Not OpenAI's published hash: refused, with the one line that converts it.
    with pytest.raises(ValueError, match="not OpenAI's release of shapes-clip") as err:
        load_backbone("shapes-clip", str(archive), device="cpu")
    assert "torch.jit.load" in str(err.value) and "state_dict()" in str(err.value)

    # OpenAI's release (its SHA-256 is the published one): read with torch.jit.load, as clip.load does.
    monkeypatch.setattr(backbone_module, "openai_sha256", lambda name: backbone_module.sha256_of(archive))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backbone = load_backbone("shapes-clip", str(archive), device="cpu")
    assert backbone.quick_gelu and backbone.weights_id.endswith("+quickgelu")
    assert_same(features(backbone.model), expected)

    # Converted once into a plain state dict (OpenAI's extra keys kept): still recognised as OpenAI's.
    converted = tmp_path / "converted.pt"
    torch.save(torch.jit.load(str(archive)).state_dict(), converted)
    assert_same(features(load_backbone("shapes-clip", str(converted), device="cpu").model), expected)

    # A plain open_clip state dict: the model config's activation, unless the user says "openai:".
    plain = tmp_path / "plain.pt"
    torch.save(_small_clip().state_dict(), plain)
    gelu = load_backbone("shapes-clip", str(plain), device="cpu")
    assert not gelu.quick_gelu
    assert_same(features(gelu.model), features(_small_clip()))
    said = load_backbone("shapes-clip", f"openai:{plain}", device="cpu")
    assert said.quick_gelu and said.pretrained == str(plain) and said.weights_id != gelu.weights_id
    assert_same(features(said.model), expected)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_backbone("shapes-clip", f"openai:{tmp_path / 'missing.pt'}", device="cpu")
