"""``searle oti`` and ``searle train-phi``: dataset-scale runs, resumable, on one process or torchrun.

    searle oti --dataset imagenet --dataset-path ImageNet1K/test --backbone ViT-B-32 --out runs/oti-b32
    torchrun --nproc_per_node=8 -m searle_core oti ... --out runs/oti-b32 --resume
    searle train-phi --tokens runs/oti-b32 --backbone ViT-B-32 --out runs/phi-b32 \\
        --val-dataset circo --val-dataset-path CIRCO --concepts oidv7-class-descriptions.csv --phrases phrases.pkl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from searle_core.cli.common import add_backbone_options, load_backbone_from_args, print_json
from searle_core.cli.evaluate import benchmark_from_args, vocabulary_from_args
from searle_core.datasets import ImageFolderSource
from searle_core.datasets.features import configure_images
from searle_core.datasets.folder import check_folder_images
from searle_core.infra import distributed as dist
from searle_core.infra.errors import InputError, nonnegative_float, nonnegative_int, positive_float, positive_int
from searle_core.infra.settings import RunSettings, add_renamed, add_setting
from searle_core.jobs import OTIRunConfig, read_manifest, run_oti
from searle_core.jobs.authors_oti import IMPORTED, import_authors_oti, is_authors_oti, read_authors_oti
from searle_core.jobs.oti_inputs import vocabulary_fingerprint
from searle_core.jobs.oti_run import kept_batches
from searle_core.jobs.phi_run import benchmark_validator, kept_epochs, run_train_phi
from searle_core.jobs.run_folder import check_ours
from searle_core.method.oti import OTIConfig
from searle_core.method.phi import PhiLossConfig
from searle_core.method.phi_training import PhiTrainConfig
from searle_core.world import ShapesWorld, WorldConfig
from searle_core.world.recipes import default_oti_batch_size

OTI_DATASETS = ("shapes", "imagenet", "cirr", "fashioniq", "circo")
VAL_DATASETS = ("shapes", "cirr", "fashioniq", "circo", "none")


def register(sub) -> None:
    o = sub.add_parser("oti", help="OTI over every image of a dataset into a resumable run folder (torchrun-ready)")
    add_setting(
        o,
        "dataset",
        choices=OTI_DATASETS,
        help="shapes (split pretrain: the unlabeled world images), imagenet (any image folder), or a "
        "benchmark (its queries' reference images)",
    )
    add_setting(o, "dataset_path", default=None, help="dataset folder (imagenet: the folder of images)")
    add_setting(
        o,
        "split",
        default=None,
        help="shapes: pretrain (default), val, test; benchmarks: val (default), "
        "test; imagenet: a sub-folder of --dataset-path (default: all)",
    )
    add_setting(o, "category", default=None)
    o.add_argument("--on-missing", default="error", choices=("error", "skip"))
    o.add_argument("--check-images", default="exists", choices=("none", "exists", "open"))
    add_backbone_options(o)
    add_setting(
        o,
        "preprocess",
        default=None,
        choices=("clip", "targetpad"),
        help="image preprocessing (default: targetpad, the authors' default, for every dataset)",
    )
    add_setting(
        o,
        "precision",
        choices=("auto", "fp32", "fp16", "bf16"),
        help="OTI precision (default auto: fp16 autocast + GradScaler on CUDA, as the authors; fp32 on CPU)",
    )
    add_setting(o, "num_workers", type=nonnegative_int, help="data-loader workers for image files")
    o.add_argument("--out", required=True, help="run folder (tokens, features, concepts, manifest)")
    o.add_argument("--resume", action="store_true", help="continue the run in --out")
    o.add_argument(
        "--force",
        action="store_true",
        help="with --resume: accept changed hyper-parameters; without: delete the run in --out first",
    )
    add_setting(o, "oti_steps", type=positive_int, renamed=("--steps",), help="OTI steps per batch (paper: 350)")
    add_setting(o, "oti_batch_size", type=positive_int, renamed=("--batch-size",))
    o.add_argument("--lambda-gpt", type=nonnegative_float, default=0.5, help="regulariser weight (paper: 0.5; 0: none)")
    add_setting(
        o,
        "concepts",
        default=None,
        help="the vocabulary (Open Images' oidv7-class-descriptions.csv: each image is associated over it), or "
        "each image's concepts in the authors' layout (ViT-B32_top_250_ensembling_image_texts.csv, as `searle "
        "concepts associate` writes: header 'Image Name,1,2,...', rows named as the dataset names its images)",
    )
    add_setting(o, "phrases", default=None)
    o.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=10,
        help="batches per chunk file (per process); each finished batch is saved at once",
    )
    o.add_argument("--max-images", type=positive_int, default=None, help="only the first N images (smoke runs)")
    add_renamed(o, "--limit", "max_images", "--max-images", type=positive_int)
    add_setting(o, "seed")
    o.add_argument("--no-progress", action="store_true")
    o.add_argument("--json", action="store_true", help="print a one-line JSON summary")
    o.set_defaults(func=run_oti_command, kept=lambda out: f"kept {kept_batches(out)} finished batches in {out}")

    t = sub.add_parser("train-phi", help="train φ on the tokens of a finished `searle oti` run (torchrun-ready)")
    add_setting(
        t,
        "oti_tokens",
        renamed=("--tokens",),
        help="the `searle oti` run folder, or an experiment folder of the authors' oti_inversion.py "
        "(ema_oti_pseudo_tokens.pt + image_names.pkl; then give --images)",
    )
    t.add_argument(
        "--images",
        default=None,
        help="with the authors' OTI folder: the image folder it inverted (ImageNet1K/test); its "
        "features and concepts are computed once into <out>/oti-import",
    )
    t.add_argument("--out", required=True, help="φ run folder (checkpoint, history.csv, phi.pt)")
    t.add_argument("--resume", action="store_true")
    t.add_argument(
        "--force",
        action="store_true",
        help="with --resume: accept changed hyper-parameters; without: delete the run in --out first",
    )
    add_backbone_options(t)
    t.set_defaults(backbone=None, pretrained=None)  # default: the OTI run's
    add_setting(t, "phi_epochs", type=positive_int, renamed=("--epochs",))
    t.add_argument("--batch-size", type=positive_int, default=256)
    t.add_argument("--lr", type=positive_float, default=1e-4)
    t.add_argument("--weight-decay", type=nonnegative_float, default=0.01)
    t.add_argument("--lambda-distil", type=nonnegative_float, default=1.0)
    t.add_argument(
        "--lambda-gpt", type=nonnegative_float, default=0.75, help="regulariser weight (paper: 0.75; 0: none)"
    )
    t.add_argument("--temperature", type=positive_float, default=0.25)
    t.add_argument("--top-concepts", type=positive_int, default=150)
    t.add_argument("--dropout", type=nonnegative_float, default=0.5)
    t.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "fp16", "bf16"),
        help="φ training precision (default auto: fp16 autocast + GradScaler on CUDA, as the authors; fp32 on CPU)",
    )
    add_setting(t, "concepts", default=None, help="concept CSV, as given to `searle oti`")
    add_setting(
        t, "phrases", default=None, help="phrase bank (GPTNeo27B.zip, its folder or a pickle), as given to `searle oti`"
    )
    t.add_argument(
        "--val-dataset",
        default=None,
        choices=VAL_DATASETS,
        help="validate `searle` on this benchmark every epoch (default: shapes for shapes-clip, else none)",
    )
    t.add_argument("--val-dataset-path", default=None, help="folder of the validation benchmark")
    add_renamed(t, "--val-path", "val_dataset_path", "--val-dataset-path")
    t.add_argument("--val-split", default="val")
    add_setting(t, "seed")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--json", action="store_true", help="print the last history row as one JSON line")
    t.set_defaults(func=run_train_phi_command, kept=lambda out: f"kept {kept_epochs(out)} finished epochs in {out}")


def _say(message: str) -> None:

    if dist.is_main():
        print(message, file=sys.stderr)


def oti_images(args: argparse.Namespace) -> tuple[object, list[str], dict]:
    """(image source, names, description) of the images ``searle oti`` inverts."""

    info = {"dataset": args.dataset, "split": args.split, "path": args.dataset_path}
    if args.dataset == "shapes":
        world = ShapesWorld(WorldConfig.quick() if args.quick else WorldConfig())
        split = args.split or "pretrain"
        info["split"] = split
        if split == "pretrain":
            return world.images, world.pretrain_names(), info
        return world.images, world.benchmark(split).reference_names(), info
    if not args.dataset_path:
        raise InputError(f"--dataset {args.dataset} needs --dataset-path")
    if args.dataset == "imagenet":
        root = Path(args.dataset_path)
        if args.split and (root / args.split).is_dir():
            root = root / args.split
        elif args.split:
            raise FileNotFoundError(f"--split {args.split}: no folder {root / args.split}")
        source = ImageFolderSource(root)
        # The same up-front check a benchmark gets: unreadable files fail now, or are dropped and said.
        names, skipped = check_folder_images(source, args.check_images, args.on_missing)
        if skipped["images"]:
            _say(
                f"skipped {skipped['images']} missing or unreadable image(s) (first: {', '.join(skipped['files'][:3])})"
            )
        return source, names, info

    args.split = args.split or "val"
    info["split"] = args.split
    bench = benchmark_from_args(args)
    return bench.images, bench.reference_names(), info


def run_oti_command(args: argparse.Namespace) -> int:

    args.device = str(dist.setup(args.device))
    try:
        backbone = load_backbone_from_args(args)
        source, names, info = oti_images(args)
        # What `searle train-phi --tokens` needs to load the same CLIP (a weights id is not an argument).
        info["backbone_args"] = {
            "backbone": args.backbone,
            "pretrained": args.pretrained,
            "quick": args.quick,
            "seed": args.seed,
        }
        if args.max_images is not None:
            names = names[: args.max_images]
        vocabulary = vocabulary_from_args(args) if args.lambda_gpt > 0 else None
        if vocabulary is None and args.lambda_gpt > 0:
            _say("no --concepts/--phrases: OTI runs without its regulariser (lambda_gpt 0)")
        if vocabulary is not None and vocabulary.associations is not None:
            vocabulary.concepts_of(names, 1)  # every image has a row: said now, not after the features
        config = OTIRunConfig(
            oti=OTIConfig(
                steps=args.oti_steps, lambda_gpt=args.lambda_gpt if vocabulary else 0.0, precision=args.precision
            ),
            batch_size=args.oti_batch_size or default_oti_batch_size(args.dataset),
            seed=args.seed,
        )
        _say(
            f"OTI over {len(names)} images of {args.dataset} {info['split'] or ''} with {args.backbone} on "
            f"{dist.world_size()} process(es) -> {args.out}"
        )
        result = run_oti(
            backbone,
            source,
            names,
            vocabulary,
            args.out,
            config,
            resume=args.resume,
            force=args.force,
            checkpoint_every=args.checkpoint_every,
            progress=not args.no_progress,
            info=info,
        )
        if result is not None:
            summary = {
                "images": len(result.names),
                "token_dim": result.tokens.shape[1],
                "out": str(result.folder),
                "sessions": len(result.manifest["sessions"]),
            }
            print_json(summary) if args.json else print(f"{len(result.names)} tokens in {result.folder}/tokens.pt")
        return 0
    finally:
        dist.teardown()


def _validator(args: argparse.Namespace, backbone, vocabulary):

    dataset = args.val_dataset or ("shapes" if backbone.name == "shapes-clip" else "none")
    if dataset == "none":
        return None
    if dataset == "shapes" and backbone.name != "shapes-clip":
        raise InputError("--val-dataset shapes needs the shapes-clip backbone; pick a real benchmark or none")

    val = RunSettings(dataset=dataset, dataset_path=args.val_dataset_path or "", split=args.val_split, quick=args.quick)
    return benchmark_validator(backbone, benchmark_from_args(val), vocabulary)


def _no_validation(phi) -> dict:
    return {}


def run_train_phi_command(args: argparse.Namespace) -> int:
    if not args.oti_tokens:  # not argparse's required=: the former spelling --tokens must satisfy it too
        raise InputError("searle train-phi needs --oti-tokens: the `searle oti` run folder (or the authors' output)")
    check_ours(Path(args.out), "a φ run")  # before <out>/oti-import is written for the authors' tokens
    authors = is_authors_oti(args.oti_tokens)
    if authors:
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
    if args.pretrained is None:
        weights = str(hyper.get("weights", "default"))
        if same_backbone and "pretrained" in given:
            args.pretrained = given["pretrained"]
        else:  # a run from before backbone_args was recorded: a weights id is a tag, "random-…" or a file id
            args.pretrained = (
                "none" if weights.startswith("random-") else ("default" if args.backbone == "shapes-clip" else weights)
            )
    if same_backbone and given.get("quick"):
        args.quick = True
    args.dataset = info.get("dataset", "imagenet")
    args.device = str(dist.setup(args.device))
    try:
        # Random weights are drawn under the OTI run's seed: φ must see the CLIP its tokens came from.
        backbone_args = argparse.Namespace(**{**vars(args), "seed": given.get("seed", args.seed)})
        backbone = load_backbone_from_args(backbone_args)
        vocabulary = vocabulary_from_args(args) if args.lambda_gpt > 0 else None
        if authors:
            import os

            # Their features were made with their --preprocess-type (targetpad by default): so are ours.
            kind = str(recorded.hyperparameters.get("preprocess_type", "targetpad"))
            # Loader workers pay for their start-up only on many images.
            workers = min(8, os.cpu_count() or 1) if len(recorded.names) >= 1024 else 0
            backbone = configure_images(backbone, kind, workers)
            _say(
                f"the authors' OTI tokens in {args.oti_tokens}: features and concepts of {args.images} "
                f"-> {Path(args.out) / IMPORTED}"
            )
            args.oti_tokens = str(
                import_authors_oti(
                    args.oti_tokens,
                    backbone,
                    ImageFolderSource(args.images),
                    vocabulary,
                    Path(args.out) / IMPORTED,
                    args.top_concepts,
                    progress=not args.no_progress,
                )
            )
            hyper = read_manifest(args.oti_tokens)["hyperparameters"]
        if vocabulary is None and args.lambda_gpt > 0:
            _say("no --concepts/--phrases: φ trains without its regulariser (lambda_gpt 0)")
        elif vocabulary is not None and vocabulary_fingerprint(vocabulary) != hyper.get("vocabulary"):
            _say("note: this vocabulary differs from the one the OTI run associated concepts with")
        loss = PhiLossConfig(
            lambda_distil=args.lambda_distil,
            lambda_gpt=args.lambda_gpt if vocabulary else 0.0,
            temperature=args.temperature,
            top_concepts=args.top_concepts,
        )
        config = PhiTrainConfig(
            epochs=args.phi_epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            loss=loss,
            dropout=args.dropout,
            seed=args.seed,
            precision=args.precision,
        )
        # Rank 0 validates; the others only need to know that it does (they receive its metrics).
        validate = _validator(args, backbone, vocabulary) if dist.is_main() else None
        if dist.broadcast_object(validate is not None) and validate is None:
            validate = _no_validation
        result = run_train_phi(
            backbone,
            args.oti_tokens,
            args.out,
            config,
            vocabulary.phrase_bank if vocabulary else None,
            validate=validate,
            resume=args.resume,
            force=args.force,
            progress=not args.no_progress,
        )
        if dist.is_main():
            last = result.history[-1] if result.history else {}
            if args.json:
                print_json(last)
            else:
                print(
                    f"φ after {last.get('epoch', 0)} epochs: "
                    + ", ".join(f"{k} {v:.4f}" for k, v in last.items() if isinstance(v, float))
                )
                print(f"wrote {args.out}/phi.pt and {args.out}/history.csv")
        return 0
    finally:
        dist.teardown()
