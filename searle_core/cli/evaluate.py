"""``searle evaluate`` and ``searle submission``: one method on a benchmark (``searle table`` shares the
options). Gallery features (cached), the method's query features, rankings (CIRR without the reference
image), then the validation metrics or the test-server files."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from searle_core.baselines.lincir import LincirConfig, benchmark_modality_gap, caption_corpus
from searle_core.cli.common import (
    add_image_options,
    add_run_options,
    format_metrics,
    load_backbone_from_args,
    print_json,
    settings_from_args,
)
from searle_core.datasets import ImageFolderSource, generated_benchmark
from searle_core.infra.errors import InputError
from searle_core.infra.files import check_output, check_writable
from searle_core.inversion.phi_files import check_provenance, load_phi
from searle_core.jobs.authors_oti import load_reference_tokens
from searle_core.jobs.evaluation import evaluate
from searle_core.jobs.from_settings import open_benchmark, open_vocabulary
from searle_core.jobs.run_folder import read_manifest
from searle_core.methods.context import MethodContext
from searle_core.methods.pipeline import BASE_METHODS, gallery_features
from searle_core.report.submission import TOP_K, cirr_subset_rankings, write_circo_submission, write_cirr_submission
from searle_core.report.table import settings_line, settings_record
from searle_core.settings import METHOD_PREPROCESS, RunSettings, add_setting, nonnegative_int, positive_int
from searle_core.world.setup import WORLD_PHI_EPOCHS, WORLD_PHI_IMAGES, resolved_oti_batch_size, world_lincir_config

DATASETS = ("shapes", "cirr", "fashioniq", "circo")
#: Settings these commands take as given, ``None`` when not (the method's or the dataset's default).
OPTIONAL = ("phi_checkpoint", "oti_tokens", "concepts", "phrases", "captioner", "captions", "lincir_checkpoint")


def add_benchmark_options(p: argparse.ArgumentParser, split: str = "val") -> None:
    """The options of a run on a benchmark, each a :class:`~searle_core.settings.RunSettings` field."""
    add_image_options(p, DATASETS, split)
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass for features")
    for name in OPTIONAL:
        add_setting(p, name, default=None)
    add_setting(p, "unlabeled", default=None, help="image folder Pic2Word's and PALAVRA's networks learn from")
    add_setting(p, "oti_steps")
    add_setting(p, "oti_batch_size", type=positive_int)
    add_setting(p, "phi_epochs", default=None, help=f"φ's epochs when trained here (shapes: {WORLD_PHI_EPOCHS})")
    add_setting(p, "phi_images", type=nonnegative_int, default=None, help=f"φ's images (0: all; {WORLD_PHI_IMAGES})")
    add_setting(p, "precision")
    other = "use a --phi-checkpoint or --oti-tokens made with other CLIP weights (said in the results)"
    p.add_argument("--accept-other-weights", action="store_true", help=other)
    for name in ("lincir_keywords", "lincir_recipe", "lincir_precision"):
        add_setting(p, name, default=None)
    for name in ("lincir_steps", "lincir_batch_size"):
        add_setting(p, name, type=positive_int)


def register(sub) -> None:
    e = sub.add_parser("evaluate", help="run one method on a benchmark and print its metrics")
    add_benchmark_options(e)
    e.add_argument("--method", default="searle-oti", help=f"one of {', '.join(BASE_METHODS)} or a baseline")
    add_run_options(e, "one JSON object on one line, keyed as printed")
    e.set_defaults(func=run_evaluate)

    s = sub.add_parser("submission", help="write test-server files (CIRR, CIRCO)")
    add_benchmark_options(s, split="test")
    s.add_argument("--method", default="searle-oti")
    s.add_argument("--out", required=True, help="output file (CIRCO) or folder (CIRR: two files)")
    s.add_argument("--name", default=None, help="CIRR run name in the file names (default: the method)")
    s.add_argument("--force", action="store_true", help="replace existing submission files")
    add_run_options(s, json_help=None)
    s.set_defaults(func=run_submission)


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def context_from_args(args: argparse.Namespace, backbone) -> MethodContext:
    """Method resources from the settings: vocabulary, φ, OTI settings and the baselines' inputs."""
    s = settings_from_args(args)
    vocab = open_vocabulary(s, _note)
    methods = f"{getattr(args, 'method', '')},{getattr(args, 'methods', '')}"
    if vocab is None and not s.oti_tokens and "searle-oti" in methods:
        _note(
            "no --concepts: OTI runs without its phrase regulariser (λ_gpt = 0); the paper uses the Open "
            "Images V7 class names (--concepts oidv7-class-descriptions.csv) and GPT phrases (--phrases)"
        )
    ctx = MethodContext(
        vocabulary=vocab,
        oti_config=s.oti_config(vocab is not None),
        oti_batch_size=resolved_oti_batch_size(s),
        phi=load_phi(s.phi_checkpoint, backbone, accept=args.accept_other_weights) if s.phi_checkpoint else None,
        seed=s.seed,
        progress=s.progress,
        # None: the recipe's default for the dataset (the shapes profile's on shapes).
        phi_epochs=getattr(args, "phi_epochs", None),
        phi_images=getattr(args, "phi_images", None),
        captioner=s.captioner or None,
        unlabeled=ImageFolderSource(s.unlabeled) if s.unlabeled else None,
        captions_corpus=caption_corpus(s.captions) if s.captions else None,
        checkpoints={"lincir": s.lincir_checkpoint} if s.lincir_checkpoint else {},
        lincir_config=lincir_from_settings(s),
    )
    if s.oti_tokens:
        recorded = (read_manifest(s.oti_tokens) or {}).get("hyperparameters") if Path(s.oti_tokens).is_dir() else None
        check_provenance(recorded, backbone, f"--oti-tokens {s.oti_tokens}", args.accept_other_weights)
        ctx.give_tokens("searle-oti", load_reference_tokens(s.oti_tokens))
    return ctx


def lincir_from_settings(s: RunSettings) -> LincirConfig | None:
    """The recipe ``--lincir-*`` ask for, else ``None``: the dataset's (the world's, else train_phi.py's defaults)."""
    changes = {n: v for n in ("keywords", "steps", "batch_size", "precision") if (v := getattr(s, f"lincir_{n}"))}
    if s.lincir_recipe or changes:
        base = (
            LincirConfig.official if s.lincir_recipe else world_lincir_config if s.dataset == "shapes" else LincirConfig
        )
        return dataclasses.replace(base(seed=s.seed), **changes)
    return None


def benchmark_from_args(args: argparse.Namespace):
    """The benchmark the options name, missing images handled as ``--on-missing``/``--check-images`` say."""
    return open_benchmark(settings_from_args(args), args.on_missing, args.check_images, _note)


def load_run(args: argparse.Namespace):
    """The backbone (with its image pipeline), the benchmark and the method context."""
    bench = benchmark_from_args(args)  # first: a wrong folder fails before a large model loads
    if not getattr(args, "preprocess", "x") and not generated_benchmark(args.dataset):  # the method's authors'
        args.preprocess = METHOD_PREPROCESS.get(getattr(args, "method", ""))
    backbone = load_backbone_from_args(args)
    return backbone, bench, context_from_args(args, backbone)


def _evaluate(args: argparse.Namespace, backbone, bench, ctx):
    """Gallery features (timed apart), then ``args.method``; returns (result, gallery seconds)."""
    start = time.perf_counter()
    gallery = gallery_features(backbone, bench, ctx.progress, batch_size=args.batch_size)
    gallery_s = time.perf_counter() - start
    return evaluate(args.method, bench, backbone, ctx, gallery), gallery_s


def _said(args, backbone, bench, result, gallery_s: float, settings: dict) -> str:
    return (
        f"{args.method} on {args.dataset} {bench.split} ({len(bench.queries)} queries, {len(bench.gallery)} gallery "
        f"images; backbone {args.backbone} ({backbone.pretrained or 'random weights'}), preprocess "
        f"{settings['preprocess']}; gallery features {gallery_s:.1f} s, queries {result.seconds:.1f} s)"
    )


def run_evaluate(args: argparse.Namespace) -> int:
    backbone, bench, ctx = load_run(args)
    if any(q.target is None for q in bench.queries):
        hint = "use `searle submission` for the evaluation server"
        if args.dataset == "fashioniq":
            hint = "FashionIQ is scored on its validation split (--split val), as in the paper"
        raise InputError(f"{args.dataset} {bench.split} has no ground truths (a test split): {hint}")
    result, gallery_s = _evaluate(args, backbone, bench, ctx)
    if args.json:
        print_json(result.metrics)
        return 0
    settings = settings_record(backbone, ctx)
    print(_said(args, backbone, bench, result, gallery_s, settings))
    print(format_metrics(result.metrics))
    if args.method == "lincir" and (gap := benchmark_modality_gap(backbone, bench, ctx.networks["lincir"])):
        print(
            f"modality gap: cosine between φ's tokens of a reference image and of its caption "
            f"{gap['token_cosine']:.3f} (CLIP's image-caption feature cosine {gap['feature_cosine']:.3f}; "
            f"{gap['images']} images)"
        )
    print(settings_line(settings))
    return 0


def run_submission(args: argparse.Namespace) -> int:
    if args.dataset not in ("cirr", "circo"):
        raise InputError("test-server files exist for --dataset cirr and circo only")
    # Before any feature or OTI step: a read-only --out would otherwise fail only after every query.
    out, name = Path(args.out), args.name or args.method
    if "/" in name or name.startswith("."):
        raise InputError(f"--name {name!r}: expected a plain name (no '/', not starting with '.')")
    check_writable(out if args.dataset == "cirr" else out.parent, "--out folder")
    files = (
        [out] if args.dataset == "circo" else [out / f"{k}_submission_{name}.json" for k in ("recall", "recall_subset")]
    )
    inputs = [getattr(args, k, None) for k in ("dataset_path", *OPTIONAL, "unlabeled")]
    for path in files:
        check_output(path, "--out", args.force, inputs)
    backbone, bench, ctx = load_run(args)
    if len(bench.gallery) < TOP_K + (args.dataset == "cirr"):  # found before OTI, not after (CIRR: reference out)
        raise InputError(f"{bench.split}: {len(bench.gallery)} gallery images; the server takes {TOP_K} per query")
    result, gallery_s = _evaluate(args, backbone, bench, ctx)
    rankings = dict(zip([q.query_id for q in bench.queries], result.rankings))
    if args.dataset == "circo":
        paths = [write_circo_submission(args.out, rankings, bench.queries)]
    else:
        subset = cirr_subset_rankings(bench.queries, result.rankings)
        paths = write_cirr_submission(out, rankings, subset, name=name, queries=bench.queries)
    settings = settings_record(backbone, ctx)
    print(_said(args, backbone, bench, result, gallery_s, settings))
    print(settings_line(settings))
    print("wrote " + ", ".join(map(str, paths)))
    return 0
