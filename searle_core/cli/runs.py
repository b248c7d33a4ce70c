"""``searle oti`` and ``searle train-phi``: dataset-scale runs, resumable, on one process or torchrun.

    searle oti --dataset imagenet --dataset-path ImageNet1K/test --backbone ViT-B-32 --out runs/oti-b32
    torchrun --nproc_per_node=8 -m searle_core oti ... --out runs/oti-b32 --resume
    searle train-phi --oti-tokens runs/oti-b32 --out runs/phi-b32 --val-dataset circo --val-dataset-path CIRCO \\
        --concepts oidv7-class-descriptions.csv --phrases phrases.pkl
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from searle_core.cli.common import (
    add_backbone_options,
    add_image_options,
    add_out_options,
    add_run_options,
    load_backbone_from_args,
    print_json,
    settings_from_args,
)
from searle_core.cli.evaluate import benchmark_from_args
from searle_core.datasets import ImageFolderSource
from searle_core.datasets.features import configure_images
from searle_core.datasets.folder import CHECK_IMAGES_HINT, check_folder_images
from searle_core.infra import distributed as dist
from searle_core.infra.errors import InputError
from searle_core.jobs import OTIRunConfig, read_manifest, run_oti
from searle_core.jobs.authors_oti import IMPORTED, import_authors_oti, is_authors_oti, read_authors_oti
from searle_core.jobs.from_settings import open_benchmark, open_vocabulary
from searle_core.jobs.oti_run import kept_batches, vocabulary_fingerprint
from searle_core.jobs.phi_run import benchmark_validator, kept_epochs, run_train_phi
from searle_core.jobs.run_folder import check_ours
from searle_core.method.oti import OTIConfig
from searle_core.method.phi import PhiLossConfig
from searle_core.method.phi_training import PhiTrainConfig
from searle_core.settings import RunSettings, add_setting, positive_float, positive_int, ranged
from searle_core.world import ShapesWorld, WorldConfig
from searle_core.world.setup import resolved_oti_batch_size

OTI_DATASETS = ("shapes", "imagenet", "cirr", "fashioniq", "circo")
VAL_DATASETS = ("shapes", "cirr", "fashioniq", "circo", "none")
PHI, PHI_LOSS = PhiTrainConfig(), PhiLossConfig()


def register(sub) -> None:
    o = sub.add_parser("oti", help="OTI over every image of a dataset into a resumable run folder (torchrun-ready)")
    add_image_options(
        o,
        OTI_DATASETS,
        dataset="shapes (split pretrain: the unlabeled world images), imagenet (any image folder), or a benchmark "
        "(its queries' reference images)",
        dataset_path="dataset folder (imagenet: the folder of images)",
        split="shapes: pretrain (default), val, test; benchmarks: val (default), test; imagenet: a sub-folder of "
        "--dataset-path (default: all)",
    )
    add_setting(o, "precision")
    add_out_options(o, "run folder (tokens, features, concepts, manifest)")
    add_setting(o, "oti_steps")
    add_setting(o, "oti_batch_size", type=positive_int)
    o.add_argument("--lambda-gpt", type=ranged("lambda_gpt"), default=OTIConfig.lambda_gpt, help="0: no regulariser")
    add_setting(
        o,
        "concepts",
        default=None,
        help="the vocabulary (Open Images' oidv7-class-descriptions.csv), or each image's concepts in the authors' "
        "layout (ViT-B32_top_250_ensembling_image_texts.csv, as `searle concepts associate` writes)",
    )
    add_setting(o, "phrases", default=None)
    o.add_argument("--checkpoint-every", type=positive_int, default=10, help="batches per chunk file (per process)")
    o.add_argument("--max-images", type=positive_int, default=None, help="only the first N images (smoke runs)")
    add_run_options(o, "print a one-line JSON summary")
    o.set_defaults(func=run_oti_command, kept=lambda out: f"kept {kept_batches(out)} finished batches in {out}")

    t = sub.add_parser("train-phi", help="train φ on the tokens of a finished `searle oti` run (torchrun-ready)")
    add_setting(
        t,
        "oti_tokens",
        help="the `searle oti` run folder, or the authors' oti_inversion.py output (then give --images)",
    )
    t.add_argument("--images", default=None, help="with the authors' OTI output: the image folder it inverted")
    add_out_options(t, "φ run folder (checkpoint, history.csv, phi.pt)")
    add_backbone_options(t)
    t.set_defaults(backbone=None, pretrained=None)  # default: the OTI run's
    add_setting(t, "phi_epochs")
    t.add_argument("--batch-size", type=positive_int, default=PHI.batch_size)
    for name, kind, default in (
        ("lr", positive_float, PHI.lr),
        ("weight-decay", ranged("weight_decay"), PHI.weight_decay),
        ("lambda-distil", ranged("lambda_distil"), PHI_LOSS.lambda_distil),
        ("lambda-gpt", ranged("lambda_gpt"), PHI_LOSS.lambda_gpt),
        ("temperature", positive_float, PHI_LOSS.temperature),
        ("top-concepts", positive_int, PHI_LOSS.top_concepts),
        ("dropout", ranged("dropout"), PHI.dropout),
    ):
        t.add_argument(f"--{name}", type=kind, default=default)
    add_setting(t, "precision")
    add_setting(t, "concepts", default=None, help="concept CSV, as given to `searle oti`")
    add_setting(t, "phrases", default=None, help="phrase bank, as given to `searle oti`")
    t.add_argument(
        "--val-dataset",
        default=None,
        choices=VAL_DATASETS,
        help="validate `searle` on this benchmark every epoch (default: with --val-dataset-path cirr, the "
        "authors' choice; else shapes for shapes-clip, none for other backbones)",
    )
    t.add_argument("--val-dataset-path", default=None, help="folder of the validation benchmark")
    t.add_argument("--val-split", default="val")
    add_run_options(t, "print the last history row as one JSON line")
    t.set_defaults(func=run_train_phi_command, kept=lambda out: f"kept {kept_epochs(out)} finished epochs in {out}")


def _say(message: str) -> None:
    if dist.is_main():
        print(message, file=sys.stderr)


def oti_images(args: argparse.Namespace) -> tuple[object, list[str], dict]:
    """(image source, names, description) of the images ``searle oti`` inverts."""
    info = {"dataset": args.dataset, "split": args.split, "path": args.dataset_path}
    if args.dataset == "shapes":
        world = ShapesWorld(WorldConfig.quick() if args.quick else WorldConfig())
        info["split"] = split = args.split or "pretrain"
        names = world.pretrain_names() if split == "pretrain" else world.benchmark(split).reference_names()
        return world.images, names, info
    if not args.dataset_path:
        raise InputError(f"--dataset {args.dataset} needs --dataset-path")
    if args.dataset == "imagenet":
        root = Path(args.dataset_path)
        if args.split and not (root / args.split).is_dir():
            raise FileNotFoundError(f"--split {args.split}: no folder {root / args.split}")
        source = ImageFolderSource(root / args.split if args.split else root, hint=CHECK_IMAGES_HINT)
        # The same up-front check a benchmark gets: unreadable files fail now, or are dropped and said.
        names, skipped = check_folder_images(source, args.check_images, args.on_missing)
        if skipped["images"]:
            first = ", ".join(skipped["files"][:3])
            _say(f"skipped {skipped['images']} missing or unreadable image(s) (first: {first})")
        return source, names, info
    info["split"] = args.split = args.split or "val"
    bench = benchmark_from_args(args)
    return bench.images, bench.reference_names(), info


def run_oti_command(args: argparse.Namespace) -> int:
    args.device = str(dist.setup(args.device))
    try:
        backbone = load_backbone_from_args(args)
        source, names, info = oti_images(args)
        # What `searle train-phi --oti-tokens` needs to load the same CLIP (a weights id is not an argument).
        info["backbone_args"] = {k: getattr(args, k) for k in ("backbone", "pretrained", "quick", "seed")}
        names = names[: args.max_images] if args.max_images is not None else names
        settings = settings_from_args(args)
        vocabulary = open_vocabulary(settings, _say) if args.lambda_gpt > 0 else None
        if vocabulary is None and args.lambda_gpt > 0:
            _say("no --concepts/--phrases: OTI runs without its regulariser (lambda_gpt 0)")
        if vocabulary is not None and vocabulary.associations is not None:
            vocabulary.concepts_of(names, 1)  # every image has a row: said now, not after the features
        config = OTIRunConfig(
            oti=settings.oti_config(vocabulary is not None, lambda_gpt=args.lambda_gpt),
            batch_size=resolved_oti_batch_size(args),
            seed=args.seed,
        )
        _say(
            f"OTI over {len(names)} images of {args.dataset} {info['split'] or ''} with {args.backbone} on "
            f"{dist.world_size()} process(es) -> {args.out}"
        )
        options = {"resume": args.resume, "force": args.force, "checkpoint_every": args.checkpoint_every}
        result = run_oti(
            backbone, source, names, vocabulary, args.out, config, progress=not args.no_progress, info=info, **options
        )
        if result is not None and args.json:
            out = {"images": len(result.names), "token_dim": result.tokens.shape[1], "out": str(result.folder)}
            print_json({**out, "sessions": len(result.manifest["sessions"])})
        elif result is not None:
            print(f"{len(result.names)} tokens in {result.folder}/tokens.pt")
        return 0
    finally:
        dist.teardown()


def _validator(args: argparse.Namespace, backbone, vocabulary):
    default = "shapes" if backbone.name == "shapes-clip" else "none"
    dataset = args.val_dataset or ("cirr" if args.val_dataset_path else default)  # the authors': CIRR val
    if dataset == "none":
        return None
    if dataset == "shapes" and backbone.name != "shapes-clip":
        raise InputError("--val-dataset shapes needs the shapes-clip backbone; pick a real benchmark or none")
    val = RunSettings(dataset=dataset, dataset_path=args.val_dataset_path or "", split=args.val_split, quick=args.quick)
    return benchmark_validator(backbone, open_benchmark(val), vocabulary)


def _oti_run_backbone(args: argparse.Namespace):
    """The OTI run's hyper-parameters, its backbone options and the authors' run (``None`` for ours); fills
    in the backbone options the user left out with the run's, so φ sees the CLIP its tokens came from."""
    recorded = None
    if is_authors_oti(args.oti_tokens):
        if not args.images:
            raise InputError(
                f"--oti-tokens {args.oti_tokens} holds the authors' OTI tokens without image features: pass "
                "--images, the folder they inverted (ImageNet1K/test)"
            )
        recorded = read_authors_oti(args.oti_tokens)
        hyper = {"backbone": recorded.backbone or "ViT-B-32", "weights": "openai"}
        info = {"dataset": "imagenet"}
    else:
        manifest = read_manifest(args.oti_tokens)
        if manifest is None:
            raise FileNotFoundError(
                f"--oti-tokens {args.oti_tokens}: no OTI run there (no manifest.json, nor the authors' "
                "ema_oti_pseudo_tokens.pt + image_names.pkl); run `searle oti` first"
            )
        hyper, info = manifest.get("hyperparameters", {}), manifest.get("info", {})
    given = info.get("backbone_args") or {}
    same_backbone = args.backbone in (None, given.get("backbone", hyper.get("backbone")))
    args.backbone = args.backbone or given.get("backbone") or hyper.get("backbone", "shapes-clip")
    if args.pretrained is None and same_backbone and "pretrained" in given:
        args.pretrained = given["pretrained"]
    elif args.pretrained is None:  # a run without backbone_args: a weights id is a tag, "random-…" or a file id
        weights, shapes_clip = str(hyper.get("weights", "default")), args.backbone == "shapes-clip"
        args.pretrained = "none" if weights.startswith("random-") else "default" if shapes_clip else weights
    args.quick = args.quick or bool(same_backbone and given.get("quick"))
    args.dataset = info.get("dataset", "imagenet")
    return hyper, given, recorded


def run_train_phi_command(args: argparse.Namespace) -> int:
    if not args.oti_tokens:
        raise InputError("searle train-phi needs --oti-tokens: the `searle oti` run folder (or the authors' output)")
    check_ours(Path(args.out), "a φ run")  # before <out>/oti-import is written for the authors' tokens
    hyper, given, recorded = _oti_run_backbone(args)
    args.device = str(dist.setup(args.device))
    try:
        # Random weights are drawn under the OTI run's seed: φ must see the CLIP its tokens came from.
        backbone = load_backbone_from_args(argparse.Namespace(**{**vars(args), "seed": given.get("seed", args.seed)}))
        vocabulary = open_vocabulary(settings_from_args(args), _say) if args.lambda_gpt > 0 else None
        if args.lambda_distil == 0 and (vocabulary is None or args.lambda_gpt == 0):
            raise InputError(
                "--lambda-distil 0 without the phrase regulariser (--lambda-gpt > 0 and --concepts/--phrases): "
                "every loss weight is 0, φ would learn nothing; give --lambda-distil > 0 or a vocabulary"
            )
        if recorded is not None:
            # Their features were made with their --preprocess-type (targetpad by default): so are ours;
            # loader workers pay for their start-up only on many images.
            kind = str(recorded.hyperparameters.get("preprocess_type", "targetpad"))
            workers = min(8, os.cpu_count() or 1) if len(recorded.names) >= 1024 else 0
            backbone = configure_images(backbone, kind, workers)
            imported = Path(args.out) / IMPORTED
            _say(f"the authors' OTI tokens in {args.oti_tokens}: features and concepts of {args.images} -> {imported}")
            source, progress = ImageFolderSource(args.images), not args.no_progress
            args.oti_tokens = str(
                import_authors_oti(args.oti_tokens, backbone, source, vocabulary, imported, args.top_concepts, progress)
            )
            hyper = read_manifest(args.oti_tokens)["hyperparameters"]
        if vocabulary is None and args.lambda_gpt > 0:
            _say("no --concepts/--phrases: φ trains without its regulariser (lambda_gpt 0)")
        elif vocabulary is not None and vocabulary_fingerprint(vocabulary) != hyper.get("vocabulary"):
            _say("note: this vocabulary differs from the one the OTI run associated concepts with")
        loss_args = {k: getattr(args, k) for k in ("lambda_distil", "temperature", "top_concepts")}
        loss = PhiLossConfig(lambda_gpt=args.lambda_gpt if vocabulary else 0.0, **loss_args)
        train_args = {k: getattr(args, k) for k in ("batch_size", "lr", "weight_decay", "dropout", "seed", "precision")}
        config = PhiTrainConfig(epochs=args.phi_epochs, loss=loss, **train_args)
        # Rank 0 validates; the others only need to know that it does (they receive its metrics).
        validate = _validator(args, backbone, vocabulary) if dist.is_main() else None
        if dist.broadcast_object(validate is not None) and validate is None:
            validate = lambda phi: {}
        bank = vocabulary.phrase_bank if vocabulary else None
        options = {"validate": validate, "resume": args.resume, "force": args.force, "progress": not args.no_progress}
        result = run_train_phi(backbone, args.oti_tokens, args.out, config, bank, **options)
        last = result.history[-1] if result.history else {}
        if dist.is_main() and args.json:
            print_json(last)
        elif dist.is_main():
            floats = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if isinstance(v, float))
            print(f"φ after {last.get('epoch', 0)} epochs: {floats}")
            print(f"wrote {args.out}/phi.pt and {args.out}/history.csv")
        return 0
    finally:
        dist.teardown()
