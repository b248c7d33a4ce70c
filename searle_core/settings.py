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
    preprocess: str = _setting("", "clip | targetpad (default: its authors': clip for lincir, pic2word)")
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
        "", "LinCIR's captions: a file (txt, json, csv; parquet/jsonl 'text'), 'official' or one official set's name"
    )
    lincir_checkpoint: str = _setting("", "LinCIR's φ weights (its official phi_best.pt); empty: trained here")
    lincir_keywords: str = _setting("", "spacy (official; default) | closed-class (offline; shapes' default)")
    lincir_recipe: str = _setting("", "official: the README's run (512 x 20,000, fp16); default: train_phi.py's")
    lincir_steps: int | None = _setting(None, "LinCIR's training steps (default: the recipe's)")
    lincir_batch_size: int | None = _setting(None, "LinCIR's captions a batch (default: the recipe's)")
    lincir_precision: str = _setting("", "LinCIR's training precision: auto | fp32 | fp16 | bf16 (default: recipe's)")
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


def _checked_int(text: str, what: str, problem_of: Callable[[int], str | None], kind: type = int) -> int:
    """``text`` as an integer (or ``kind``) that ``problem_of`` accepts, else an argparse error saying why."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {'an integer' if kind is int else 'a number'}{what}"
        ) from None
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


CHOICES = {"preprocess": ("clip", "targetpad"), "precision": ("auto", "fp32", "fp16", "bf16")}
CHOICES |= {"lincir_keywords": ("spacy", "closed-class"), "lincir_recipe": ("official",)}
CHOICES["lincir_precision"] = CHOICES["precision"]
#: Each method's authors' image preprocessing on real datasets (LinCIR's and Pic2Word's: CLIP's own).
METHOD_PREPROCESS = {"lincir": "clip", "pic2word": "clip"}
#: Settings whose values torch or the run time bound, and those that count steps or epochs.
BOUNDED = {"seed": seed_int, "oti_steps": step_count, "phi_epochs": epoch_count}
COUNTED = {"oti_steps": "steps", "phi_epochs": "epochs", "step_grid": "steps"}
#: The intervals of the numbers the CLI's flags and the notebooks' parameters take, checked alike: an EMA decay
#: of 1.5 diverges, a step of 0 divides by zero after the long part, a dropout of 1 drops everything.
RANGES = {"positive": "(0, inf)", "ema_decay": "[0, 1]", "dropout": "[0, 1)", "data_fractions": "(0, 1]"}
RANGES |= dict.fromkeys(("trajectory_every", "k", "top_k", "n_words", "n_images", "timing_images"), "[1, inf)")
RANGES["oti_batch_size"] = "[1, inf)"
RANGES |= dict.fromkeys(("nonnegative", "lambda_gpt", "lambda_distil", "lambda_cos", "weight_decay"), "[0, inf)")
RANGES |= dict.fromkeys(
    ("max_queries", "phi_images", "baseline_epochs", "baseline_images", "n_examples", "threads"), "[0, inf)"
)
RANGES |= dict.fromkeys(("query_index", "query_indices"), "[0, inf)")


def parameter_problem(name: str, value: Any) -> str | None:
    """Why ``value`` (a number, or numbers in a list or mapping) cannot be the setting or parameter ``name``, or
    ``None``: the CLI's flags and the profiles' and notebooks' parameters are checked by this one function."""
    if isinstance(value, (list, tuple, Mapping)):
        items = value.items() if isinstance(value, Mapping) else ((name, v) for v in value)
        return next(filter(None, (parameter_problem(str(k), v) for k, v in items)), None)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # types are the notebook's declared ones (check_profile)
    if not math.isfinite(value):
        return f"{value} is not allowed; expected a finite number"
    if name == "seed" and isinstance(value, int) or name in COUNTED:
        return seed_problem(value) if name == "seed" else count_problem(value)
    spec = RANGES.get(name, "(-inf, inf)")
    low, high = map(float, spec[1:-1].split(","))
    if not (low < value or spec[0] == "[" and value == low) or not (value < high or spec[-1] == "]" and value == high):
        return f"{value} is not allowed; expected a number in {spec}"
    if isinstance(value, int) and not -INT64_MAX - 1 <= value <= INT64_MAX:
        return f"{value} is more than torch can take (a 64-bit integer, {-INT64_MAX - 1} .. {INT64_MAX})"
    return None


def check_bounded(name: str, value: Any, where: str) -> None:
    """:func:`parameter_problem` for a setting given elsewhere (a profile, a notebook) as an :class:`InputError`
    naming ``where``, and the command line's warning for a count far above the paper's."""
    if problem := parameter_problem(name, value):
        raise InputError(f"{where}: {problem}")
    if name in COUNTED and isinstance(value, int) and (warning := count_warning(value, COUNTED[name])):
        print(f"searle: warning: {where}: {warning}", file=sys.stderr)


def check_parameters(values: Mapping[str, Any], where: str = "notebook parameter") -> None:
    """Every bounded parameter among ``values`` (a notebook's globals), before the first long cell."""
    for name in {*COUNTED, *RANGES, "seed"} & set(values):
        check_bounded(name, values[name], f"{where} {name}")


def ranged(name: str) -> Callable[[str], float]:
    """argparse type of the number ``name`` (a parameter, ``nonnegative``, ``positive``), checked as notebooks are."""
    return lambda text: _checked_int(text, "", lambda value: parameter_problem(name, value), float)


nonnegative_float, positive_float = ranged("nonnegative"), ranged("positive")


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
