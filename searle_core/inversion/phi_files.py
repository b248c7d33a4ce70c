"""φ's checkpoint files: the authors' layout, run folders (``RUN``, ``RUN:EPOCH``, ``RUN:last``), URLs, and the
released φ by name (``searle``, ``searle-xl``), checked against the SHA-256 recorded at its first download."""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
from pathlib import Path

import torch

from searle_core.clip.backbone import Backbone, weights_key
from searle_core.infra.downloads import cached_download
from searle_core.infra.errors import InputError, first_line
from searle_core.infra.files import atomic_save, atomic_write_json, load_torch_file, read_json, sha256_of
from searle_core.infra.paths import cache_dir
from searle_core.method.phi import Phi

_RELEASE = "https://github.com/miccunifi/SEARLE/releases/download/weights"
#: name -> (the open_clip backbone it was trained with, its URL in the authors' release).
RELEASED: dict[str, tuple[str, str]] = {
    "searle": ("ViT-B-32", f"{_RELEASE}/SEARLE_ViT-B32.pt"),
    "searle-xl": ("ViT-L-14", f"{_RELEASE}/SEARLE_ViT-L14.pt"),
}
PHI_LAST = "phi_last.pt"


def save_phi(phi: Phi, path: str | os.PathLike, **extra) -> None:
    """Save in the authors' layout (``{"epoch": n, "Phi": state_dict, ...}``: pass ``epoch``), atomically."""
    atomic_save({"Phi": phi.state_dict(), **extra}, path)


def released_phi_file(name: str, backbone_name: str | None = None) -> Path:
    """The local file of the released φ ``name``, downloaded once and checked against the SHA-256 recorded then;
    ``backbone_name`` (``None``: not checked) must be the one it was trained with."""
    trained_with, url = RELEASED[name]
    if backbone_name is not None and backbone_name.removesuffix("-quickgelu") != trained_with:
        other = [n for n, (b, _) in RELEASED.items() if b == backbone_name.removesuffix("-quickgelu")]
        hint = f"; for {backbone_name} use --phi-checkpoint {other[0]}" if other else ""
        raise InputError(
            f"--phi-checkpoint {name} is the authors' φ for {trained_with} ({url.rsplit('/', 1)[-1]}), "
            f"but the backbone is {backbone_name}{hint}"
        )
    record = cache_dir("phi") / "released_sha256.json"
    try:
        recorded = dict(json.loads(record.read_text())) if record.is_file() else {}
    except (ValueError, TypeError) as err:
        raise InputError(f"{record}: not a JSON object of URL -> SHA-256 ({err}); delete it to record afresh") from None
    path = cached_download(url, "phi", known=recorded)  # checks a recorded SHA-256
    if url not in recorded:
        recorded[url] = sha256_of(path)
        atomic_write_json(recorded, record)
    return path


def resolve_phi_path(path: str, backbone: Backbone | None = None) -> str:
    """``RUN:10`` -> ``RUN/phi_10.pt``, ``RUN:last`` -> ``RUN/phi_last.pt``, ``RUN`` -> ``RUN/phi.pt``,
    ``searle`` / ``searle-xl`` -> the released file for ``backbone``; files and URLs pass unchanged."""
    if path in RELEASED and not os.path.exists(path):
        return str(released_phi_file(path, backbone.name if backbone is not None else None))
    if path.startswith(("http://", "https://")) or os.path.isfile(path):
        return path
    folder, sep, epoch = path.rpartition(":")
    if not (sep and os.path.isdir(folder)):
        folder, epoch = path, ""
        if not os.path.isdir(folder):
            return path
    name = "phi.pt" if epoch == "" else PHI_LAST if epoch == "last" else f"phi_{epoch}.pt"
    if epoch not in ("", "last") and not epoch.isdigit():
        raise InputError(f"--phi-checkpoint {path}: the epoch after ':' must be a number or 'last', got {epoch!r}")
    if not (Path(folder) / name).is_file():
        saved = sorted(p.name for p in Path(folder).glob("phi*.pt"))
        raise FileNotFoundError(
            f"--phi-checkpoint {path}: the φ run {folder} has no {name} (it has: {', '.join(saved) or 'none'}; "
            "phi_{n}.pt is written every 5 epochs, phi_last.pt every epoch, phi.pt at the end)"
        )
    return str(Path(folder) / name)


def check_provenance(recorded: object, backbone: Backbone | None, what: str, accept: bool = False) -> str:
    """``""`` when ``recorded`` (a run's hyper-parameters) names ``backbone``'s model and weights or none; else
    an error, or with ``accept`` a warning (said, and returned for the results)."""
    made = [recorded.get(k) for k in ("backbone", "weights")] if isinstance(recorded, dict) else [None]
    if backbone is None or None in made or made == [backbone.name, weights_key(backbone)]:
        return ""
    said = f"{what} was made with {made[0]} ({made[1]}), not the {backbone.name} ({weights_key(backbone)}) in use"
    if not accept:
        raise InputError(f"{said}: use that backbone and weights, or pass --accept-other-weights to use it anyway")
    print(f"warning: {said}; used anyway (--accept-other-weights)", file=sys.stderr)
    return f" (made with {made[0]} {made[1]}; other weights accepted)"


def load_phi(path: str | os.PathLike, backbone: Backbone | None = None, map_location="cpu", accept=False) -> Phi:
    """φ from any form :func:`resolve_phi_path` reads, or a plain state dict, checked against ``backbone``'s
    widths and the backbone and weights it records (``accept``: a mismatch is a warning); it carries ``epoch``
    (``None`` if the file has none) and ``source``, which results files record."""
    given, path = str(path), resolve_phi_path(str(path), backbone)
    # A URL is cached under a key of the whole URL (never answered by another host's file of the same name).
    local = cached_download(path, "phi") if path.startswith(("http://", "https://")) else path
    if path.startswith("file:"):
        raise InputError(
            f"φ checkpoint {path!r}: file: URLs are not read; give the file's path "
            f"({urllib.parse.unquote(urllib.parse.urlparse(path).path)})"
        )
    if not os.path.isfile(local):
        raise FileNotFoundError(
            f"φ checkpoint {path!r} not found. The authors' checkpoints are SEARLE_ViT-B32.pt and SEARLE_ViT-L14.pt "
            "(SEARLE repository, release 'weights'); or train one with `searle train-phi`."
        )
    state = load_torch_file(local, "φ checkpoint", map_location)
    epoch = state.get("epoch") if isinstance(state, dict) and "Phi" in state else None
    manifest = Path(local).parent / "manifest.json"  # a φ run's phi_*.pt record their CLIP there
    recorded = state.get("hyperparameters") if isinstance(state, dict) else None
    if recorded is None and Path(local).name.startswith("phi") and manifest.is_file():
        run = read_json(manifest)
        recorded = run.get("hyperparameters") if isinstance(run, dict) else None
    state = state.get("Phi", state) if isinstance(state, dict) else state
    tensors = state.items() if isinstance(state, dict) else ()
    if bad := [k for k, v in tensors if torch.is_tensor(v) and not v.is_floating_point()]:
        raise InputError(f"{path}: φ's weights {bad[0]} are {state[bad[0]].dtype}, expected floating point")
    try:
        w0, w6 = state["layers.0.weight"], state["layers.6.weight"]
        phi = Phi(w0.shape[1], w0.shape[0], w6.shape[0])
        phi.load_state_dict(state)
    except (KeyError, TypeError, AttributeError, IndexError, RuntimeError) as err:
        raise InputError(
            f"{path}: not a φ checkpoint: expected a dict with key 'Phi' holding "
            f"layers.0/3/6.weight|bias ({first_line(err)})"
        ) from None
    if bad := [k for k, v in phi.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]:
        raise InputError(f"{path}: φ's weights {bad[0]} hold NaN or infinite values; the checkpoint is damaged")
    phi.epoch = int(epoch) if isinstance(epoch, (int, float)) or torch.is_tensor(epoch) else None
    phi.source = RELEASED[given][1] if given in RELEASED and path != given else path  # the release's URL
    phi.source += check_provenance(recorded, backbone, f"φ checkpoint {path}", accept)
    if backbone is not None and (phi.input_dim, phi.output_dim) != (backbone.embed_dim, backbone.token_dim):
        raise InputError(
            f"{path}: φ maps {phi.input_dim}-d features to {phi.output_dim}-d tokens, but backbone "
            f"{backbone.name} has {backbone.embed_dim}-d features and {backbone.token_dim}-d tokens "
            "(SEARLE_ViT-B32.pt goes with ViT-B-32, SEARLE_ViT-L14.pt with ViT-L-14)."
        )
    return phi.eval()
