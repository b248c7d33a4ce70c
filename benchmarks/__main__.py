"""Speed benchmarks, beside the library (run from the repository's root; ``make bench``):

python -m benchmarks oti --backbone ViT-B-32 --pretrained none --device cpu --steps 3 --threads 1
python -m benchmarks oti --precision fp32,bf16 --steps 3 --threads 1   # precisions against each other
python -m benchmarks phi --precision fp32,bf16 --threads 1             # one epoch of φ's training, the same
python -m benchmarks precision-proof --threads 1   # the world's metrics at fp32 and bf16, paired bootstrap
python -m benchmarks gpu                 # CUDA: OTI per image, the project's recipe vs the authors' (make gpu-bench)
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

from benchmarks.precision_proof import METHODS, ablation_rows, precision_rows, rows_markdown
from benchmarks.timing import (
    PrecisionBenchResult,
    bench_feature_extraction,
    bench_oti,
    bench_oti_batch_sizes,
    bench_oti_precisions,
    bench_phi_precisions,
    bench_retrieval,
    projected_hours,
    write_bench_images,
)
from searle_core.cli import USER_ERRORS
from searle_core.cli.common import add_backbone_options, load_backbone_from_args, positive_ints, print_json
from searle_core.clip.backbone import InMemoryWeights, load_backbone
from searle_core.infra.device import PRECISIONS
from searle_core.infra.errors import InputError
from searle_core.infra.markdown import markdown_table
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


def precision_list(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated training precisions, e.g. fp32,bf16 (the first is the baseline)."""
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values or (bad := [v for v in values if v not in PRECISIONS]):
        raise argparse.ArgumentTypeError(
            f"{bad[0] if values else text!r} is not a precision: expected {', '.join(PRECISIONS)}, comma-separated "
            "(such as fp32,bf16)"
        )
    return tuple(dict.fromkeys(values))


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
    _precision_options(o)
    o.set_defaults(func=run_bench_oti)

    ph = which.add_parser("phi", help="one epoch of φ's training at several precisions: seconds, ratio, agreement")
    _common(ph, backbone=True)
    _precision_options(ph, required=True)
    ph.add_argument("--n-images", type=positive_int, default=256, help="images of the epoch")
    ph.add_argument("--batch-size", type=positive_int, default=64, help="images per step (paper: 256)")
    ph.set_defaults(func=run_bench_phi)

    pp = which.add_parser("precision-proof", help="the world's SEARLE-OTI and SEARLE at each precision, bootstrap")
    pp.add_argument("--precision", type=precision_list, default=("fp32", "bf16"), help="the first is the baseline")
    pp.add_argument("--splits", default="val,test", help="the world's splits, comma-separated")
    pp.add_argument("--methods", default=",".join(METHODS), help="methods, comma-separated")
    pp.add_argument(
        "--oti-steps", type=count_type("steps", "--oti-steps"), default=100, help="OTI steps (the shapes profile's)"
    )
    pp.add_argument(
        "--phi-epochs", type=count_type("epochs", "--phi-epochs"), default=70, help="φ's epochs (the shapes profile's)"
    )
    pp.add_argument("--bootstrap", type=positive_int, default=10_000, help="bootstrap resamples")
    pp.add_argument("--ablations", action="store_true", help="notebook 5's readings at each precision instead")
    pp.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    pp.add_argument("--seed", type=seed_int, default=42)
    pp.add_argument("--json", action="store_true", help="one JSON object on one line")
    pp.set_defaults(func=run_precision_proof)

    g = which.add_parser("gpu", help="CUDA: OTI per image, the project's recipe vs the authors', projected GPU-hours")
    g.add_argument("--backbones", default="ViT-B-32,ViT-L-14", help="open_clip models, random weights")
    g.add_argument("--device", default="cuda", help="a CUDA device")
    g.add_argument("--steps", type=STEPS, default=20, help="OTI steps timed for both recipes")
    g.add_argument("--batch-size", type=positive_int, default=32, help="images optimised together (the authors': 32)")
    g.add_argument("--full-steps", type=positive_int, default=OTIConfig.steps, help="steps of a real run")
    g.add_argument("--n-images", type=positive_int, default=100_000, help="images of the projected run (ImageNet1K)")
    g.add_argument("--seed", type=seed_int, default=42)
    g.add_argument("--json", action="store_true", help="one JSON object on one line")
    g.set_defaults(func=run_bench_gpu, threads=None)

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


def _precision_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--precision",
        type=precision_list,
        default=("fp32", "bf16") if required else None,
        help="training precisions timed against each other in one run, interleaved, e.g. fp32,bf16 (the first is "
        "the baseline)" + ("" if required else "; given, replaces the comparison with the reference recipe"),
    )
    p.add_argument("--repeats", type=positive_int, default=2, help="interleaved rounds (the median is reported)")


def _threads(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    return torch.get_num_threads()


def run_bench_oti(args: argparse.Namespace) -> int:
    threads = _threads(args)
    backbone = load_backbone_from_args(args)
    if args.precision:
        r = bench_oti_precisions(backbone, args.precision, args.steps, args.batch_size, args.seed, args.repeats)
        return _print_precisions(r, args.json)
    r = bench_oti(backbone, steps=args.steps, batch_size=args.batch_size, seed=args.seed, full_steps=args.full_steps)
    out = {**r.as_dict(), "threads": threads, "projected_hours": projected_hours(r.project_images_per_s, args.n_images)}
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


def run_bench_phi(args: argparse.Namespace) -> int:
    _threads(args)
    backbone = load_backbone_from_args(args)
    r = bench_phi_precisions(backbone, args.precision, args.n_images, args.batch_size, args.seed, args.repeats)
    return _print_precisions(r, args.json)


def _print_precisions(r: PrecisionBenchResult, as_json: bool) -> int:
    if as_json:
        print_json(r.as_dict())
        return 0
    detail = ", ".join(f"{k} {v}" for k, v in r.detail.items())
    print(f"{r.what}, {r.backbone} on {r.device} ({r.threads} threads), {detail}; median of {r.repeats} interleaved:")
    print("  precision   seconds    ratio   min cosine   max rel |Δ|")
    for p, seconds in r.seconds.items():
        print(f"  {p:9s}  {seconds:8.3f}  {r.ratio[p]:6.2f}x  {r.cosine[p]:11.6f}  {r.max_rel_diff[p]:12.2e}")
    return 0


def run_precision_proof(args: argparse.Namespace) -> int:
    threads = _threads(args)
    splits = tuple(x.strip() for x in args.splits.split(",") if x.strip())
    methods = tuple(x.strip() for x in args.methods.split(",") if x.strip())
    say = (lambda line: None) if args.json else print
    # open_study sets the threads of its settings: the ones chosen here (torch's, unless --threads)
    sizes = {"oti_steps": args.oti_steps, "phi_epochs": args.phi_epochs, "threads": threads}
    if args.ablations:
        rows = ablation_rows(args.precision, seed=args.seed, log=say, **sizes)
        if args.json:
            print_json({"threads": threads, "precisions": args.precision, "ablations": rows})
        else:
            header = [
                "part",
                "variant",
                "metric",
                *(f"{p}: difference to full, interval, reading" for p in args.precision),
            ]
            print(
                markdown_table(
                    header, [[r.get(h, "") for h in ("part", "variant", "metric", *args.precision)] for r in rows]
                )
            )
        return 0
    rows = precision_rows(
        splits,
        args.precision,
        methods,
        n_resamples=args.bootstrap,
        seed=args.seed,
        log=say,
        **sizes,
    )
    if args.json:
        print_json({"threads": threads, "precisions": args.precision, "rows": rows})
        return 0
    print(f"the shapes world, OTI {args.oti_steps} steps, φ {args.phi_epochs} epochs, {threads} threads:")
    print(rows_markdown(rows, args.precision))
    return 0


def cuda_available() -> bool:
    return torch.cuda.is_available()


def run_bench_gpu(args: argparse.Namespace) -> int:
    """OTI per image on CUDA under the training autocast's default (fp16, the authors'), the library's recipe
    against the reference one (the authors' loop restated), per backbone with random weights."""
    if not cuda_available() or not str(args.device).startswith("cuda"):
        raise InputError(
            f"benchmarks gpu measures CUDA and needs a CUDA device; --device {args.device} is not one here"
        )
    rows = []
    for name in (b.strip() for b in args.backbones.split(",") if b.strip()):
        backbone = load_backbone(name, None, device=args.device)
        r = bench_oti(backbone, args.steps, args.batch_size, args.seed, full_steps=args.full_steps)
        rows.append(
            {
                **r.as_dict(),
                "gpu": torch.cuda.get_device_name(backbone.device),
                "reference_gpu_hours": projected_hours(r.reference_images_per_s, args.n_images),
                "project_gpu_hours": projected_hours(r.project_images_per_s, args.n_images),
            }
        )
        del backbone
        torch.cuda.empty_cache()
    if args.json:
        print_json({"n_images": args.n_images, "full_steps": args.full_steps, "rows": rows})
        return 0
    print(f"OTI on {rows[0]['gpu']}, fp16 autocast, batch {args.batch_size}, {args.steps} steps timed;")
    print(f"projected: {args.n_images} images x {args.full_steps} steps")
    print("  backbone     authors' images/s  project images/s  ratio  authors' GPU-h  project GPU-h  peak MiB")
    for r in rows:
        print(
            f"  {r['backbone']:11s}  {r['reference_images_per_s']:17.2f}  {r['project_images_per_s']:16.2f}"
            f"  {r['ratio']:5.2f}  {r['reference_gpu_hours']:13.2f}  {r['project_gpu_hours']:13.2f}"
            f"  {r['peak_memory_mb']:8.0f}"
        )
    return 0


def run_bench_oti_batch(args: argparse.Namespace) -> int:
    threads = _threads(args)
    study = open_study("shapes", quick=args.quick, device="cpu", seed=args.seed, threads=threads)
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
