import pytest
import torch
import torch.nn.functional as F

from searle_core.baselines.pic2word import symmetric_infonce_loss
from searle_core.inversion.phi_files import load_phi, save_phi
from searle_core.method.losses import nt_xent_loss
from searle_core.method.phi import Phi, PhiLossConfig, phi_loss, phi_sampler
from searle_core.method.prefix_cache import PrefixCachedEncoder
from searle_core.method.regulariser import PhraseFeatureCache, TokenCache


def reference_nt_xent(v1, v2, temperature):
    """The plain formula: exp-similarities, explicit numerator and denominator."""
    v1, v2 = F.normalize(v1, dim=1), F.normalize(v2, dim=1)
    numerator = torch.exp(torch.diag(v1 @ v2.T) / temperature)
    numerator = torch.cat((numerator, numerator), 0)
    joint = torch.cat((v1, v2), 0)
    pairs = torch.exp(joint @ joint.T / temperature)
    denominator = torch.sum(pairs - pairs * torch.eye(joint.shape[0]), 0)
    return -torch.mean(torch.log(numerator / denominator))


@pytest.mark.parametrize("temperature", [0.25, 1.0])
def test_nt_xent_matches_plain_formula(temperature):
    torch.manual_seed(0)
    a, b = torch.randn(6, 16), torch.randn(6, 16)
    torch.testing.assert_close(
        nt_xent_loss(a, b, temperature), reference_nt_xent(a, b, temperature), atol=1e-5, rtol=1e-5
    )


def test_symmetric_infonce_matches_plain_formula():
    torch.manual_seed(0)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    logits = 10 * F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    p = torch.softmax(logits, 1).diag()
    q = torch.softmax(logits.T, 1).diag()
    expected = -(p.log().mean() + q.log().mean()) / 2
    torch.testing.assert_close(symmetric_infonce_loss(a, b, 10.0), expected)


def test_phi_layout_and_roundtrip(tmp_path):
    phi = Phi(512, 2048, 512)
    assert list(phi.state_dict()) == [f"layers.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    path = tmp_path / "SEARLE_test.pt"
    save_phi(phi, path)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"Phi"}
    again = load_phi(path)
    x = torch.randn(3, 512)
    torch.testing.assert_close(phi.eval()(x), again(x))


def test_load_phi_checks_width(tmp_path, random_backbone):
    path = tmp_path / "phi.pt"
    save_phi(Phi(512, 2048, 512), path)
    with pytest.raises(ValueError, match="SEARLE_ViT-B32.pt goes with ViT-B-32"):
        load_phi(path, random_backbone)
    with pytest.raises(FileNotFoundError, match="SEARLE_ViT-B32.pt"):
        load_phi(tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a φ checkpoint"):
        load_phi(tmp_path / "bad.pt")


def test_phi_loss_weights_and_gradient(random_backbone):
    bb = random_backbone
    torch.manual_seed(0)
    phi = Phi.for_backbone(bb)
    feats, targets = torch.randn(4, bb.embed_dim), torch.randn(4, bb.token_dim)
    bank = {"circle": ["a circle on a table", "a small circle"]}
    draw = phi_sampler([["circle"]] * 10, bank, top_concepts=150, seed=0).draw([0, 3, 5, 9])
    encode = PrefixCachedEncoder(bb.model, bb.dollar_token_id)
    predicted = phi(feats)
    distil, gpt = phi_loss(predicted, feats, targets, draw, PhraseFeatureCache(bb), encode, TokenCache(bb))
    assert distil.item() > 0 and gpt.item() > 0
    (distil + 0.75 * gpt).backward()
    assert phi.layers[0].weight.grad.abs().sum() > 0
    no_gpt = phi_loss(phi(feats), feats, targets, None, None, encode, TokenCache(bb), PhiLossConfig(lambda_gpt=0))
    assert no_gpt[1].item() == 0
