"""Run settings: one typed record, one name per thing, shared by the CLI, the profiles and the notebooks.

A setting is named once, here, by its field. The command line spells it ``--field-name`` (``_`` as
``-``), a profile (``notebooks/profiles/*.yaml``) and a notebook's parameters cell spell it
``field_name``, and :func:`searle_core.notebook.study.open_study` takes it as a keyword of that name.
Earlier spellings still work on the command line as hidden aliases that print a one-line note
(:data:`RENAMED_FLAGS`); earlier notebook parameter names are refused with the new name
(:data:`RENAMED_PARAMETERS`). ``tests/test_settings.py`` checks that the three agree.

What is *not* here: each network's own training recipe (``searle train-phi --lr``, ``OTIConfig``
fields such as ``lambda_gpt``), which has one spelling already, and what a notebook alone shows
(``n_images``, ``top_k``, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from searle_core.infra.errors import (
    INT64_MAX,
    InputError,
    count_problem,
    count_warning,
    epoch_count,
    seed_int,
    seed_problem,
    step_count,
)


def _setting(default: Any, help: str, **metadata) -> Any:
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class RunSettings:
    """What a run is: the data, the backbone, and the inversion settings a user chooses.

    Args:
        dataset: ``shapes`` (the offline world), ``cirr``, ``fashioniq``, ``circo`` (``searle oti``:
            also ``imagenet``, any image folder).
        dataset_path: the dataset's folder in the authors' layout (real datasets).
        split: benchmark split (``val`` has ground truths).
        category: FashionIQ categories, comma-separated (empty: dress, shirt, toptee).
        quick: ``shapes``: the CI-sized world and world CLIP.
        backbone: ``shapes-clip`` or an open_clip model (``ViT-B-32``, ``ViT-L-14``).
        pretrained: weights tag or file (``default``: the world CLIP's, else ``openai``); ``none``:
            random weights drawn under ``seed``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        preprocess: image preprocessing, ``clip`` or ``targetpad`` (empty: the dataset's default,
            targetpad 1.25 as the authors').
        num_workers: data-loader workers decoding images (``None``: the dataset's default).
        precision: training precision of OTI and trained networks (``auto``, ``fp32``, ``fp16``, ``bf16``).
        seed: run seed.
        concepts: the concept CSV of the phrase regulariser (Open Images V7 class descriptions).
        phrases: the authors' GPT phrases (``GPTNeo27B.zip``, its folder, or a pickle).
        unlabeled: the image folder φ and the trained baselines learn from (the paper: ImageNet1K test).
        captioner: Hugging Face captioning model of ``captioning`` (empty: BLIP base).
        captions: the text corpus ``lincir`` trains on, on real datasets (one caption per line, or
            a JSON list / CSV ``caption`` column: :mod:`searle_core.datasets.text_corpus`).
        lincir_checkpoint: LinCIR's φ weights (its official ``phi_best.pt``); empty: trained here.
        oti_steps: OTI optimisation steps per image (the paper: 350).
        oti_batch_size: images optimised together by OTI (``None``: the dataset's default).
        oti_tokens: OTI tokens computed earlier for ``searle-oti`` (a ``searle oti`` run folder or
            the authors' output).
        phi_checkpoint: φ's weights: a file or URL (the authors' ``SEARLE_ViT-B32.pt``), a φ run
            folder ``RUN``, ``RUN:EPOCH`` or ``RUN:last``, or ``searle`` / ``searle-xl`` (the authors'
            released φ, downloaded once); empty: φ trained by the project.
        phi_epochs: φ's training epochs (the paper: 100).
        phi_images: unlabeled images φ trains on (0: all).
        progress: progress bars (the CLI's ``--no-progress`` turns them off).
    """

    dataset: str = _setting("shapes", "shapes (offline world) | cirr | fashioniq | circo")
    dataset_path: str = _setting("", "real datasets: the folder in the authors' layout", old_parameters=("path",))
    split: str = _setting("val", "benchmark split (val has ground truths)")
    category: str = _setting("", "FashionIQ categories, comma-separated (default: dress,shirt,toptee)")
    quick: bool = _setting(False, "shapes: the CI-sized world and world CLIP (seconds instead of minutes)")
    backbone: str = _setting("shapes-clip", "open_clip model name (ViT-B-32, ViT-L-14, ...) or shapes-clip")
    pretrained: str = _setting("default", "weights tag or file; default: the world CLIP's, or openai; none: random")
    device: str = _setting("auto", "auto (CUDA if available), cpu, cuda, cuda:1, ...")
    preprocess: str = _setting("", "clip | targetpad (default: targetpad, the authors' default, for every dataset)")
    num_workers: int | None = _setting(None, "data-loader workers decoding images (default: 0 for shapes, up to 8)")
    precision: str = _setting("auto", "auto | fp32 | fp16 | bf16: training precision of OTI and trained networks")
    seed: int = _setting(42, "run seed")
    concepts: str = _setting("", "concept CSV (Open Images V7 class descriptions)", old_parameters=("concepts_path",))
    phrases: str = _setting(
        "",
        "the authors' GPT phrases: GPTNeo27B.zip, its folder, or a pickle {concept: [phrases]}",
        old_parameters=("phrases_path",),
    )
    unlabeled: str = _setting(
        "",
        "the image folder φ and the trained baselines learn from (the paper: ImageNet1K test)",
        old_parameters=("unlabeled_path",),
    )
    captioner: str = _setting("", "Hugging Face captioning model for 'captioning' on real images (default: BLIP base)")
    captions: str = _setting(
        "", "text corpus LinCIR trains on: one caption per line, a JSON list, or a CSV 'caption'/'text' column"
    )
    lincir_checkpoint: str = _setting("", "LinCIR's φ weights (its official phi_best.pt); empty: trained here")
    oti_steps: int = _setting(350, "OTI optimisation steps per image (the paper: 350)", old_flags=("--steps",))
    oti_batch_size: int | None = _setting(
        None, "images OTI optimises together (default: the paper's 32; 128 on shapes)", old_flags=("--batch-size",)
    )  # `searle oti` only: elsewhere it is the features'

    oti_tokens: str = _setting(
        "", "OTI tokens computed earlier: a `searle oti` run folder or the authors' output", old_flags=("--tokens",)
    )
    phi_checkpoint: str = _setting(
        "",
        "φ's weights: a file or URL (the authors' SEARLE_ViT-B32.pt), a φ run folder RUN, RUN:EPOCH or RUN:last, or "
        "searle / searle-xl (the authors' released φ, downloaded once); empty: trained here",
    )
    phi_epochs: int = _setting(100, "φ's training epochs (the paper: 100)", old_flags=("--epochs",))
    phi_images: int = _setting(0, "unlabeled images φ trains on (0: all)")
    progress: bool = _setting(True, "progress bars")

    def replace(self, **changes) -> RunSettings:
        """A copy with some settings changed; an unknown or renamed name is a one-line error."""
        check_names(changes, "setting")
        return dataclasses.replace(self, **changes)


#: Every setting's name, in the dataclass's order.
SETTINGS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RunSettings))


def flag(name: str) -> str:
    """The command-line spelling of a setting: ``oti_steps`` -> ``--oti-steps``."""
    return "--" + name.replace("_", "-")


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(RunSettings)}


#: Former notebook parameter / profile key -> the setting it became.
RENAMED_PARAMETERS: dict[str, str] = {
    old: f.name for f in dataclasses.fields(RunSettings) for old in f.metadata.get("old_parameters", ())
}
#: Former command-line spellings -> the setting they set (each command registers the ones it had).
RENAMED_FLAGS: dict[str, str] = {
    old: f.name for f in dataclasses.fields(RunSettings) for old in f.metadata.get("old_flags", ())
}
#: Former spellings of options that are not run settings (``searle train-phi``'s validation benchmark,
#: ``searle oti``'s first N images, the image counts of ``searle bench``).
RENAMED_FLAGS.update({"--val-path": "val_dataset_path", "--limit": "max_images", "--images": "n_images"})


def check_names(names, what: str = "parameter") -> None:
    """Fail on a name that is not a setting, saying the new name of a renamed one.

    Raises:
        TypeError: one line naming the first unknown name.
    """
    for name in names:
        if name in RENAMED_PARAMETERS:
            raise TypeError(f"{what} {name!r} is now called {RENAMED_PARAMETERS[name]!r}")
        if name not in SETTINGS:
            raise TypeError(f"unknown {what} {name!r}; settings are {', '.join(SETTINGS)}")


def from_parameters(parameters: Mapping[str, Any], base: RunSettings | None = None) -> RunSettings:
    """Settings from notebook parameters / keyword arguments named as the fields (``None`` values skipped).

    Args:
        parameters: setting name -> value.
        base: settings the others start from (default: :class:`RunSettings`'s defaults).
    """
    given = {k: v for k, v in parameters.items() if v is not None}
    check_names(given)
    return dataclasses.replace(base or RunSettings(), **given)


def from_namespace(args: argparse.Namespace, **overrides) -> RunSettings:
    """Settings from parsed command-line options: every option whose destination is a setting.

    ``None`` (an option left to its per-dataset default, e.g. ``searle oti --split``) keeps the
    field's default; ``--no-progress`` sets ``progress``.
    """
    values = {k: v for k, v in vars(args).items() if k in SETTINGS and v is not None}
    if getattr(args, "no_progress", False):
        values["progress"] = False
    return dataclasses.replace(RunSettings(), **{**values, **overrides})


class RenamedFlag(argparse.Action):
    """A former spelling of an option: sets the new destination and says the new spelling on stderr."""

    def __init__(self, option_strings, dest, new_flag: str = "", **kwargs):
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"searle: {option_string} is deprecated, use {self.new_flag}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_renamed(parser: argparse.ArgumentParser, old: str, dest: str, new_flag: str, **kwargs) -> argparse.Action:
    """A hidden former spelling ``old`` of the option ``new_flag`` (same destination, a note when used)."""
    return parser.add_argument(
        old,
        dest=dest,
        action=RenamedFlag,
        new_flag=new_flag,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
        **kwargs,
    )


#: Settings whose values torch or the run time bound (see :mod:`searle_core.infra.errors`).
BOUNDED = {"seed": seed_int, "oti_steps": step_count, "phi_epochs": epoch_count}
#: Settings that count optimisation steps or epochs (an absurd count is said with its least time).
COUNTED = {"oti_steps": "steps", "phi_epochs": "epochs"}


def check_bounded(name: str, value: Any, where: str) -> None:
    """The command line's range checks for a setting given elsewhere (a profile's ``seed: ...``).

    Args:
        name: the setting or parameter name.
        value: its value (``None``: the default, not checked).
        where: the file and key, as messages name them (``paper.yaml: notebooks.01_textual_inversion.seed``).

    Raises:
        InputError: a seed outside torch's range, a count that is not an integer >= 1 torch can take,
            or any integer torch cannot take (beyond 64 bits), naming ``where``.
    """
    if value is None or isinstance(value, (bool, float, str)):
        return  # not a count at all: the notebook's declared type says what was expected (check_profile)
    if name == "seed":
        problem = seed_problem(value)
    elif name in COUNTED:
        problem = count_problem(value)
    else:
        problem = _too_large(value)
    if problem:
        raise InputError(f"{where}: {problem}")
    warning = count_warning(value, COUNTED[name]) if name in COUNTED else None
    if warning:
        print(f"searle: warning: {where}: {warning}", file=sys.stderr)


def _too_large(value: Any) -> str | None:
    """Why an integer in ``value`` (a number, or one inside a list or mapping) cannot reach torch, or ``None``."""
    if isinstance(value, (list, tuple)):
        return next(filter(None, map(_too_large, value)), None)
    if isinstance(value, Mapping):
        return next(filter(None, map(_too_large, value.values())), None)
    if isinstance(value, int) and not isinstance(value, bool) and not -INT64_MAX - 1 <= value <= INT64_MAX:
        return f"{value} is more than torch can take (a 64-bit integer, {-INT64_MAX - 1} .. {INT64_MAX})"
    return None


def add_setting(
    parser: argparse.ArgumentParser, name: str, *, renamed: tuple[str, ...] = (), help: str | None = None, **kwargs
) -> argparse.Action:
    """Add the option of setting ``name`` (``--name-with-dashes``, destination ``name``).

    Args:
        parser: the command's parser.
        name: a :class:`RunSettings` field.
        renamed: former spellings this command accepted (e.g. ``searle oti --steps``); they stay as
            hidden aliases that print a one-line note.
        help: the option's help (default: the field's).
        **kwargs: ``argparse`` keywords (``default`` defaults to the field's, ``type`` to its type).
    """
    spec = _fields()[name]
    if name in BOUNDED:  # every command's --seed / --oti-steps / --phi-epochs takes the same range
        kwargs["type"] = BOUNDED[name]
    if str(spec.type) == "bool" and "action" not in kwargs:
        kwargs["action"] = "store_true"
    else:
        kwargs.setdefault("default", spec.default)
        if "type" not in kwargs and "choices" not in kwargs:
            kwargs["type"] = int if str(spec.type).startswith("int") else str
    action = parser.add_argument(flag(name), dest=name, help=help or spec.metadata["help"], **kwargs)
    for old in renamed:
        add_renamed(parser, old, name, flag(name), type=kwargs.get("type"), choices=kwargs.get("choices"))
    return action
