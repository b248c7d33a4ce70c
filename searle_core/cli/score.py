"""``searle score circo``: score a CIRCO validation prediction file like the evaluation server."""

from __future__ import annotations

import argparse

from searle_core.cli.common import print_json
from searle_core.metrics.circo_server import format_circo_scores, score_circo


def register(sub) -> None:
    p = sub.add_parser("score", help="score a prediction file (CIRCO validation)")
    which = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    c = which.add_parser("circo", help="CIRCO validation: mAP@5/10/25/50, Recall@5/10/25/50, per-aspect mAP@10")
    c.add_argument("--annotations", required=True, help="CIRCO annotations/val.json")
    c.add_argument("--predictions", required=True, help="JSON {query id: [top-50 image ids]}")
    c.add_argument("--json", action="store_true", help="print one JSON object on one line (unrounded)")
    c.set_defaults(func=run_circo)


def run_circo(args: argparse.Namespace) -> int:
    scores = score_circo(args.annotations, args.predictions)
    print_json(scores) if args.json else print(format_circo_scores(scores))
    return 0
