"""Downloaded files (φ checkpoints given as URLs), cached under a key of the whole URL.

``torch.hub.load_state_dict_from_url`` caches by file name alone: any URL ending in
``/SEARLE_ViT-B32.pt`` (another host, a host that does not exist) is answered from the cache once a
file of that name is there. Here the cache file name starts with a hash of the whole URL, so only
that URL's download is ever served, and a file whose SHA-256 is known is checked after download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_write
from searle_core.infra.paths import cache_dir

#: SHA-256 of known release files, by URL. The authors' φ checkpoints are
#: ``https://github.com/miccunifi/SEARLE/releases/download/weights/SEARLE_ViT-B32.pt`` and
#: ``.../SEARLE_ViT-L14.pt`` (their ``hubconf.py``). Their checksums are not published (the repository
#: and its release page give none) and could not be computed here without network, so the table is
#: empty rather than guessed: add ``url: sha256`` once a checksum is verified, and every later
#: download of that URL is checked against it.
KNOWN_SHA256: dict[str, str] = {}

#: Seconds to wait for a connection, and for each read once connected: a server that accepts and
#: never answers fails the download instead of hanging the run.
CONNECT_TIMEOUT, READ_TIMEOUT = 30.0, 60.0


def fetch_url_to_file(url: str, tmp: str) -> None:
    """``url`` into the file ``tmp``, with connect and read timeouts (no ``.partial`` files beside it)."""
    request = urllib.request.Request(url, headers={"User-Agent": "searle"})
    with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT) as response:
        # urlopen's timeout bounds the connection; every read after it gets the read timeout.
        sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
        if sock is not None:
            sock.settimeout(READ_TIMEOUT)
        with open(tmp, "wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_download(url: str, kind: str = "downloads", known: dict[str, str] | None = None) -> Path:
    """The local copy of ``url``, downloaded once into ``cache_dir(kind)`` under a key of the whole URL.

    Args:
        url: an ``http(s)`` URL.
        kind: the cache sub-folder.
        known: URL -> SHA-256 to check (default: :data:`KNOWN_SHA256`).

    Raises:
        InputError: the download failed (naming the URL) or its checksum differs from the known one.
    """
    known = KNOWN_SHA256 if known is None else known
    name = os.path.basename(urllib.parse.urlparse(url).path) or "download"
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    path = cache_dir(kind) / f"{key}-{name}"
    expected = known.get(url)
    if not path.is_file():
        try:
            atomic_write(path, lambda tmp: fetch_url_to_file(url, tmp))
        except TimeoutError as err:
            raise InputError(
                f"could not download {url}: the server did not answer within {CONNECT_TIMEOUT:g} s to connect / "
                f"{READ_TIMEOUT:g} s per read ({err}); check the URL or download the file and pass its path"
            ) from None
        except Exception as err:  # urllib raises URLError, HTTPError, socket errors, ValueError...
            reason = getattr(err, "reason", None)
            if isinstance(reason, TimeoutError):
                raise InputError(
                    f"could not download {url}: the server did not answer within {CONNECT_TIMEOUT:g} s ({reason}); "
                    "check the URL or download the file and pass its path"
                ) from None
            raise InputError(f"could not download {url}: {err}; nothing was kept in the cache") from None
    if expected is not None:
        actual = sha256_of(path)
        if actual != expected:
            path.unlink(missing_ok=True)
            raise InputError(
                f"{url}: the downloaded file's SHA-256 is {actual}, expected {expected} for this release "
                "file; the copy was deleted"
            )
    return path
