"""``--phi-checkpoint searle`` / ``searle-xl``: the authors' released φ for the matching backbone,
downloaded once into the cache, its SHA-256 recorded at the first download and checked after.

Offline: the release is served by a local HTTP server on 127.0.0.1 (the URL table patched)."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from types import SimpleNamespace

import pytest
import torch

from searle_core.inversion import phi_files
from searle_core.inversion.phi_files import load_phi
from searle_core.method.phi import Phi


@pytest.fixture
def release(tmp_path, monkeypatch):
    """A local 'release' with SEARLE_ViT-B32.pt and SEARLE_ViT-L14.pt (small φ, the authors' layout)."""
    served = tmp_path / "release"
    served.mkdir()
    for name, width in (("SEARLE_ViT-B32.pt", 16), ("SEARLE_ViT-L14.pt", 24)):
        torch.manual_seed(width)
        torch.save({"epoch": 20, "Phi": Phi(width, 4 * width, width).state_dict()}, served / name)
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(
        phi_files,
        "RELEASED",
        {"searle": ("ViT-B-32", f"{base}/SEARLE_ViT-B32.pt"), "searle-xl": ("ViT-L-14", f"{base}/SEARLE_ViT-L14.pt")},
    )
    monkeypatch.setenv("SEARLE_DATA", str(tmp_path / "data"))
    yield SimpleNamespace(folder=served, hits=hits, base=base)
    server.shutdown()


def _backbone(name: str, width: int) -> SimpleNamespace:
    return SimpleNamespace(name=name, embed_dim=width, token_dim=width)


def test_released_phi_downloaded_once_recorded_and_checked(release):
    phi = load_phi("searle", _backbone("ViT-B-32", 16))
    expected = torch.load(release.folder / "SEARLE_ViT-B32.pt", weights_only=True)["Phi"]
    assert all(torch.equal(v, phi.state_dict()[k]) for k, v in expected.items())
    assert phi.epoch == 20 and phi.source == f"{release.base}/SEARLE_ViT-B32.pt"
    assert load_phi("searle", _backbone("ViT-B-32-quickgelu", 16)).epoch == 20
    assert release.hits == ["/SEARLE_ViT-B32.pt"]  # downloaded once, then the cache
    record = phi_files.cache_dir("phi") / "released_sha256.json"
    sha = json.loads(record.read_text())[f"{release.base}/SEARLE_ViT-B32.pt"]
    assert sha == phi_files.sha256_of(release.folder / "SEARLE_ViT-B32.pt")
    assert load_phi("searle-xl", _backbone("ViT-L-14", 24)).input_dim == 24
    # The cached copy changes: refused (and deleted), not silently another φ.
    cached = phi_files.cached_download(f"{release.base}/SEARLE_ViT-B32.pt", "phi")
    cached.write_bytes(cached.read_bytes() + b"x")
    with pytest.raises(ValueError, match="SHA-256"):
        load_phi("searle", _backbone("ViT-B-32", 16))


def test_a_backbone_that_does_not_match_names_both(release):
    with pytest.raises(ValueError, match="searle is the authors' φ for ViT-B-32.*backbone is ViT-L-14.*searle-xl"):
        load_phi("searle", _backbone("ViT-L-14", 24))
    with pytest.raises(ValueError, match="searle-xl is the authors' φ for ViT-L-14.*backbone is shapes-clip"):
        load_phi("searle-xl", _backbone("shapes-clip", 128))
    assert release.hits == []  # refused before any download


def test_the_real_table_is_the_authors_hubconf():
    assert phi_files.RELEASED == {
        "searle": ("ViT-B-32", "https://github.com/miccunifi/SEARLE/releases/download/weights/SEARLE_ViT-B32.pt"),
        "searle-xl": ("ViT-L-14", "https://github.com/miccunifi/SEARLE/releases/download/weights/SEARLE_ViT-L14.pt"),
    }


@pytest.mark.parametrize("command", ["evaluate", "table"])
def test_phi_checkpoint_help_names_every_form(command, capsys):
    """A file (or URL), a φ run folder and epoch, and the authors' release by name."""
    from searle_core.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    at = text.index("--phi-checkpoint PHI_CHECKPOINT φ")
    help_text = text[at : at + 600]
    for form in ("a file", "URL", "RUN:EPOCH", "RUN:last", "searle / searle-xl", "downloaded once"):
        assert form in help_text, form
