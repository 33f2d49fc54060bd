"""Training speed: images/s through the library's real training step, variants side by side.

Images/s counts the images that go through the CNN: the source and the target of every pair,
i.e. 2 x batch per iteration. Data loading is included: each timed block starts a fresh
DataLoader iterator (like an epoch), runs --warmup untimed iterations, then times at least
--iterations iterations (and at least --min-seconds). Variants: concat and tirg; fp32 against
bf16 autocast (and fp16 on CUDA); JPEG decoding in DataLoader workers against the prepared
uint8 cache; and the frozen-encoder fast mode (model.freeze_image_encoder=true), whose one-off
feature caching is timed on its own. Every round times every variant once, so the ratios are
side by side; each figure is the median over --repeats rounds.

examples:
  python benchmarks/train_speed.py --device cpu     # about 8 minutes on 2 CPU cores
  python benchmarks/train_speed.py --device cuda    # 10 warm-up + 50 timed iterations a block
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    base_parser,
    interleaved,
    median,
    paired_ratio,
    prepared_folder,
    synchronize,
    synthetic_catalogue,
    timed,
    write_result,
)
from stylequery import runtime
from stylequery.config import Config, load_config
from stylequery.data import EpochSampler, PairDataset, PreparedData, load_prepared
from stylequery.features import cache_backbone_features
from stylequery.train import build_loaders, build_state, optimise
from stylequery.trainstate import TrainState

NAME = "train_speed"
SETTINGS = (
    "image_size",
    "batch_size",
    "warmup",
    "iterations",
    "min_seconds",
    "workers",
    "products",
    "jpeg_size",
)  # options recorded with the results
NOTE = (
    "images/s = 2 x batch x timed iterations / seconds (source + target images through the "
    "CNN), data loading included; warmup and iterations are per block; the frozen mode runs "
    "no CNN per step (the figure counts the same 2 x batch); its one-off feature caching is in "
    "feature_caching"
)


@dataclass
class Variant:
    """One training set-up, built once and timed block by block."""

    cfg: Config
    state: TrainState
    dataset: PairDataset
    sampler: EpochSampler
    loader: DataLoader
    epoch: int = 0


def precisions(device: torch.device) -> list[str]:
    """Training precisions measured on ``device`` (fp16 autocast needs CUDA)."""
    return ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])


def variant_overrides(device: torch.device) -> dict[str, list[str]]:
    """Name -> config overrides of every variant measured on ``device``."""
    variants: dict[str, list[str]] = {}
    for composer in ("concat", "tirg"):
        for precision in precisions(device):
            overrides = [f"model.composer={composer}", f"train.precision={precision}"]
            variants[f"{composer} {precision} cache"] = overrides
    for kind, extra in (
        ("jpeg", "data.use_image_cache=false"),
        ("frozen", "model.freeze_image_encoder=true"),
    ):
        for precision in precisions(device):
            overrides = ["model.composer=tirg", f"train.precision={precision}", extra]
            variants[f"tirg {precision} {kind}"] = overrides
    return variants


def build_variant(cfg: Config, data: PreparedData, device: torch.device, work: Path) -> Variant:
    """Loaders and training state of a variant; the frozen mode also caches its features."""
    dataset, sampler, loader = build_loaders(cfg, data, device)
    state = build_state(cfg, len(data.vocab), device)
    if cfg.model.freeze_image_encoder:
        _, state.features = cache_features(state, data, cfg, device, work)
    return Variant(cfg, state, dataset, sampler, loader)


def cache_features(
    state: TrainState, data: PreparedData, cfg: Config, device: torch.device, work: Path
) -> tuple[float, dict[str, torch.Tensor]]:
    """Time ``cache_backbone_features`` into a fresh run folder (so nothing is reused)."""
    run_dir = Path(tempfile.mkdtemp(prefix="features-", dir=work))
    features: dict[str, torch.Tensor] = {}

    def run() -> None:
        features.update(cache_backbone_features(state.model, data, cfg, device, run_dir))

    try:
        return timed(run, device), features
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def caching_seconds(
    variant: Variant, data: PreparedData, device: torch.device, work: Path
) -> float:
    """Seconds of one fresh feature caching for a frozen variant."""
    return cache_features(variant.state, data, variant.cfg, device, work)[0]


def batches(variant: Variant) -> Generator[dict[str, Any], None, None]:
    """Training batches epoch after epoch, as ``train`` feeds them."""
    while True:
        variant.dataset.set_epoch(variant.epoch)
        variant.sampler.set_epoch(variant.epoch)
        variant.epoch += 1
        yield from variant.loader


def time_block(variant: Variant, args: argparse.Namespace, device: torch.device) -> float:
    """Images/s of one block: a fresh loader iterator, warm-up, then the timed iterations."""
    variant.state.step.train()  # feature caching leaves the model in eval mode
    stream = batches(variant)
    try:
        for _ in range(args.warmup):
            optimise(variant.state, next(stream), variant.cfg, device)
        synchronize(device)
        start, done = time.perf_counter(), 0
        while done < args.iterations or time.perf_counter() - start < args.min_seconds:
            optimise(variant.state, next(stream), variant.cfg, device)
            done += 1
        synchronize(device)
        seconds = time.perf_counter() - start
    finally:
        stream.close()  # shuts the loader's workers down
    return 2 * variant.cfg.train.batch_size * done / seconds


def ratios(speeds: dict[str, list[float]], device: torch.device) -> list[dict[str, Any]]:
    """Speed-ups between variants, each the median of per-round ratios."""
    pairs = []
    for precision in precisions(device)[1:]:
        for composer in ("concat", "tirg"):
            pairs.append((f"{composer} {precision} cache", f"{composer} fp32 cache"))
    for precision in precisions(device):
        pairs.append((f"tirg {precision} cache", f"tirg {precision} jpeg"))
        pairs.append((f"tirg {precision} frozen", f"tirg {precision} cache"))
    pairs.append(("tirg fp32 cache", "concat fp32 cache"))
    return [
        {"ratio": f"{a} / {b}", "speed_up": paired_ratio(speeds[a], speeds[b])} for a, b in pairs
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = base_parser(__doc__ or "", NAME)
    parser.add_argument("--image-size", type=int, default=224, help="square side fed to the CNN")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per iteration")
    parser.add_argument(
        "--iterations", type=int, help="timed iterations per block (default: 2 CPU, 50 CUDA)"
    )
    parser.add_argument("--warmup", type=int, help="untimed iterations per block (1 CPU, 10 CUDA)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="shortest timed block")
    parser.add_argument(
        "--workers", type=int, help="DataLoader workers (2 CPU, min(8, cores) CUDA)"
    )
    parser.add_argument("--products", type=int, help="catalogue size (default: enough pairs)")
    parser.add_argument("--jpeg-size", type=int, default=256, help="side of the synthetic JPEGs")
    return parser.parse_args(argv)


def resolve_defaults(args: argparse.Namespace, device: torch.device) -> None:
    """Fill the options whose defaults differ between CPU and CUDA."""
    gpu = device.type == "cuda"
    if args.iterations is None:
        args.iterations = 50 if gpu else 2
    if args.warmup is None:
        args.warmup = 10 if gpu else 1
    if args.workers is None:
        args.workers = min(8, os.cpu_count() or 1) if gpu else 2
    if args.products is None:
        # An epoch long enough for a whole block, so no block restarts its workers mid-way.
        args.products = max(150, args.batch_size * (args.warmup + args.iterations))


def build_cases(
    args: argparse.Namespace, data: PreparedData, overrides: list[str], device: torch.device
) -> tuple[dict[str, Variant], dict[str, Callable[[], float]]]:
    """Every variant, built once, and the timed cases: its blocks and the feature caching."""
    variants: dict[str, Variant] = {}
    cases: dict[str, Callable[[], float]] = {}
    for name, extra in variant_overrides(device).items():
        cfg = load_config(None, [*overrides, *extra])
        variant = variants[name] = build_variant(cfg, data, device, args.work)  # warms caching
        cases[name] = functools.partial(time_block, variant, args, device)
        if cfg.model.freeze_image_encoder:
            cases[f"feature caching {cfg.train.precision}"] = functools.partial(
                caching_seconds, variant, data, device, args.work
            )
    return variants, cases


def main(argv: list[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    args = parse_args(argv)
    device = runtime.resolve_device(args.device)
    resolve_defaults(args, device)
    args.work.mkdir(parents=True, exist_ok=True)
    root = synthetic_catalogue(args.work, args.products, args.jpeg_size)
    prepared = prepared_folder(root, args.image_size)
    defaults = load_config(None).data  # training carves its validation split the same way
    data = load_prepared(prepared, None, defaults.val_fraction, defaults.seed)
    overrides = [f"data.root={root}", f"data.prepared_dir={prepared}"]
    overrides += [f"data.image_size={args.image_size}", f"data.num_workers={args.workers}"]
    overrides += [f"train.batch_size={args.batch_size}"]
    variants, cases = build_cases(args, data, overrides, device)
    measured = interleaved(cases, args.repeats)
    rows = [
        {
            "variant": name,
            "images_per_s": median(measured[name]),
            "s_per_iter": 2 * args.batch_size / median(measured[name]),
            "runs": len(measured[name]),
        }
        for name in variants
    ]
    cached_images = len(data.split("train")) + len(data.split("test"))
    caching = [
        {"step": name, "seconds": median(times), "images_per_s": cached_images / median(times)}
        for name, times in measured.items()
        if name.startswith("feature caching")
    ]
    settings = {
        "device": str(device),
        **{key: getattr(args, key) for key in SETTINGS},
        "images_per_iteration": 2 * args.batch_size,
        "train_pairs": len(next(iter(variants.values())).dataset),
        "cached_images": cached_images,
        "note": NOTE,
    }
    extra = {"ratios": ratios(measured, device), "feature_caching": caching, "per_round": measured}
    return write_result(NAME, args, argv, rows, settings, started, device, **extra)


if __name__ == "__main__":
    main()
