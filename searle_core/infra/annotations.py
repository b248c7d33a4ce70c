"""The public annotation files the real-data tests read, fetched at pinned versions and checked by SHA-256.

    python -m searle_core.infra.annotations [--dest data/annotations] [--from DIR] [--timeout S]

CIRR, FashionIQ and CIRCO's annotations and the Open Images V7 class list (no images); each file is checked
before it is moved into place, one already there with another hash is left alone and reported.
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

#: SHA-256 of each file, by its path under the destination folder.
SHA256: dict[str, str] = {
    "cirr/captions/cap.rc2.test1.json": "26a2b2e7a5c96c903491aefc7d5f237f03d3cca97712e1b6bb3b231db5ff8001",
    "cirr/captions/cap.rc2.val.json": "a85c3a1aa464f1af7229918e8018d08b8b20ce5dab479ffdf39d61113140f919",
    "cirr/image_splits/split.rc2.test1.json": "bf2bb9ed0659c4aae35de72350652b9ab75d36a060211f826bec15c58ec12566",
    "cirr/image_splits/split.rc2.val.json": "de36f7a7219c8bb06347a67748cfc68405be7dad62853a1e31846c98e491235b",
    "fashioniq/captions/cap.dress.test.json": "190240b3b4d115cd4f80de65ab78ca18a3f8581c041cbeea6f5a1f57ee4f5a48",
    "fashioniq/captions/cap.dress.val.json": "5e5117d45695df9c3ca91fac3e0bc49e6422ae9c8b3793f0ac9b3ab83adb7de9",
    "fashioniq/captions/cap.shirt.test.json": "27c7551b005d4befa53135a7ddee5e31c97821eafd3ceb3fec514e7ac0ad83a7",
    "fashioniq/captions/cap.shirt.val.json": "7b7ca3797b85dddfd83e74cdb4454cb63e3e7c09acef2590155efbacea6d7feb",
    "fashioniq/captions/cap.toptee.test.json": "db822aa52340ce1f09c3000064f79b60b6c476b50b98bf34200dd2996c06e146",
    "fashioniq/captions/cap.toptee.val.json": "b4e09f428e6c255cc4b4ec46e77908305ab83075d82840c960be81af15cdc5eb",
    "fashioniq/image_splits/split.dress.test.json": "1d1d3af24b9ec4ed3f7805c53a870148df9b51e232b32912505d8ae54718353d",
    "fashioniq/image_splits/split.dress.val.json": "21ff91d53c23859da91bfd49f3acc139b7f3a3dc944fc4e4a80194468cf14bab",
    "fashioniq/image_splits/split.shirt.test.json": "8d243830e80e77c23c8dc9a85db87813230d38da146f0706082db812f591968b",
    "fashioniq/image_splits/split.shirt.val.json": "b82effbf7352a6f828b38c45eb32e53d726bd4d6fd81d6290c81eeb2c68e3234",
    "fashioniq/image_splits/split.toptee.test.json": "25a30d4f4013a04026585399b10980db7cba39dfaad0d97a0671a62e2125ddbf",
    "fashioniq/image_splits/split.toptee.val.json": "ee42b2505275dd7a19b11ddb88c9264aab2d77f4e59b075fb1c7c3095d02f412",
    "circo/annotations/test.json": "2f7c37e89220c990b6b0525d6f3ed63d3fc02e03ce336aa42a3b822841b14886",
    "circo/annotations/val.json": "6b31a1dbc3c85627501d9a250f87708f24a27d74d6a65360b6ddd2537a154d04",
    "circo/submission_val_example.json": "e16ea45ac14358816ae5d964842777bb9509cf42426a85ff278cf7ed72f74d63",
    "concepts/oidv7-class-descriptions.csv": "485af96e4f9813d8abcab1126ffcd79e07bb1048ee27f0fb209c62f1da1a3293",
}

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
    expected = SHA256[name]
    target = Path(dest) / name
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
        prog="python -m searle_core.infra.annotations",
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
