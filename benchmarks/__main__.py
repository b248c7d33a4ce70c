"""Speed benchmarks, beside the library (run from the repository's root; ``make bench``):

python -m benchmarks oti --backbone ViT-B-32 --pretrained none --device cpu --steps 3 --threads 1
python -m benchmarks features --backbone ViT-B-32 --pretrained none --device cpu --n-images 64 --workers 0,2
python -m benchmarks world --quick --threads 2      # train the world CLIP afresh: accuracy table + time
python -m benchmarks oti-batch --sizes 32,128       # OTI on the world's references at each batch size
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile

import torch

from benchmarks.timing import (
    bench_feature_extraction,
    bench_oti,
    bench_oti_batch_sizes,
    bench_retrieval,
    write_bench_images,
)
from searle_core.cli import USER_ERRORS
from searle_core.cli.common import add_backbone_options, load_backbone_from_args, positive_ints, print_json
from searle_core.clip.backbone import InMemoryWeights, load_backbone
from searle_core.method.oti import OTIConfig
from searle_core.notebook.study import open_study
from searle_core.settings import count_type, positive_int, seed_int
from searle_core.world import ShapesWorld
from searle_core.world.world_clip import (
    WorldCLIPConfig,
    format_report,
    held_out_names,
    training_log,
    world_clip_weights,
    zero_shot_report,
)

STEPS = count_type("steps", "--steps")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks", description="speed benchmarks of searle_core (python -m benchmarks)"
    )
    which = parser.add_subparsers(dest="command", required=True, metavar="WHAT")

    o = which.add_parser("oti", help="the project's OTI vs a plain reference recipe: images/s, ratio, max |Δ| tokens")
    _common(o, backbone=True)
    o.add_argument("--steps", type=STEPS, default=5, help="OTI steps timed for both recipes")
    o.add_argument("--batch-size", type=positive_int, default=32, help="images optimised together (paper: 32)")
    o.add_argument("--full-steps", type=positive_int, default=OTIConfig.steps, help="steps of a real run, for images/s")
    o.add_argument("--n-images", type=positive_int, default=100_000, help="images of the projected run (ImageNet1K)")
    o.set_defaults(func=run_bench_oti)

    ob = which.add_parser("oti-batch", help="OTI of the world's references at several batch sizes: images/s, losses")
    _common(ob)
    ob.add_argument("--sizes", type=positive_ints, default=(32, 128), help="batch sizes (the first is the baseline)")
    ob.add_argument("--n-images", type=positive_int, default=256, help="reference images inverted at each size")
    ob.add_argument("--steps", type=STEPS, default=20, help="OTI steps")
    ob.set_defaults(func=run_bench_oti_batch)

    f = which.add_parser("features", help="gallery feature extraction images/s and ranking on a 120k-image gallery")
    _common(f, backbone=True)
    f.add_argument("--n-images", type=positive_int, default=64, help="JPEG files written and encoded")
    f.add_argument("--batch-size", type=positive_int, default=32)
    f.add_argument("--workers", default="0,2", help="data-loader worker counts to time, comma-separated")
    f.add_argument("--gallery", type=positive_int, default=120_000, help="gallery size for ranking (CIRCO: ~120k)")
    f.add_argument("--queries", type=positive_int, default=800, help="queries ranked (CIRCO test: 800)")
    f.set_defaults(func=run_bench_features)

    w = which.add_parser("world", help="train the world CLIP afresh: zero-shot accuracy per attribute, training time")
    _common(w, seed=False)
    w.add_argument("--steps", type=STEPS, default=None, help="override the recipe's optimiser steps")
    w.set_defaults(func=run_bench_world)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark; bad input is one line on stderr (exit 2), as the ``searle`` command's."""
    logging.basicConfig(level=logging.ERROR)  # open_clip's note on every randomly initialised model
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        print(f"benchmarks {args.command}: error: {err}", file=sys.stderr)
        return 2


def _common(p: argparse.ArgumentParser, backbone: bool = False, seed: bool = True) -> None:
    if backbone:
        add_backbone_options(p)
        # Speed does not depend on the weights: a real-size randomly initialised model works offline.
        p.set_defaults(backbone="ViT-B-32", pretrained="none")
    else:
        p.add_argument("--quick", action="store_true", help="the CI-sized world and its CLIP")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    if seed:
        p.add_argument("--seed", type=seed_int, default=42)
    p.add_argument("--json", action="store_true", help="one JSON object on one line")


def _threads(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    return torch.get_num_threads()


def run_bench_oti(args: argparse.Namespace) -> int:
    threads = _threads(args)
    backbone = load_backbone_from_args(args)
    r = bench_oti(backbone, steps=args.steps, batch_size=args.batch_size, seed=args.seed, full_steps=args.full_steps)
    out = {**r.as_dict(), "threads": threads, "projected_hours": args.n_images / r.project_images_per_s / 3600}
    if args.json:
        print_json(out)
        return 0
    print(f"OTI, {r.backbone} on {r.device} ({threads} threads), batch {r.images}, {r.steps} steps timed; images/s:")
    print(f"  reference recipe  {r.reference_images_per_s:10.4f} images/s  ({r.reference_seconds:.1f} s)")
    print(f"  project           {r.project_images_per_s:10.4f} images/s  ({r.project_seconds:.1f} s)")
    print(f"  ratio             {r.ratio:10.2f} x\n  max |Δ| tokens    {r.max_abs_diff:10.2e}")
    if r.peak_memory_mb is not None:
        print(f"  peak GPU memory   {r.peak_memory_mb:10.0f} MiB")
    print(f"  projected time for {args.n_images} images: {out['projected_hours']:.1f} h on one such device")
    return 0


def run_bench_oti_batch(args: argparse.Namespace) -> int:
    threads = _threads(args)
    study = open_study("shapes", quick=args.quick, device="cpu", seed=args.seed)
    names = study.bench.reference_names()[: args.n_images]
    features, config = study.features(names), OTIConfig(steps=args.steps)
    concepts = study.vocabulary.associate(study.backbone, features, config.top_concepts)
    bank = study.vocabulary.phrase_bank
    rows = bench_oti_batch_sizes(study.backbone, features, names, concepts, bank, config, args.sizes, args.seed)
    for row in rows:
        row["ratio"] = rows[0]["seconds"] / row["seconds"]
    if args.json:
        print_json({"images": len(names), "steps": args.steps, "threads": threads, "rows": rows})
        return 0
    print(f"OTI of {len(names)} world references, {args.steps} steps, {threads} threads, CPU:")
    print("  batch   seconds   images/s   ratio   final cos loss   final total loss")
    for r in rows:
        print(
            f"  {r['batch_size']:5d}  {r['seconds']:8.2f}  {r['images_per_s']:9.1f}  {r['ratio']:5.2f}x"
            f"  {r['cos']:15.4f}  {r['total']:17.4f}"
        )
    return 0


def run_bench_features(args: argparse.Namespace) -> int:
    _threads(args)
    backbone = load_backbone_from_args(args)
    workers = tuple(int(w) for w in args.workers.split(",") if w.strip())
    with tempfile.TemporaryDirectory(prefix="searle-bench-") as folder:
        write_bench_images(folder, args.n_images, seed=args.seed)
        per_workers = bench_feature_extraction(backbone, folder, workers, args.batch_size)
    retrieval = bench_retrieval(args.gallery, args.queries, backbone.embed_dim, seed=args.seed)
    if args.json:
        print_json(
            {
                "backbone": backbone.name,
                "device": str(backbone.device),
                "images": args.n_images,
                **{f"features_images_per_s_workers_{w}": v for w, v in per_workers.items()},
                **retrieval,
            }
        )
        return 0
    print(f"gallery features, {backbone.name} on {backbone.device}, {args.n_images} JPEGs (500x375, targetpad):")
    for w, v in per_workers.items():
        print(f"  {w} loader workers  {v:8.1f} images/s")
    print(f"ranking {args.queries} queries against {args.gallery} gallery features ({retrieval['dim']}-d, top 50):")
    print(f"  {retrieval['retrieval_seconds']:.2f} s, {retrieval['retrieval_queries_per_s']:.0f} queries/s")
    return 0


def run_bench_world(args: argparse.Namespace) -> int:
    _threads(args)
    config = WorldCLIPConfig.quick() if args.quick else WorldCLIPConfig()
    config = dataclasses.replace(config, steps=args.steps) if args.steps else config
    with tempfile.TemporaryDirectory(prefix="searle-bench-world-") as folder:
        weights = world_clip_weights(cache_dir=folder, config=config, progress=not args.json)
        in_memory = isinstance(weights, InMemoryWeights)  # the folder could not be written: said, going on
        log = weights.log if in_memory else training_log(weights)
        backbone = load_backbone("shapes-clip", weights if in_memory else str(weights), device="cpu")
        world = ShapesWorld(config.world)
        report = zero_shot_report(backbone, world, held_out_names(world))
    if args.json:
        out = {"zero_shot": report, "train_seconds": log["seconds"], "threads": log["threads"]}
        print_json({**out, "steps": config.steps, "batch_size": config.batch_size, "quick": args.quick})
        return 0
    print(f"world CLIP ({'quick' if args.quick else 'default'} recipe), trained afresh on the CPU:")
    print(format_report(report, log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
