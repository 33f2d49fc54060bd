"""Evaluation time of the test protocol, and how it grows with the test split.

Synthetic test splits of about --sizes images (default up to the reference's ~5,300), with
queries capped at --queries-per-image x images (the reference has ~4,500 queries for ~5,300
images), evaluated by stylequery.evaluate.evaluate_model with a checkpoint of the cpu.yaml shape
(ResNet18 at 64 px, D=256, tirg; random weights: speed does not depend on them), loaded as
`stylequery evaluate` loads it. Three timings per size, interleaved round by round:
"total" (evaluate_model as `stylequery evaluate` runs it), "encode" (every test image through
the CNN, encode.encode_split) and "rest" (evaluate_model given the backbone features: the
projection, text encoding, composing and ranking). Each is the median of --repeats runs.

examples:
  python benchmarks/eval_speed.py                   # about 3 minutes on 2 CPU cores
  python benchmarks/eval_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    base_parser,
    interleaved,
    median,
    prepared_folder,
    random_checkpoint,
    shape_config,
    synthetic_catalogue,
    timed,
    write_result,
)
from stylequery import runtime
from stylequery.checkpoint import LoadedModel, load_model
from stylequery.config import Config, load_config
from stylequery.data import PreparedData, load_prepared
from stylequery.encode import encode_split
from stylequery.evaluate import evaluate_model

NAME = "eval_speed"
TEST_FRACTION = 0.9  # most products go to the test split, so a small catalogue reaches the size
IMAGES_PER_PRODUCT = 2.0  # synth draws 1 to 3 images per product


def load_split(
    size: int, args: argparse.Namespace, device: torch.device
) -> tuple[PreparedData, LoadedModel, Config]:
    """A prepared catalogue whose test split has about ``size`` images, and a random model."""
    products = max(10, round(size / IMAGES_PER_PRODUCT / TEST_FRACTION))
    root = synthetic_catalogue(args.work, products, args.jpeg_size, test_fraction=TEST_FRACTION)
    shape = shape_config(args.shape)
    cache = shape.data.image_size if args.image_cache else None
    prepared = load_prepared(prepared_folder(root, cache))
    checkpoint = args.work / f"eval-{args.shape}-{products}p.pt"
    loaded = load_model(random_checkpoint(checkpoint, shape, prepared.vocab.tokens), device)
    overrides = [f"data.root={root}", f"data.use_image_cache={args.image_cache}"]
    return prepared, loaded, load_config(None, overrides, base=loaded.cfg)  # as `evaluate` does


def measure(size: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Timings of one split size."""
    prepared, loaded, cfg = load_split(size, args, device)
    model = loaded.model
    queries = round(args.queries_per_image * len(prepared.split("test")))
    enc = loaded.encoding
    features = encode_split(model, prepared, "test", cfg, enc, device, features=True)
    cases: dict[str, Callable[[], object]] = {
        "total": lambda: evaluate_model(
            model, prepared, cfg, device, max_queries=queries, encoding=enc
        ),
        "encode": lambda: encode_split(model, prepared, "test", cfg, enc, device),
        "rest": lambda: evaluate_model(
            model, prepared, cfg, device, max_queries=queries, features=features, encoding=enc
        ),
    }
    result = evaluate_model(model, prepared, cfg, device, max_queries=queries, encoding=enc)
    seconds = interleaved(
        {name: functools.partial(timed, case, device) for name, case in cases.items()},
        args.repeats,
    )
    return {
        "test_images": result.gallery_size,
        "queries": result.num_queries,
        "total_s": median(seconds["total"]),
        "encode_s": median(seconds["encode"]),
        "rest_s": median(seconds["rest"]),
        "encode_images_per_s": result.gallery_size / median(seconds["encode"]),
        "runs": args.repeats,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    parser = base_parser(__doc__ or "", NAME)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2500, 5300])
    parser.add_argument("--queries-per-image", type=float, default=4500 / 5300)
    parser.add_argument("--shape", default="cpu", choices=["cpu", "reference", "tiny"])
    parser.add_argument("--jpeg-size", type=int, default=96, help="synthetic JPEG side (demo's)")
    parser.add_argument(
        "--image-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="prepare a uint8 cache of the model's size (as the demo does) and read it",
    )
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    device = runtime.resolve_device(args.device)
    rows = [measure(size, args, device) for size in args.sizes]
    cfg = shape_config(args.shape)
    settings = {
        "device": str(device),
        "shape": args.shape,
        "image_size": cfg.data.image_size,
        "embed_dim": cfg.model.embed_dim,
        "composer": cfg.model.composer,
        "eval_batch_size": cfg.eval.batch_size,
        "num_workers": cfg.data.num_workers,
        "image_cache": args.image_cache,
        "jpeg_size": args.jpeg_size,
        "weights": "random (speed only)",
        "note": "rest = evaluate_model given backbone features: projection, text, compose, rank",
    }
    return write_result(NAME, args, argv, rows, settings, started, device)


if __name__ == "__main__":
    main()
