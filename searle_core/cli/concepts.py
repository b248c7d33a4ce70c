"""``searle concepts associate``: each image's 250 concepts, in the authors' concept file."""

from __future__ import annotations

import argparse
from pathlib import Path

from searle_core.cli.common import add_image_options, load_backbone_from_args
from searle_core.cli.runs import OTI_DATASETS, oti_images
from searle_core.datasets.features import image_features
from searle_core.infra.files import check_output, check_writable
from searle_core.inversion.concepts import STORED_TOP_K, Vocabulary, authors_concepts_file_name, write_concepts_csv
from searle_core.inversion.phrases import load_concepts_csv
from searle_core.settings import add_setting, positive_int


def register(sub) -> None:
    p = sub.add_parser("concepts", help="concept files (OTI's and φ's regulariser inputs)")
    which = p.add_subparsers(dest="concepts_command", required=True, metavar="ACTION")
    a = which.add_parser(
        "associate",
        help="each image's top concepts as the authors' image_concepts_association.py "
        "(writes {model}_top_250_ensembling_image_texts.csv)",
    )
    add_image_options(a, OTI_DATASETS, dataset="the images: as `searle oti` takes them")
    add_setting(a, "seed")
    a.add_argument("--concepts", required=True, help="Open Images' oidv7-class-descriptions.csv (its DisplayName)")
    a.add_argument("--top-k", type=positive_int, default=STORED_TOP_K, help="concepts per image (theirs: 250)")
    a.add_argument("--out", required=True, help="folder of the concept file")
    a.add_argument("--force", action="store_true", help="replace an existing concept file in --out")
    a.add_argument("--no-progress", action="store_true")
    a.set_defaults(func=run_associate)


def run_associate(args: argparse.Namespace) -> int:
    backbone = load_backbone_from_args(args)
    path = Path(args.out) / authors_concepts_file_name(backbone.name, args.top_k)
    check_output(path, "--out", args.force, (args.concepts, args.dataset_path))  # before any feature
    check_writable(args.out, "--out folder")
    source, names, _ = oti_images(args)
    vocabulary = Vocabulary(load_concepts_csv(args.concepts), {})
    features = image_features(backbone, source, list(names), progress=not args.no_progress)
    write_concepts_csv(path, names, vocabulary.associate(backbone, features, args.top_k))
    print(f"{len(names)} images, {args.top_k} concepts each: {path}")
    return 0
