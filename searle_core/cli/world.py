"""``searle world build`` and ``searle invert``: the synthetic world and textual inversion of images."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from searle_core.cli.common import add_backbone_options, load_backbone_from_args, print_json
from searle_core.datasets.features import configure_for_dataset
from searle_core.datasets.folder import FileImageSource
from searle_core.infra.files import atomic_save, atomic_write_text, sha256_of
from searle_core.infra.paths import data_dir
from searle_core.inversion.concepts import associate_concepts, embed_concepts
from searle_core.inversion.nearest import nearest_words, word_token_ids
from searle_core.inversion.phrases import filter_phrase_bank, load_concepts_csv, load_phrase_pickle
from searle_core.method.oti import OTIConfig, oti
from searle_core.settings import add_setting, nonnegative_int, positive_int
from searle_core.world import ShapesWorld, WorldConfig, training_vocabulary, world_clip
from searle_core.world.setup import world_setup, world_vocabulary


def register(sub) -> None:
    w = sub.add_parser("world", help="the offline 'shapes' world")
    which = w.add_subparsers(dest="world_command", required=True, metavar="ACTION")
    b = which.add_parser("build", help="render the world, train and cache its CLIP, report zero-shot accuracy")
    b.add_argument("--quick", action="store_true", help="the CI-sized world and CLIP")
    b.add_argument("--device", default="auto")
    b.add_argument("--samples", type=nonnegative_int, default=12, help="sample images written as PNG")
    b.add_argument("--out", default=None, help="folder for sample images (default: data/world/samples)")
    b.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads while training")
    b.add_argument("--json", action="store_true", help="also print the accuracy and training time as one JSON line")
    b.add_argument(
        "--ship",
        action="store_true",
        help="maintainers: train the CLIP here (ignoring the shipped weights) and write the package's shipped file",
    )
    b.set_defaults(func=run_build)

    i = sub.add_parser("invert", help="OTI on image files: print each pseudo-word's nearest vocabulary words")
    i.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    add_backbone_options(i)
    add_setting(i, "oti_steps")
    i.add_argument("--top-k", type=positive_int, default=8, help="nearest words to print")
    add_setting(i, "concepts", default=None, help="concept CSV for the regulariser (real backbones)")
    add_setting(i, "phrases", default=None, help="phrase bank pickle {concept: [phrases]} (real backbones)")
    add_setting(i, "seed")
    i.set_defaults(func=run_invert)


def run_build(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ship:
        print(f"shipped: {ship_weights(args.quick)}")
    start = time.perf_counter()
    world = ShapesWorld(WorldConfig.quick() if args.quick else WorldConfig())
    val, test = world.benchmark("val"), world.benchmark("test")
    render_s = time.perf_counter() - start
    print(
        f"world: {len(world.pretrain_names())} unlabeled images, val {len(val.queries)} queries / "
        f"{len(val.gallery)} gallery, test {len(test.queries)} / {len(test.gallery)} ({render_s:.1f} s)"
    )
    start = time.perf_counter()
    world, backbone = world_setup(args.quick, args.device)
    train_s = time.perf_counter() - start
    report = world_clip.zero_shot_report(backbone, world, world_clip.held_out_names(world))
    log = world_clip.training_log(backbone.pretrained)
    print(f"shapes-clip: {backbone.pretrained} ({train_s:.1f} s; cached after the first build)")
    print(world_clip.format_report(report, log))
    out = Path(args.out) if args.out else data_dir() / "world" / "samples"
    out.mkdir(parents=True, exist_ok=True)
    names = val.reference_names()[: args.samples]
    for name in names:
        world.images.load_image(name).save(out / f"{name}.png")
    if names:
        sample = f"{out / names[0]}.png".replace(".png.png", ".png")
        print(f"{len(names)} sample images in {out} (try: searle invert {sample})")
    if args.json:
        log = log or {}
        record = {"zero_shot_accuracy": report["total"], "zero_shot": report, "train_seconds": log.get("seconds")}
        print_json({**record, "threads": log.get("threads"), "weights": backbone.pretrained})
    return 0


def ship_weights(quick: bool) -> Path:
    """Train the (quick) world CLIP in a scratch cache and write its shipped file into the package."""
    config = world_clip.WorldCLIPConfig.quick() if quick else world_clip.WorldCLIPConfig()
    with tempfile.TemporaryDirectory() as scratch:
        trained = world_clip.world_clip_weights(scratch, config=config, use_shipped=False)
        state, log = torch.load(trained, map_location="cpu", weights_only=True), world_clip.training_log(trained)
    path = world_clip.shipped_path(config.cache_key())
    atomic_save(world_clip.pack(state, world_clip.trained_token_ids(), config.seed, log), path)
    sums = {**world_clip.shipped_sha256(), path.name: sha256_of(path)}  # what read_shipped checks
    atomic_write_text("".join(f"{h}  {n}\n" for n, h in sorted(sums.items())), path.parent / "SHA256SUMS")
    return path


def run_invert(args: argparse.Namespace) -> int:
    if missing := [p for p in args.images if not Path(p).is_file()]:
        raise FileNotFoundError(f"no such image file(s): {', '.join(missing)}")
    backbone = configure_for_dataset(load_backbone_from_args(args), "images", num_workers=0)  # targetpad
    # Decoded through the benchmarks' loader: a truncated or garbage file is an error naming it.
    files = FileImageSource({p: Path(p) for p in args.images}, default_referrer="given to searle invert", hint="")
    pixels = torch.stack([backbone.preprocess(files.load_image(p)) for p in args.images]).to(backbone.device)
    with torch.no_grad():
        feats = backbone.model.encode_image(pixels).float()
    concepts = bank = allowed = None
    if args.backbone == "shapes-clip":
        vocab = world_vocabulary()
        concepts, bank = vocab.concepts, vocab.phrase_bank
        allowed = word_token_ids(backbone, training_vocabulary())
        note = f"nearest words among the {len(allowed)} words shapes-clip was trained on"
    else:
        note = "nearest whole words of the CLIP vocabulary"
        if args.concepts and args.phrases:
            # Associated over every concept; those without usable phrases are skipped when drawing.
            concepts, bank = load_concepts_csv(args.concepts), filter_phrase_bank(load_phrase_pickle(args.phrases))
    per_image = associate_concepts(feats, embed_concepts(backbone, concepts), concepts, top_k=15) if concepts else None
    result = oti(backbone, feats, per_image, bank, OTIConfig(steps=args.oti_steps), seed=args.seed, progress=True)
    print(f"({note})")
    for path, words in zip(args.images, nearest_words(backbone, result.tokens, args.top_k, allowed)):
        print(f"{path}: " + ", ".join(f"{w} ({s:.2f})" for w, s in words))
    return 0
