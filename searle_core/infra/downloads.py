"""Downloaded files (φ checkpoints given as URLs), cached under a hash of the whole URL (torch.hub caches
by file name alone, so any URL ending in ``/SEARLE_ViT-B32.pt`` would be served one cached file)."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_write, sha256_of
from searle_core.infra.paths import cache_dir

#: SHA-256 of known release files by URL, checked on download (the authors publish none: empty, not guessed).
KNOWN_SHA256: dict[str, str] = {}

CONNECT_TIMEOUT, READ_TIMEOUT = 30.0, 60.0


def fetch_url_to_file(url: str, tmp: str) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "searle"})
    with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT) as response:
        # urlopen's timeout bounds the connection; every read after it gets the read timeout.
        sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
        if sock is not None:
            sock.settimeout(READ_TIMEOUT)
        with open(tmp, "wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)


def cached_download(url: str, kind: str = "downloads", known: dict[str, str] | None = None) -> Path:
    """The local copy of ``url``, downloaded once into ``cache_dir(kind)`` and checked against ``known``
    (default :data:`KNOWN_SHA256`); a failed download or another checksum is an InputError."""
    name = os.path.basename(urllib.parse.urlparse(url).path) or "download"
    path = cache_dir(kind) / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"
    expected = (KNOWN_SHA256 if known is None else known).get(url)
    if not path.is_file():
        try:
            atomic_write(path, lambda tmp: fetch_url_to_file(url, tmp))
        except Exception as err:  # urllib raises URLError, HTTPError, socket errors, ValueError...
            reason = err if isinstance(err, TimeoutError) else getattr(err, "reason", None)
            if isinstance(reason, TimeoutError):
                raise InputError(
                    f"could not download {url}: the server did not answer within {CONNECT_TIMEOUT:g} s to connect / "
                    f"{READ_TIMEOUT:g} s per read ({reason}); check the URL or download the file and pass its path"
                ) from None
            raise InputError(f"could not download {url}: {err}; nothing was kept in the cache") from None
    if expected is not None and (actual := sha256_of(path)) != expected:
        path.unlink(missing_ok=True)
        raise InputError(
            f"{url}: the downloaded file's SHA-256 is {actual}, expected {expected} for this release "
            "file; the copy was deleted"
        )
    return path
