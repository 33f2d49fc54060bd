"""Embedding speed: stylequery.inference.embed on a folder of JPEGs against the forward alone.

embed() is timed as a user runs it: load the checkpoint, decode and resize every JPEG in
DataLoader workers, encode, write the index. The forward pass alone encodes the same number
of images from uint8 tensors already in memory (same batch size, channels_last and precision
as embed). Their ratio shows what loading costs. Measured for the cpu.yaml model shape (64 px,
D=256, on the demo's 96 px JPEGs) and the reference shape (224 px, D=512, on 256 px JPEGs),
random weights. Cases run interleaved; each figure is the median of --repeats runs.

examples:
  python benchmarks/embed_speed.py                  # about 4 minutes on 2 CPU cores
  python benchmarks/embed_speed.py --device cuda --workers 8
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    QUERY_WORDS,
    base_parser,
    interleaved,
    median,
    paired_ratio,
    random_checkpoint,
    shape_config,
    synthetic_catalogue,
    timed,
    write_result,
)
from stylequery import runtime
from stylequery.checkpoint import LoadedModel, load_model
from stylequery.data import load_image
from stylequery.encode import encode_images
from stylequery.inference import embed

NAME = "embed_speed"
JPEG_SIZES = {"cpu": 96, "reference": 256, "tiny": 48}  # side of the JPEGs each shape reads


def forward_only(loaded: LoadedModel, images: torch.Tensor, batch_size: int) -> None:
    """Encode in-memory uint8 images (N, 3, S, S) batch by batch, as embed() does."""
    device = images.device
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            encode_images(loaded.model, batch, loaded.encoding, device).cpu()  # (B, D)


def embed_case(
    checkpoint: Path,
    folder: Path,
    out: Path,
    device: torch.device,
    args: argparse.Namespace,
    workers: int,
) -> Callable[[], float]:
    """A timed ``embed`` of the folder into ``out``, as `stylequery embed` runs it."""

    def run() -> None:
        embed(checkpoint, folder, out, device, batch_size=args.batch_size, num_workers=workers)

    return lambda: timed(run, device)


def measure(shape: str, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Rows of one model shape: one per worker count."""
    cfg = shape_config(shape)
    size, jpeg_size = cfg.data.image_size, JPEG_SIZES[shape]
    folder = synthetic_catalogue(args.work, args.products, jpeg_size) / "women"
    paths = sorted(folder.rglob("*.jpeg"))
    checkpoint = random_checkpoint(args.work / f"embed-{shape}.pt", cfg, QUERY_WORDS)
    loaded = load_model(checkpoint, device)
    images = torch.stack([load_image(p, size) for p in paths]).to(device)  # (N, 3, S, S)
    cases: dict[str, Callable[[], float]] = {
        "forward": lambda: timed(lambda: forward_only(loaded, images, args.batch_size), device),
        "load checkpoint": lambda: timed(lambda: load_model(checkpoint, device), device),
    }
    for workers in args.workers:
        out = args.work / f"embed-index-{shape}-{workers}"
        cases[f"embed {workers}"] = embed_case(checkpoint, folder, out, device, args, workers)
    forward_only(loaded, images, args.batch_size)  # warm-up
    seconds = interleaved(cases, args.repeats)
    return [
        {
            "shape": shape,
            "image_size": size,
            "embed_dim": cfg.model.embed_dim,
            "jpeg_size": jpeg_size,
            "images": len(paths),
            "workers": workers,
            "embed_images_per_s": len(paths) / median(seconds[f"embed {workers}"]),
            "forward_images_per_s": len(paths) / median(seconds["forward"]),
            "forward_over_embed": paired_ratio(seconds[f"embed {workers}"], seconds["forward"]),
            "checkpoint_load_s": median(seconds["load checkpoint"]),
            "runs": args.repeats,
        }
        for workers in args.workers
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    parser = base_parser(__doc__ or "", NAME)
    parser.add_argument("--shapes", nargs="+", default=["cpu", "reference"], choices=JPEG_SIZES)
    parser.add_argument("--products", type=int, default=300, help="catalogue size (~2 images each)")
    parser.add_argument("--batch-size", type=int, default=64, help="embed's default")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers of embed"
    )
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    device = runtime.resolve_device(args.device)
    rows = [row for shape in args.shapes for row in measure(shape, args, device)]
    settings = {
        "device": str(device),
        "batch_size": args.batch_size,
        "weights": "random (speed only)",
        "note": (
            "embed time includes loading the checkpoint and writing the index "
            "(checkpoint_load_s shows the first); forward_over_embed = embed s / forward s"
        ),
    }
    return write_result(NAME, args, argv, rows, settings, started, device)


if __name__ == "__main__":
    main()
