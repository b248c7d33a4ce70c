"""The authors' released φ by name: ``--phi-checkpoint searle`` / ``searle-xl``, as their ``hubconf.py``.

``torch.hub.load("miccunifi/SEARLE", "searle", backbone="ViT-B/32")`` loads
``SEARLE_ViT-B32.pt`` from the repository's ``weights`` release (``searle-xl``: ``ViT-L/14``,
``SEARLE_ViT-L14.pt``). Here the name picks the file, the backbone must be the one it was trained
for, and the file is downloaded once into the cache. The authors publish no checksums, so the
SHA-256 of the first download is recorded beside the cache and every later use is checked against
it: a cached file that changes (a damaged disk, a replaced file) is an error, not a different φ.
"""

from __future__ import annotations

import json
from pathlib import Path

from searle_core.infra.downloads import cached_download, sha256_of
from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_write_json
from searle_core.infra.paths import cache_dir

_RELEASE = "https://github.com/miccunifi/SEARLE/releases/download/weights"
#: name -> (the open_clip backbone it was trained with, its URL in the authors' release).
RELEASED: dict[str, tuple[str, str]] = {
    "searle": ("ViT-B-32", f"{_RELEASE}/SEARLE_ViT-B32.pt"),
    "searle-xl": ("ViT-L-14", f"{_RELEASE}/SEARLE_ViT-L14.pt"),
}
CACHE_KIND = "phi"
RECORD = "released_sha256.json"


def _record_path() -> Path:
    return cache_dir(CACHE_KIND) / RECORD


def _recorded() -> dict[str, str]:
    path = _record_path()
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise InputError(f"{path}: not a JSON object of URL -> SHA-256 ({err}); delete it to record afresh") from None


def released_phi_file(name: str, backbone_name: str | None = None) -> Path:
    """The local file of the released φ ``name`` (``searle``, ``searle-xl``), downloaded once.

    Args:
        name: a key of :data:`RELEASED`.
        backbone_name: the backbone φ will be used with (``None``: not checked); its ``-quickgelu``
            spelling counts as the same model.

    Raises:
        InputError: the backbone is not the one the checkpoint was trained with (naming both), the
            download failed, or the cached file's SHA-256 is not the one recorded at its download.
    """
    trained_with, url = RELEASED[name]
    if backbone_name is not None and backbone_name.removesuffix("-quickgelu") != trained_with:
        other = [n for n, (b, _) in RELEASED.items() if b == backbone_name.removesuffix("-quickgelu")]
        hint = f"; for {backbone_name} use --phi-checkpoint {other[0]}" if other else ""
        raise InputError(
            f"--phi-checkpoint {name} is the authors' φ for {trained_with} ({url.rsplit('/', 1)[-1]}), "
            f"but the backbone is {backbone_name}{hint}"
        )
    recorded = _recorded()
    path = cached_download(url, CACHE_KIND, known=recorded)  # checks a recorded SHA-256
    if url not in recorded:
        recorded[url] = sha256_of(path)
        atomic_write_json(recorded, _record_path())
    return path
