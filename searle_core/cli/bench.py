"""``searle bench oti``, ``features`` and ``world``: speed measurements (benchmarks, not tests).

searle bench oti --backbone ViT-B-32 --pretrained none --device cpu --steps 3 --threads 1
searle bench features --backbone ViT-B-32 --pretrained none --device cpu --images 64 --workers 0,2
searle bench world --quick --threads 2      # train the world CLIP afresh: accuracy table + time
searle bench oti-batch --sizes 32,128       # OTI on the world's references at each batch size
"""

from __future__ import annotations

import argparse

from searle_core.cli.common import add_backbone_options, load_backbone_from_args, print_json
from searle_core.clip.backbone import load_backbone
from searle_core.clip.weights import InMemoryWeights
from searle_core.infra.errors import count_type, positive_int, seed_int
from searle_core.infra.settings import add_renamed
from searle_core.jobs.timing import (
    bench_feature_extraction,
    bench_oti,
    bench_oti_batch_sizes,
    bench_retrieval,
    write_bench_images,
)
from searle_core.method.oti import OTIConfig
from searle_core.notebook.study import open_study
from searle_core.world import ShapesWorld
from searle_core.world.world_clip import WorldCLIPConfig, world_clip_weights
from searle_core.world.world_clip_report import format_report, held_out_names, training_log, zero_shot_report


def register(sub) -> None:
    b = sub.add_parser("bench", help="speed benchmarks: OTI against the reference recipe, feature extraction")
    which = b.add_subparsers(dest="bench_command", required=True, metavar="WHAT")

    o = which.add_parser("oti", help="the project's OTI vs a plain reference recipe: images/s, ratio, max |Δ| tokens")
    _common(o)
    o.add_argument("--steps", type=count_type("steps", "--steps"), default=5, help="OTI steps timed for both recipes")
    o.add_argument("--batch-size", type=positive_int, default=32, help="images optimised together (paper: 32)")
    o.add_argument(
        "--full-steps", type=positive_int, default=350, help="steps of a real run, to express images/s (paper: 350)"
    )
    o.add_argument(
        "--n-images", type=positive_int, default=100_000, help="images of the projected run (ImageNet1K test: 100,000)"
    )
    add_renamed(o, "--images", "n_images", "--n-images", type=positive_int)
    o.set_defaults(func=run_bench_oti)

    ob = which.add_parser(
        "oti-batch",
        help="OTI of the shapes world's references at several batch sizes: images/s, ratio to the first, final losses",
    )
    ob.add_argument("--quick", action="store_true", help="the CI-sized world and its CLIP")
    ob.add_argument(
        "--sizes", type=_sizes, default=(32, 128), help="batch sizes, comma-separated (the first is the baseline)"
    )
    ob.add_argument("--n-images", type=positive_int, default=256, help="reference images inverted at each size")
    ob.add_argument("--steps", type=count_type("steps", "--steps"), default=20, help="OTI steps")
    ob.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    ob.add_argument("--seed", type=seed_int, default=42)
    ob.add_argument("--json", action="store_true", help="one JSON object on one line")
    ob.set_defaults(func=run_bench_oti_batch)

    f = which.add_parser(
        "features",
        help="gallery feature extraction images/s (with loader workers) and the ranking step on a 120k-image gallery",
    )
    _common(f)
    f.add_argument("--n-images", type=positive_int, default=64, help="JPEG files written and encoded")
    add_renamed(f, "--images", "n_images", "--n-images", type=positive_int)
    f.add_argument("--batch-size", type=positive_int, default=32)
    f.add_argument("--workers", default="0,2", help="data-loader worker counts to time, comma-separated")
    f.add_argument(
        "--gallery", type=positive_int, default=120_000, help="gallery size for the ranking step (CIRCO: ~120k)"
    )
    f.add_argument("--queries", type=positive_int, default=800, help="queries ranked (CIRCO test: 800)")
    f.set_defaults(func=run_bench_features)

    w = which.add_parser(
        "world",
        help="train the world CLIP afresh (never from the cache): zero-shot accuracy "
        "per attribute on held-out renders, and the training time",
    )
    w.add_argument("--quick", action="store_true", help="the CI-sized recipe")
    w.add_argument(
        "--steps", type=count_type("steps", "--steps"), default=None, help="override the recipe's optimiser steps"
    )
    w.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    w.add_argument("--json", action="store_true", help="one JSON object on one line")
    w.set_defaults(func=run_bench_world)


def _common(p: argparse.ArgumentParser) -> None:
    add_backbone_options(p)
    # Speed does not depend on the weights: a real-size randomly initialised model works offline.
    p.set_defaults(backbone="ViT-B-32", pretrained="none")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 avoids OpenMP slow-downs on a busy machine)",
    )
    p.add_argument("--seed", type=seed_int, default=42)
    p.add_argument("--json", action="store_true", help="one JSON object on one line")


def _sizes(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated integers >= 1."""
    sizes = tuple(positive_int(s) for s in text.split(",") if s.strip())
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected batch sizes such as 32,128, got {text!r}")
    return sizes


def _setup(args: argparse.Namespace):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    return load_backbone_from_args(args)


def run_bench_oti(args: argparse.Namespace) -> int:

    backbone = _setup(args)
    result = bench_oti(
        backbone, steps=args.steps, batch_size=args.batch_size, seed=args.seed, full_steps=args.full_steps
    )
    out = result.as_dict()
    out["threads"] = __import__("torch").get_num_threads()
    out["projected_hours"] = args.n_images / result.project_images_per_s / 3600
    if args.json:
        print_json(out)
        return 0
    print(
        f"OTI, {result.backbone} on {result.device} ({out['threads']} threads), batch {result.images}, "
        f"{result.steps} steps timed; images/s of a {args.full_steps}-step run:"
    )
    print(f"  reference recipe  {result.reference_images_per_s:10.4f} images/s  ({result.reference_seconds:.1f} s)")
    print(f"  project           {result.project_images_per_s:10.4f} images/s  ({result.project_seconds:.1f} s)")
    print(f"  ratio             {result.ratio:10.2f} x")
    print(f"  max |Δ| tokens    {result.max_abs_diff:10.2e}")
    if result.peak_memory_mb is not None:
        print(f"  peak GPU memory   {result.peak_memory_mb:10.0f} MiB")
    print(f"  projected time for {args.n_images} images: {out['projected_hours']:.1f} h on one such device")
    return 0


def run_bench_oti_batch(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    study = open_study("shapes", quick=args.quick, device="cpu", seed=args.seed)
    names = study.bench.reference_names()[: args.n_images]
    features = study.features(names)
    config = OTIConfig(steps=args.steps)
    vocabulary = study.vocabulary
    concepts = vocabulary.associate(study.backbone, features, config.top_concepts)
    rows = bench_oti_batch_sizes(
        study.backbone, features, names, concepts, vocabulary.phrase_bank, config, args.sizes, args.seed
    )
    for row in rows:
        row["ratio"] = rows[0]["seconds"] / row["seconds"]
    out = {"images": len(names), "steps": args.steps, "threads": torch.get_num_threads(), "rows": rows}
    if args.json:
        print_json(out)
        return 0
    print(f"OTI of {len(names)} world references, {args.steps} steps, {out['threads']} threads, CPU:")
    print("  batch   seconds   images/s   ratio   final cos loss   final total loss")
    for r in rows:
        print(
            f"  {r['batch_size']:5d}  {r['seconds']:8.2f}  {r['images_per_s']:9.1f}  {r['ratio']:5.2f}x"
            f"  {r['cos']:15.4f}  {r['total']:17.4f}"
        )
    return 0


def run_bench_features(args: argparse.Namespace) -> int:
    import tempfile

    backbone = _setup(args)
    workers = tuple(int(w) for w in args.workers.split(",") if w.strip())
    with tempfile.TemporaryDirectory(prefix="searle-bench-") as folder:
        write_bench_images(folder, args.n_images, seed=args.seed)
        per_workers = bench_feature_extraction(backbone, folder, workers, args.batch_size)
    retrieval = bench_retrieval(args.gallery, args.queries, backbone.embed_dim, seed=args.seed)
    out = {
        "backbone": backbone.name,
        "device": str(backbone.device),
        "images": args.n_images,
        **{f"features_images_per_s_workers_{w}": v for w, v in per_workers.items()},
        **retrieval,
    }
    if args.json:
        print_json(out)
        return 0
    print(f"gallery features, {backbone.name} on {backbone.device}, {args.n_images} JPEGs (500x375, targetpad):")
    for w, v in per_workers.items():
        print(f"  {w} loader workers  {v:8.1f} images/s")
    print(f"ranking {args.queries} queries against {args.gallery} gallery features ({retrieval['dim']}-d, top 50):")
    print(f"  {retrieval['retrieval_seconds']:.2f} s, {retrieval['retrieval_queries_per_s']:.0f} queries/s")
    return 0


def run_bench_world(args: argparse.Namespace) -> int:
    import dataclasses
    import tempfile

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    config = WorldCLIPConfig.quick() if args.quick else WorldCLIPConfig()
    if args.steps:
        config = dataclasses.replace(config, steps=args.steps)
    with tempfile.TemporaryDirectory(prefix="searle-bench-world-") as folder:
        weights = world_clip_weights(cache_dir=folder, config=config, progress=not args.json)
        in_memory = isinstance(weights, InMemoryWeights)  # the folder could not be written: said, going on
        log = weights.log if in_memory else training_log(weights)
        backbone = load_backbone("shapes-clip", weights if in_memory else str(weights), device="cpu")
        world = ShapesWorld(config.world)
        report = zero_shot_report(backbone, world, held_out_names(world))
    if args.json:
        print_json(
            {
                "zero_shot": report,
                "train_seconds": log["seconds"],
                "threads": log["threads"],
                "steps": config.steps,
                "batch_size": config.batch_size,
                "quick": args.quick,
            }
        )
        return 0
    print(f"world CLIP ({'quick' if args.quick else 'default'} recipe), trained afresh on the CPU:")
    print(format_report(report, log))
    return 0
