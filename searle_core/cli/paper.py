"""``searle paper``: every notebook, headless, under a profile (the project's main command)."""

from __future__ import annotations

import argparse
import time

from searle_core.infra.errors import InputError
from searle_core.notebook.papermill_runner import NOTEBOOKS, run_paper, store_checked_outputs
from searle_core.settings import positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "paper",
        help="run all notebooks with papermill under a profile (quick, shapes, paper): "
        "executed notebooks, recorded numbers, tables and figures",
    )
    p.add_argument(
        "--profile",
        default="shapes",
        help="profile name in notebooks/profiles/ or a YAML file (default: shapes, the full offline run)",
    )
    p.add_argument("--out", default="runs", help="run folder root; notebooks go to OUT/PROFILE/ (default: runs)")
    p.add_argument("--figures", default=None, help="figures folder (default: the profile's, else OUT/PROFILE/figures)")
    p.add_argument("--only", default=None, help="comma-separated notebook stems or numbers to run (e.g. 01,04)")
    p.add_argument(
        "--store-checked-outputs",
        action="store_true",
        help="maintainers: run the notebooks with their defaults and store the outputs of their "
        "# NBVAL_CHECK_OUTPUT cells (all other outputs removed) instead of a profile run",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar over each notebook's cells")
    p.add_argument("--cell-timeout", type=positive_int, default=None, help="seconds a cell may run (default: no limit)")
    p.set_defaults(func=run_paper_command)


def run_paper_command(args: argparse.Namespace) -> int:
    only = None
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        only = [n for n in NOTEBOOKS if any(n == w or n.startswith(w) for w in wanted)]
        if not only:
            raise InputError(f"--only {args.only!r} matches none of {', '.join(NOTEBOOKS)}")
    if args.store_checked_outputs:
        store_checked_outputs(only or NOTEBOOKS)
        return 0
    start = time.perf_counter()
    runs = run_paper(
        args.profile, args.out, args.figures, only, progress=not args.no_progress, cell_timeout=args.cell_timeout
    )
    print(f"profile {args.profile}: {len(runs)} notebooks in {time.perf_counter() - start:.0f} s")
    for run in runs:
        print(f"  {run.name:<32}{run.seconds:7.0f} s  {run.output}")
    return 0
