"""The public annotation files the real-data tests read (CIRR, FashionIQ and CIRCO's annotations and the Open
Images V7 class list, no images), fetched at pinned versions; each is checked by SHA-256 before it is moved into
place, one already there with another hash is left alone and reported.

    python -m tools.annotations [--dest data/annotations] [--from DIR] [--timeout S]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import BinaryIO

from searle_core.infra.files import atomic_write, sha256_of

_GITHUB = "https://raw.githubusercontent.com"
#: Where each dataset's files come from: GitHub at a commit whose blob ids equal the pinned files' (CIRR: its
#: ``cirr_dataset`` branch), and the Open Images V7 release (its SHA-256 below is the pin).
_ROOTS = {
    "cirr": f"{_GITHUB}/Cuberick-Orion/CIRR/2276fba2d2c53862c8ae79ea18e1f1ae03719f56",
    "fashioniq": f"{_GITHUB}/XiaoxiaoGuo/fashion-iq/f71b16c3b09ef03b02c0fed160fa072fb3b8aa16",
    "circo": f"{_GITHUB}/miccunifi/CIRCO/267b5c9087d856ce1b41d2daf8f385ae5b629a3b",
    "concepts": "https://storage.googleapis.com/openimages/v7",
}

#: SHA-256 of each file, by its path under the destination folder (``annotations.sha256`` beside this file, a
#: ``sha256sum`` listing: ``cd data/annotations && sha256sum -c`` checks a copy by hand too).
_SUMS = Path(__file__).with_name("annotations.sha256").read_text().splitlines()
SHA256: dict[str, str] = {name: sha for sha, name in map(str.split, _SUMS)}

#: The pinned URL of each file: its destination path under its dataset's root (CIRCO's example submission
#: is renamed, as the tests read it).
URLS: dict[str, str] = {name: f"{_ROOTS[name.split('/')[0]]}/{name.split('/', 1)[1]}" for name in SHA256}
URLS["circo/submission_val_example.json"] = f"{_ROOTS['circo']}/submission_examples/submission_val.json"

TIMEOUT = 60.0  # seconds to connect, and to wait for each read


class AnnotationError(RuntimeError):
    """One file could not be put in place; the message is one line naming it."""


def _write_checked(stream: BinaryIO, target: Path, expected: str, origin: str, size: int | None = None) -> None:
    """Stream into a temporary file beside ``target``, check its size (if announced) and SHA-256, then move it."""

    def write(tmp: str) -> None:
        digest, received = hashlib.sha256(), 0
        with open(tmp, "wb") as out:
            for chunk in iter(lambda: stream.read(1 << 16), b""):
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
        if size is not None and received != size:
            raise AnnotationError(
                f"{origin}: received {received} of {size} bytes, the connection closed early (not written)"
            )
        if (actual := digest.hexdigest()) != expected:
            raise AnnotationError(f"{origin}: SHA-256 {actual}, expected {expected} (not written)")

    atomic_write(target, write)


def fetch_file(
    name: str, dest: str | os.PathLike, source: str | os.PathLike | None = None, timeout: float = TIMEOUT
) -> str:
    """Put one file (a key of :data:`SHA256`) at ``dest/name``, downloaded from :data:`URLS` or copied from
    ``source/name``: ``"fetched"``, ``"copied"`` or ``"present"``, else an :class:`AnnotationError`."""
    expected, target = SHA256[name], Path(dest) / name
    if target.exists():
        if (actual := sha256_of(target)) == expected:
            return "present"
        raise AnnotationError(
            f"{target} exists with SHA-256 {actual}, not the pinned {expected}: "
            f"left as it is; move it away and run again"
        )
    if source is not None:
        origin = Path(source) / name
        if not origin.is_file():
            raise AnnotationError(f"{origin}: not found (--from folder laid out as {name})")
        with open(origin, "rb") as f:
            _write_checked(f, target, expected, str(origin))
        return "copied"
    url = URLS[name]
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            _write_checked(response, target, expected, url, int(length) if length and length.isdigit() else None)
    except urllib.error.HTTPError as e:
        raise AnnotationError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (TimeoutError, urllib.error.URLError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError):
            raise AnnotationError(f"{url}: no answer within {timeout:g} s ({reason or 'timed out'})") from None
        raise AnnotationError(f"{url}: {reason}") from None
    except (OSError, http.client.HTTPException) as e:  # the connection dropped mid-read, say
        raise AnnotationError(f"{url}: {type(e).__name__}: {e}") from None
    return "fetched"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.annotations",
        description="Fetch the CIRR, FashionIQ and CIRCO annotation files and the "
        "Open Images V7 class list at pinned versions, checked by SHA-256.",
    )
    parser.add_argument("--dest", default="data/annotations", help="folder to write them under (default: %(default)s)")
    parser.add_argument(
        "--from", dest="source", metavar="DIR", help="copy from this local folder (same layout) instead of downloading"
    )
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds to connect and for each read")
    args = parser.parse_args(argv)
    done = Counter()
    for name in SHA256:  # every file is tried; the others are still put in place when one fails
        try:
            done[outcome := fetch_file(name, args.dest, args.source, args.timeout)] += 1
            print(f"{outcome:8} {name}")
        except AnnotationError as e:
            done["FAILED"] += 1
            print(f"FAILED   {name}: {e}")
    failed, counts = done["FAILED"], ", ".join(f"{done[k]} {k}" for k in ("fetched", "copied", "present"))
    print(f"{len(SHA256)} annotation files in {args.dest}: {counts}, {failed} failed" + (" (see above)" * bool(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
