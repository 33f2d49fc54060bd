"""Evaluation time of the test protocol, and how it scales with the split's size.

A synthetic test split the size of the reference's (about 5,300 images and 4,500 queries) and
smaller ones, a model of cpu.yaml's shape with random weights (speed only). Image encoding and
the rest (text encoding, composing, ranking against the whole gallery) are timed apart.

    python benchmarks/eval_speed.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import catalogue, finish, median, parser, prepared, timed
from stylequery import runtime
from stylequery.config import load_config
from stylequery.data import load_prepared
from stylequery.evaluate import encode_split_images, evaluate_model
from stylequery.model import build_model
from stylequery.train import backbone_features

TEST_FRACTION = 0.9  # most products in the test split, so the split reaches the target size


def measure(size: int, args: object, device: torch.device) -> dict:
    products = max(8, round(size / 2 / TEST_FRACTION))  # about 2 images per product
    root = catalogue(args.work, products, args.image_size, test_fraction=TEST_FRACTION)
    data = load_prepared(prepared(root, args.image_size))
    cfg = load_config(
        "cpu.yaml",
        [
            f"data.root={root}",
            f"data.image_size={args.image_size}",
            "model.freeze_image_encoder=false",
            "data.num_workers=0",
            "eval.batch_size=128",
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, len(data.vocab)).to(device).eval()
    encode = [
        timed(lambda: encode_split_images(model, data, "test", cfg, device), device)
        for _ in range(args.repeats)
    ]
    # The rest, apart: evaluate from backbone features computed beforehand (projection only).
    features = backbone_features(model, data, "test", cfg, device)
    rest = [
        timed(lambda: evaluate_model(model, data, cfg, device, features=features), device)
        for _ in range(args.repeats)
    ]
    return {
        "test_images": len(data.split("test")),
        "queries": len(data.queries),
        "encode_s": median(encode),
        "rest_s": median(rest),
        "total_s": median(encode) + median(rest),
    }


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0], "eval_speed")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 2500, 5300])
    p.add_argument("--image-size", type=int, default=64)
    args = p.parse_args(argv)
    device = runtime.resolve_device(args.device)
    rows = [measure(size, args, device) for size in args.sizes]
    return finish(
        "eval_speed",
        args.out,
        rows,
        {
            "device": str(device),
            "image_size": args.image_size,
            "repeats": args.repeats,
            "model": "cpu.yaml shape (ResNet18, embed 256, tirg), random weights",
        },
    )


if __name__ == "__main__":
    main()
