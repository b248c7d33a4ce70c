"""Captioning baseline: the paper's prompt with ``$`` replaced by a caption of the reference image, from
the dataset's own captioner where it brings one, else from a Hugging Face model (``transformers``, an
optional dependency imported only here), cached per model and image list."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from searle_core.clip.backbone import Backbone
from searle_core.clip.preprocess import to_rgb
from searle_core.datasets.base import CIRBenchmark
from searle_core.datasets.features import reference_features
from searle_core.infra.device import resolve_device
from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_write_text, digest
from searle_core.infra.paths import cache_dir
from searle_core.retrieval.queries import SEARLE_PROMPT

#: ``$`` of the paper's prompt becomes the caption: "a photo of {caption} that {relative caption}".
CAPTION_PROMPT = SEARLE_PROMPT.replace("$", "{}")
#: The Hugging Face captioner used when none is configured (BLIP base, COCO captioning).
DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-base"


@dataclass
class HFCaptioner:
    """A Hugging Face image-captioning model (a Hub id or local folder), loaded on first use unless a
    ``model`` and its ``processor`` are given; ``prompt``: a prefix for conditional captioners."""

    model_name: str = DEFAULT_CAPTIONER
    device: str = "auto"
    batch_size: int = 16  # images per generate call
    max_new_tokens: int = 30
    prompt: str | None = None
    model: object = None
    processor: object = None

    def _load(self) -> None:
        try:
            import transformers
        except ImportError as err:
            raise InputError(
                f"the captioning baseline on real images needs the optional dependency "
                f"'transformers' to run {self.model_name!r}: pip install 'transformers>=4.40' "
                "(or pass your own captioner callable in MethodContext.captioner)"
            ) from err
        auto_model = getattr(transformers, "AutoModelForVision2Seq", None) or transformers.AutoModelForImageTextToText
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(self.model_name)
            self.model = auto_model.from_pretrained(self.model_name)
        except (OSError, ValueError) as err:
            raise InputError(
                f"could not load the captioning model {self.model_name!r}: {err}\nIt is downloaded "
                "from the Hugging Face Hub on first use (needs network access once), or pass a "
                "local folder holding the model as the captioner name."
            ) from err
        self.device = resolve_device(self.device)
        self.model = self.model.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: list) -> list[str]:
        if self.model is None:
            self._load()
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            kwargs = {"text": [self.prompt] * len(chunk)} if self.prompt else {}
            inputs = self.processor(images=chunk, return_tensors="pt", **kwargs)
            inputs = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in inputs.items()}
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
            out += self.processor.batch_decode(ids, skip_special_tokens=True)
        # One line, lower case, no trailing full stop: it is spliced into the middle of a prompt.
        return [" ".join(c.split()).strip().rstrip(".").strip().lower() for c in out]


def reference_captions(
    backbone: Backbone, bench: CIRBenchmark, captioner: str | Callable | None, known: dict[str, str], progress=True
) -> dict[str, str]:
    """A caption of every reference image, by ``bench.captioner`` where the dataset brings one, else by
    ``captioner`` (a model name or a callable); ``known``: captions made before, filled in place."""
    names = bench.reference_names()
    todo = [n for n in names if n not in known]
    if not todo:
        return known
    if bench.captioner is not None:
        _, feats = reference_features(backbone, bench, progress)
        row = {n: i for i, n in enumerate(names)}
        captions = bench.captioner(backbone, feats[[row[n] for n in todo]])
    else:
        if captioner is None or isinstance(captioner, str):
            captioner = HFCaptioner(captioner or DEFAULT_CAPTIONER, device=str(backbone.device))
        # Real images' captions are cached by captioner name and image list.
        name = getattr(captioner, "model_name", None)
        key = digest(name, getattr(captioner, "prompt", None), bench.name, todo)
        path = cache_dir("captions") / f"{key}.json" if name else None
        if path is not None and path.is_file():
            captions = json.loads(path.read_text())
        else:
            captions, step = [], getattr(captioner, "batch_size", 16)
            for start in tqdm(range(0, len(todo), step), desc="captioning", disable=not progress):
                captions += captioner([to_rgb(bench.images.load_image(n)) for n in todo[start : start + step]])
            if path is not None:
                atomic_write_text(json.dumps(captions), path)
    known.update(zip(todo, captions))
    return known
