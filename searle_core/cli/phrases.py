"""``searle phrases generate``: the authors' GPT-Neo phrases for a concept list (``jobs.phrase_run``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from searle_core.inversion import phrases
from searle_core.jobs.phrase_run import generate_phrase_folder
from searle_core.settings import positive_float, positive_int, seed_int


def register(sub) -> None:
    p = sub.add_parser("phrases", help="GPT phrases for OTI's and φ's regulariser")
    which = p.add_subparsers(dest="phrases_command", required=True, metavar="ACTION")
    g = which.add_parser(
        "generate",
        help="the authors' GPT-Neo phrases for every concept, resumable (needs the optional 'phrases' extra)",
    )
    g.add_argument("--concepts", required=True, help="Open Images' oidv7-class-descriptions.csv (its DisplayName)")
    g.add_argument("--out", required=True, help="folder of concept_to_phrases.pkl (what --phrases reads)")
    g.add_argument("--model", default=phrases.GPT_MODEL, help=f"Hugging Face causal LM (default {phrases.GPT_MODEL})")
    g.add_argument("--samples", type=positive_int, default=phrases.GPT_SAMPLES, help="sequences per concept")
    g.add_argument("--max-length", type=positive_int, default=phrases.GPT_MAX_LENGTH, help="tokens, prompt included")
    g.add_argument("--temperature", type=positive_float, default=phrases.GPT_TEMPERATURE)
    g.add_argument("--no-repeat-ngram-size", type=int, default=phrases.GPT_NO_REPEAT_NGRAM)
    g.add_argument("--seed", type=seed_int, default=0)
    g.add_argument("--device", default=None, help="torch device (default: CUDA when available)")
    g.add_argument("--resume", action="store_true", help="continue a folder that holds phrases already")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    given = [getattr(args, k) for k in ("out", "model", "samples", "max_length", "temperature", "no_repeat_ngram_size")]
    options = {"seed": args.seed, "device": args.device, "resume": args.resume, "progress": not args.no_progress}
    bank = generate_phrase_folder(phrases.load_concepts_csv(args.concepts), *given, **options)
    print(f"{len(bank)} concepts with phrases in {Path(args.out) / 'concept_to_phrases.pkl'}")
    return 0
