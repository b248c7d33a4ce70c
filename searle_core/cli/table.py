"""``searle table``: every method of the paper's tables on one benchmark, printed and written."""

from __future__ import annotations

import argparse
from pathlib import Path

from searle_core.cli.common import add_run_options, print_json
from searle_core.cli.evaluate import add_benchmark_options, load_run
from searle_core.infra.errors import InputError
from searle_core.metrics.significance import compare_methods, to_markdown, write_differences
from searle_core.report.table import (
    DISPLAY_NAMES,
    TABLE_METHODS,
    evaluate_methods,
    settings_line,
    to_dict,
    to_text,
    write_table,
)
from searle_core.settings import positive_int


def register(sub) -> None:
    t = sub.add_parser("table", help="every method (baselines and SEARLE) on one benchmark: one table, CSV + Markdown")
    add_benchmark_options(t)
    t.add_argument("--methods", default=",".join(TABLE_METHODS), help="comma-separated rows, in order")
    t.add_argument("--out", default="runs/tables", help="folder for {dataset}-{split}.csv and .md")
    t.add_argument(
        "--compare-to",
        default=None,
        help="paired bootstrap of every method against this one on the headline metric "
        "(default: searle-oti when the table has it; 'none' to skip)",
    )
    t.add_argument("--bootstrap", type=positive_int, default=10_000, help="bootstrap resamples (default: 10000)")
    add_run_options(t, "also print the table as one JSON line")
    t.set_defaults(func=run_table)


def run_table(args: argparse.Namespace) -> int:
    if not (methods := [m.strip() for m in args.methods.split(",") if m.strip()]):  # else an empty table replaced one
        raise InputError(f"--methods {args.methods!r} names no method; expected some of {', '.join(TABLE_METHODS)}")
    reference = args.compare_to or ("searle-oti" if "searle-oti" in methods else "none")
    if reference != "none" and reference not in methods:
        raise InputError(
            f"--compare-to {args.compare_to!r} is not one of the table's methods ({', '.join(methods)}); "
            "name one of them or 'none'"
        )
    backbone, bench, ctx = load_run(args)
    # LinCIR trains on a text corpus: without one its row is left out with a note, rather than stopping
    # the table after the other rows were computed.
    no_corpus = bench.text_corpus is None and ctx.captions_corpus is None and "lincir" not in ctx.checkpoints
    skip = {"lincir": "trains on captions: pass --captions FILE (or --lincir-checkpoint)"} if no_corpus else {}
    log = None if args.json else print
    table = evaluate_methods(bench, backbone, methods, ctx, log=log, phi_distilled=not args.phi_checkpoint, skip=skip)
    stem = f"{args.dataset}-{args.split}" + ("-quick" if args.quick and args.dataset == "shapes" else "")
    written = list(write_table(table, Path(args.out), stem))
    differences = []
    if reference != "none" and len(table.rankings) > 1:
        names = {**DISPLAY_NAMES, **{row.method: row.name for row in table.rows}}  # variants labelled
        differences = compare_methods(bench, table.rankings, reference, n_resamples=args.bootstrap, seed=args.seed)
        written.append(write_differences(differences, Path(args.out) / f"{stem}-vs-{reference}", names))
    if args.json:
        print_json(to_dict(table))
        return 0
    print(f"\n{args.dataset} {args.split}: {len(bench.queries)} queries, {len(bench.gallery)} gallery images")
    print(to_text(table))
    print(settings_line(table.settings))
    if differences:
        print(f"\npaired bootstrap over the queries ({args.bootstrap} resamples): 'clear' = the interval excludes zero")
        print(to_markdown(differences, names))
    print("wrote " + ", ".join(map(str, written)))
    return 0
