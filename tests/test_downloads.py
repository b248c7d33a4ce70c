"""Downloads: a server that never answers times out naming the URL; a φ URL is cached by the whole URL,
never answered from torch's hub cache by file name, and a known checksum is checked."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import torch
from cli_helpers import CLI, fails

from searle_core.infra import downloads
from searle_core.infra.errors import InputError

pytestmark = pytest.mark.audit_open


EVALUATE = ["evaluate", "--quick", *CLI, "--method", "searle"]


@pytest.fixture
def silent_server():
    """A server on 127.0.0.1 that accepts connections and never answers; it stops itself after 20 s."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    held, stop = [], threading.Event()

    def serve():
        end = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < end:
            try:
                held.append(server.accept()[0])  # accepted, never read from nor written to
            except OSError:
                continue
        for conn in held:
            conn.close()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/weights/SEARLE_ViT-B32.pt"
    stop.set()
    thread.join(timeout=5)


@pytest.mark.usefixtures("tmp_searle_data")
def test_download_from_a_silent_server_times_out_naming_the_url(silent_server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(downloads, "CONNECT_TIMEOUT", 1.0)
    monkeypatch.setattr(downloads, "READ_TIMEOUT", 1.0)
    start = time.perf_counter()
    fails(capsys, [*EVALUATE, "--phi-checkpoint", silent_server], silent_server, "did not answer")
    assert time.perf_counter() - start < 15  # the server hangs up after 20 s: no timeout would wait for it
    cache = tmp_path / "searle_data/cache/phi"
    assert not list(cache.rglob("*"))  # no .tmp, no .partial left


def _phi_file(path, backbone):
    from searle_core.inversion.phi_files import save_phi
    from searle_core.method.phi import Phi

    torch.manual_seed(0)
    save_phi(Phi.for_backbone(backbone), path)
    return path


@pytest.mark.usefixtures("one_thread", "tmp_searle_data")
def test_phi_url_cache_is_keyed_by_the_whole_url(tmp_path, monkeypatch, random_backbone):
    from searle_core.infra import downloads
    from searle_core.inversion.phi_files import load_phi

    good = _phi_file(tmp_path / "good.pt", random_backbone)
    # A file of the same name in torch's hub cache must never answer another URL.
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints/SEARLE_ViT-B32.pt").write_bytes(good.read_bytes())
    fetched = []

    def download(url, dst, hash_prefix=None, progress=True):
        fetched.append(url)
        if "does-not-exist" in url:
            raise OSError("Name or service not known")
        dst_bytes = good.read_bytes()
        with open(dst, "wb") as f:
            f.write(dst_bytes)

    monkeypatch.setattr(downloads, "fetch_url_to_file", download)
    bad_url = "https://does-not-exist.invalid/SEARLE_ViT-B32.pt"
    with pytest.raises(InputError, match=f"could not download {bad_url}"):
        load_phi(bad_url, random_backbone)
    url = "https://example.org/weights/SEARLE_ViT-B32.pt"
    load_phi(url, random_backbone)
    load_phi(url, random_backbone)  # second time from the cache
    assert fetched == [bad_url, url]
    cached = list((tmp_path / "searle_data/cache/phi").glob("*SEARLE_ViT-B32.pt"))
    assert len(cached) == 1 and cached[0].name != "SEARLE_ViT-B32.pt"

    # A known checksum that does not match: refused, and the bad copy is not kept.
    other = "https://example.org/other/SEARLE_ViT-B32.pt"
    monkeypatch.setitem(downloads.KNOWN_SHA256, other, "0" * 64)
    with pytest.raises(InputError, match="SHA-256"):
        load_phi(other, random_backbone)
    assert len(list((tmp_path / "searle_data/cache/phi").glob("*SEARLE_ViT-B32.pt"))) == 1
    monkeypatch.setitem(downloads.KNOWN_SHA256, other, downloads.sha256_of(good))
    assert load_phi(other, random_backbone) is not None
