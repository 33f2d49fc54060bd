"""Training speed: images/s through the real training step, variants side by side.

Images/s counts the source and target images of each pair (2 x batch per iteration), data
loading included. Variants: concat and tirg, fp32 and bf16 autocast, JPEG decoding against the
prepared uint8 cache, and the frozen-encoder fast mode (its one-off feature caching is timed
separately).

    python benchmarks/train_speed.py                     # CPU, 224 px, batch 32
    python benchmarks/train_speed.py --device cuda --iterations 30 --warmup 5
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import catalogue, finish, median, parser, prepared
from stylequery import runtime
from stylequery.config import load_config
from stylequery.data import load_prepared
from stylequery.train import build_loaders, build_state, cache_backbone_features, optimise

VARIANTS = {
    "concat fp32 cache": ["model.composer=concat", "train.precision=fp32"],
    "concat bf16 cache": ["model.composer=concat", "train.precision=bf16"],
    "tirg fp32 cache": ["model.composer=tirg", "train.precision=fp32"],
    "tirg bf16 cache": ["model.composer=tirg", "train.precision=bf16"],
    "tirg fp32 jpeg": ["model.composer=tirg", "data.use_image_cache=false"],
    "tirg fp32 frozen": ["model.composer=tirg", "model.freeze_image_encoder=true"],
}


def measure(overrides: list[str], prep: Path, device: torch.device, args: object) -> dict:
    """Median seconds per iteration of one variant (and its feature-caching time)."""
    cfg = load_config(None, overrides)
    data = load_prepared(prep)
    _, _, loader = build_loaders(cfg, data, device)
    state = build_state(cfg, len(data.vocab), device)
    caching = 0.0
    if cfg.model.freeze_image_encoder:
        start = time.perf_counter()
        run_dir = Path(tempfile.mkdtemp(dir=args.work))  # a fresh feature cache each time
        state.features = cache_backbone_features(state.model, data, cfg, device, run_dir)
        caching = time.perf_counter() - start
    state.step.train()
    batches = iter(loader)
    times = []
    for i in range(args.warmup + args.iterations):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        optimise(state, next(batches), cfg, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    seconds = median(times)
    return {
        "s_per_iter": seconds,
        "images_per_s": 2 * cfg.train.batch_size / seconds,
        "feature_cache_s": caching,
    }


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0], "train_speed")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--products", type=int, default=300)
    p.add_argument("--iterations", type=int, default=2, help="timed iterations per variant")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    device = runtime.resolve_device(args.device)
    root = catalogue(args.work, args.products, max(args.image_size, 64))
    prep = prepared(root, args.image_size)
    common = [
        f"data.root={root}",
        f"data.prepared_dir={prep}",
        f"data.image_size={args.image_size}",
        f"train.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
    ]
    rows = []
    for name, overrides in VARIANTS.items():
        result = measure(common + overrides, prep, device, args)
        rows.append({"variant": name, **result})
    return finish(
        "train_speed",
        args.out,
        rows,
        {
            "device": str(device),
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "timed_iterations": args.iterations,
            "warmup": args.warmup,
            "workers": args.workers,
            "note": "images/s = 2 x batch / median seconds per iteration, data loading included",
        },
    )


if __name__ == "__main__":
    main()
