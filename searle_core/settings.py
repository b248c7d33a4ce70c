"""Run settings: the one home of a run's defaults, shared by the CLI, the profiles and the notebooks.

A setting is named once, by its field: ``--field-name`` on the command line, ``field_name`` in a profile, a
notebook's parameters cell and ``open_study``. The command line's value types live here too, so checks agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from searle_core.infra.errors import InputError
from searle_core.method.oti import OTIConfig
from searle_core.method.phi_training import PhiTrainConfig


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RunSettings:
    """What a run is: the data, the backbone and the inversion settings a user chooses."""

    dataset: str = _setting("shapes", "shapes (offline world) | cirr | fashioniq | circo")
    dataset_path: str = _setting("", "real datasets: the folder in the authors' layout")
    split: str = _setting("val", "benchmark split (val has ground truths)")
    category: str = _setting("", "FashionIQ categories, comma-separated (default: dress,shirt,toptee)")
    quick: bool = _setting(False, "shapes: the CI-sized world and world CLIP (seconds instead of minutes)")
    backbone: str = _setting("shapes-clip", "open_clip model name (ViT-B-32, ViT-L-14, ...) or shapes-clip")
    pretrained: str = _setting("default", "weights tag or file; default: the world CLIP's, or openai; none: random")
    device: str = _setting("auto", "auto (CUDA if available), cpu, cuda, cuda:1, ...")
    preprocess: str = _setting("", "clip | targetpad (default: targetpad, the authors' default, for every dataset)")
    num_workers: int | None = _setting(None, "data-loader workers decoding images (default: 0 for shapes, up to 8)")
    precision: str = _setting(
        OTIConfig.precision, "auto | fp32 | fp16 | bf16: training precision of OTI and trained networks"
    )
    seed: int = _setting(42, "run seed")
    threads: int = _setting(0, "torch CPU threads (0: OMP_NUM_THREADS if set, else half the cores, at least 1)")
    concepts: str = _setting("", "concept CSV (Open Images V7 class descriptions)")
    phrases: str = _setting("", "the authors' GPT phrases: GPTNeo27B.zip, its folder, or a pickle {concept: [phrases]}")
    unlabeled: str = _setting("", "image folder φ and the trained baselines learn from (the paper: ImageNet1K test)")
    captioner: str = _setting("", "Hugging Face captioning model for 'captioning' on real images (default: BLIP base)")
    captions: str = _setting(
        "", "text corpus LinCIR trains on: one caption per line, a JSON list, or a CSV 'caption'/'text' column"
    )
    lincir_checkpoint: str = _setting("", "LinCIR's φ weights (its official phi_best.pt); empty: trained here")
    oti_steps: int = _setting(OTIConfig.steps, "OTI optimisation steps per image (the paper: 350)")
    oti_batch_size: int | None = _setting(None, "images OTI optimises together (default: the paper's 32, shapes 128)")
    oti_tokens: str = _setting("", "OTI tokens computed earlier: a `searle oti` run folder or the authors' output")
    phi_checkpoint: str = _setting(
        "",
        "φ's weights: a file or URL (the authors' SEARLE_ViT-B32.pt), a φ run folder RUN, RUN:EPOCH or RUN:last, or "
        "searle / searle-xl (the authors' released φ, downloaded once); empty: trained here",
    )
    phi_epochs: int = _setting(PhiTrainConfig.epochs, "φ's training epochs (the paper: 100)")
    phi_images: int = _setting(0, "unlabeled images φ trains on (0: all)")
    progress: bool = _setting(True, "progress bars")

    def oti_config(self, vocabulary: bool = True, **changes) -> OTIConfig:
        """OTI's config: these settings' steps and precision, ``changes``, and λ_gpt 0 without a vocabulary."""
        config = dataclasses.replace(OTIConfig(steps=self.oti_steps, precision=self.precision), **changes)
        return config if vocabulary else dataclasses.replace(config, lambda_gpt=0.0)


SETTINGS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RunSettings))
DEFAULTS = RunSettings()


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def from_parameters(parameters: Mapping[str, Any], base: RunSettings | None = None) -> RunSettings:
    """Settings from notebook parameters or keyword arguments named as the fields (``None`` values skipped)."""
    given = {k: v for k, v in parameters.items() if v is not None}
    if unknown := [name for name in given if name not in SETTINGS]:
        raise TypeError(f"unknown parameter {unknown[0]!r}; settings are {', '.join(SETTINGS)}")
    return dataclasses.replace(base or DEFAULTS, **given)


def from_namespace(args: argparse.Namespace, **overrides) -> RunSettings:
    """Settings from parsed command-line options named as a setting; ``None`` keeps the field's default."""
    values = {k: v for k, v in vars(args).items() if k in SETTINGS and v is not None}
    if getattr(args, "no_progress", False):
        values["progress"] = False
    return dataclasses.replace(DEFAULTS, **{**values, **overrides})


# ---- values torch and the run time bound: one check for the command line and the profiles ----------
#: Seeds both torch and numpy take: torch.manual_seed overflows above, numpy's default_rng refuses below 0.
SEED_RANGE = (0, 2**64 - 1)
INT64_MAX = 2**63 - 1
PAPER_COUNTS = {"steps": 350, "epochs": 100}
#: Counts above these are accepted with a warning of their least time (10**12 steps would run for years).
WARN_COUNTS = {"steps": 100_000, "epochs": 10_000}
#: A lower bound on one optimisation step, not a measurement (parsing a flag must not load a model): CLIP's
#: text encoder forward and backward is a few hundred GPU kernels of >= ~5 us each.
MIN_STEP_SECONDS = 1e-3


def seed_problem(value: object) -> str | None:
    """Why ``value`` cannot be a seed, or ``None``."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{value!r} is not an integer seed"
    low, high = SEED_RANGE
    if not low <= value <= high:
        return f"{value} is outside the seed range {low} .. {high} (what torch and numpy both take)"
    return None


def count_problem(value: object) -> str | None:
    """Why ``value`` cannot be a step or epoch count (an integer >= 1 that torch can take), or ``None``."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{value!r} is not an integer count"
    if value < 1:
        return f"{value} is not allowed; expected an integer >= 1"
    if value > INT64_MAX:
        return f"{value} is more than torch can take; expected an integer from 1 to {INT64_MAX} (64 bits)"
    return None


def count_warning(value: int, kind: str) -> str | None:
    """For a count of ``kind`` far above the paper's, the least time it takes (a sentence), else ``None``."""
    if value <= WARN_COUNTS[kind]:
        return None
    paper = PAPER_COUNTS[kind]
    per = "each batch of images" if kind == "steps" else "the run"
    return (
        f"{value} {kind} is {value / paper:.3g} times the paper's {paper}: at {MIN_STEP_SECONDS * 1000:g} ms a step "
        f"(a lower bound, the fastest any backbone runs) {per} takes at least {duration(value * MIN_STEP_SECONDS)}; "
        "pass a smaller count unless you mean it (Ctrl-C stops the run and keeps what is finished)"
    )


def duration(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps the number >= 1 (s, min, h, days, years)."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:,.0f} {unit}" if seconds / size >= 10 else f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _checked_int(text: str, what: str, problem_of: Callable[[int], str | None]) -> int:
    """``text`` as an integer that ``problem_of`` accepts, else an argparse error saying why."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer{what}") from None
    if problem := problem_of(value):
        raise argparse.ArgumentTypeError(problem)
    return value


def seed_int(text: str) -> int:
    return _checked_int(text, " seed", seed_problem)


def nonnegative_int(text: str, low: int = 0) -> int:
    return _checked_int(text, "", lambda v: None if v >= low else f"{v} is not allowed; expected an integer >= {low}")


def positive_int(text: str) -> int:
    return nonnegative_int(text, 1)


def count_type(kind: str, flag: str) -> Callable[[str], int]:
    """argparse type of a step or epoch count: an error for values that cannot work, a warning for absurd ones."""

    def parse(text: str) -> int:
        value = _checked_int(text, "", count_problem)
        if warning := count_warning(value, kind):
            print(f"searle: warning: {flag} {warning}", file=sys.stderr)
        return value

    return parse


step_count = count_type("steps", "--oti-steps")
epoch_count = count_type("epochs", "--phi-epochs")


def nonnegative_float(text: str, strict: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (strict and value == 0):
        raise argparse.ArgumentTypeError(f"{text} is not allowed; expected a finite number {'>' if strict else '>='} 0")
    return value


def positive_float(text: str) -> float:
    return nonnegative_float(text, strict=True)


CHOICES = {"preprocess": ("clip", "targetpad"), "precision": ("auto", "fp32", "fp16", "bf16")}
#: Settings whose values torch or the run time bound, and those that count steps or epochs.
BOUNDED = {"seed": seed_int, "oti_steps": step_count, "phi_epochs": epoch_count}
COUNTED = {"oti_steps": "steps", "phi_epochs": "epochs"}


def check_bounded(name: str, value: Any, where: str) -> None:
    """The command line's range checks for a setting given elsewhere (a profile), as an :class:`InputError`
    naming ``where``; non-integers are left to the notebook's declared type (check_profile)."""
    if value is None or isinstance(value, (bool, float, str)):
        return
    problem = seed_problem(value) if name == "seed" else count_problem(value) if name in COUNTED else _too_large(value)
    if problem:
        raise InputError(f"{where}: {problem}")
    if name in COUNTED and (warning := count_warning(value, COUNTED[name])):
        print(f"searle: warning: {where}: {warning}", file=sys.stderr)


def _too_large(value: Any) -> str | None:
    """Why an integer in ``value`` (a number, or one inside a list or mapping) cannot reach torch, or ``None``."""
    if isinstance(value, (list, tuple, Mapping)):
        return next(filter(None, map(_too_large, value.values() if isinstance(value, Mapping) else value)), None)
    if isinstance(value, int) and not isinstance(value, bool) and not -INT64_MAX - 1 <= value <= INT64_MAX:
        return f"{value} is more than torch can take (a 64-bit integer, {-INT64_MAX - 1} .. {INT64_MAX})"
    return None


def add_setting(parser: argparse.ArgumentParser, name: str, help: str | None = None, **kwargs) -> argparse.Action:
    """Add setting ``name``'s option with the field's help, default, type and choices unless given."""
    spec = next(f for f in dataclasses.fields(RunSettings) if f.name == name)
    if name in BOUNDED:
        kwargs["type"] = BOUNDED[name]
    elif name in CHOICES:
        kwargs["choices"] = CHOICES[name]
    if str(spec.type) == "bool" and "action" not in kwargs:
        kwargs["action"] = "store_true"
    else:
        kwargs.setdefault("default", spec.default)
        if "type" not in kwargs and "choices" not in kwargs:
            kwargs["type"] = int if str(spec.type).startswith("int") else str
    return parser.add_argument(flag(name), dest=name, help=help or spec.metadata["help"], **kwargs)
