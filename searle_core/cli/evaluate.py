"""``searle evaluate``, ``searle table`` and ``searle submission``: methods on benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_backbone_options, format_metrics, load_backbone_from_args, print_json

DATASETS = ("shapes", "cirr", "fashioniq", "circo")


def add_benchmark_options(p: argparse.ArgumentParser, default_split: str = "val") -> None:
    p.add_argument("--dataset", default="shapes", choices=DATASETS)
    p.add_argument("--dataset-path", default=None, help="dataset folder in the authors' layout (real datasets)")
    p.add_argument("--split", default=default_split)
    add_backbone_options(p)
    p.add_argument("--phi-checkpoint", default=None, help="φ checkpoint (authors' SEARLE_ViT-B32.pt or one of ours)")
    p.add_argument("--oti-steps", type=int, default=350, help="OTI steps (paper: 350)")
    p.add_argument("--oti-batch-size", type=int, default=32)
    p.add_argument("--concepts", default=None, help="concept CSV (Open Images V7 class descriptions)")
    p.add_argument("--phrases", default=None, help="phrase bank pickle {concept: [phrases]}; without it, "
                                                   "offline template phrases are generated")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-progress", action="store_true")


def register(sub) -> None:
    from ..methods import BASE_METHODS

    e = sub.add_parser("evaluate", help="run one method on a benchmark and print its metrics")
    add_benchmark_options(e)
    e.add_argument("--method", default="searle-oti", help=f"one of {', '.join(BASE_METHODS)} or a baseline")
    e.add_argument("--json", action="store_true", help="one JSON object on one line, keyed as printed")
    e.set_defaults(func=run_evaluate)

    s = sub.add_parser("submission", help="write test-server files (CIRR, CIRCO)")
    add_benchmark_options(s, default_split="test")
    s.add_argument("--method", default="searle-oti")
    s.add_argument("--out", required=True, help="output file (CIRCO) or folder (CIRR: two files)")
    s.set_defaults(func=run_submission)


def benchmark_from_args(args: argparse.Namespace, backbone=None):
    from ..datasets import load_benchmark

    if args.dataset == "shapes":
        return load_benchmark("shapes", split=args.split, quick=args.quick)
    if not args.dataset_path:
        raise ValueError(f"--dataset {args.dataset} needs --dataset-path (the folder with its annotations and images)")
    return load_benchmark(args.dataset, args.dataset_path, args.split)


def context_from_args(args: argparse.Namespace, backbone):
    from ..inversion import OTIConfig, load_phi
    from ..methods import MethodContext, Vocabulary

    if args.dataset == "shapes" or args.backbone == "shapes-clip":
        from ..world import world_vocabulary
        vocab = world_vocabulary()
    elif args.concepts:
        from ..phrases import filter_phrase_bank, load_concepts_csv, load_phrase_pickle, template_phrases
        concepts = load_concepts_csv(args.concepts)
        bank = load_phrase_pickle(args.phrases) if args.phrases else template_phrases(concepts)
        bank = filter_phrase_bank(bank)
        vocab = Vocabulary([c for c in concepts if c in bank], bank)
    else:
        vocab = None
    phi = load_phi(args.phi_checkpoint, backbone) if args.phi_checkpoint else None
    oti_config = OTIConfig(steps=args.oti_steps, lambda_gpt=0.5 if vocab else 0.0)
    return MethodContext(vocabulary=vocab, oti_config=oti_config, oti_batch_size=args.oti_batch_size, phi=phi,
                         seed=args.seed, progress=not args.no_progress)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..pipeline import evaluate

    backbone = load_backbone_from_args(args)
    bench = benchmark_from_args(args, backbone)
    if any(q.target is None for q in bench.queries):
        raise ValueError(f"{args.dataset} {args.split} has no ground truths (a test split): use `searle submission`")
    result = evaluate(args.method, bench, backbone, context_from_args(args, backbone))
    if args.json:
        print_json(result.metrics)
    else:
        print(f"{args.method} on {args.dataset} {args.split} ({len(bench.queries)} queries, "
              f"{len(bench.gallery)} gallery images, backbone {args.backbone}; {result.seconds:.1f} s)")
        print(format_metrics(result.metrics))
    return 0


def run_submission(args: argparse.Namespace) -> int:
    from ..pipeline import evaluate
    from ..submission import write_circo_submission, write_cirr_submission

    if args.dataset not in ("cirr", "circo"):
        raise ValueError("test-server files exist for --dataset cirr and circo only")
    backbone = load_backbone_from_args(args)
    bench = benchmark_from_args(args, backbone)
    result = evaluate(args.method, bench, backbone, context_from_args(args, backbone))
    ids = [q.query_id for q in bench.queries]
    if args.dataset == "circo":
        path = write_circo_submission(args.out, dict(zip(ids, result.rankings)), bench.queries)
        print(f"wrote {path}")
        return 0
    subset = {}
    for q, ranking in zip(bench.queries, result.rankings):
        members = set(q.subset or ()) - {q.reference}
        subset[q.query_id] = [n for n in ranking if n in members][:3]
    paths = write_cirr_submission(Path(args.out), dict(zip(ids, result.rankings)), subset, queries=bench.queries)
    print("wrote " + ", ".join(map(str, paths if isinstance(paths, (list, tuple)) else [paths])))
    return 0
