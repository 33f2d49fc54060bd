"""Embedding speed: ``embed`` on a folder of JPEGs against the forward pass alone.

The forward pass runs on uint8 tensors already in memory, so the ratio of the two shows what
decoding, resizing and the pipeline cost. Measured for cpu.yaml's model shape (64 px, D=256)
and the reference's (224 px, D=512), random weights.

    python benchmarks/embed_speed.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import catalogue, finish, median, parser, timed
from stylequery import runtime
from stylequery.checkpoint import load_model, save_checkpoint
from stylequery.config import load_config
from stylequery.data import load_image
from stylequery.inference import embed
from stylequery.loss import build_loss
from stylequery.model import build_model

SHAPES = {"cpu.yaml (64 px, D=256)": (64, 256), "reference (224 px, D=512)": (224, 512)}


def measure(name: str, size: int, dim: int, images: list[Path], args: object) -> dict:
    device = runtime.resolve_device(args.device)
    cfg = load_config(None, [f"data.image_size={size}", f"model.embed_dim={dim}"])
    checkpoint = args.work / f"embed-{size}-{dim}.pt"
    torch.manual_seed(0)
    save_checkpoint(
        checkpoint,
        model=build_model(cfg.model, 16),
        cfg=cfg,
        vocab=["<UNK>"] * 16,
        loss=build_loss("batch_classification", 4.0),
        iteration=0,
    )
    folder = args.work / f"embed-images-{args.products}"
    out = args.work / f"embed-index-{size}"
    pipeline = []
    for _ in range(args.repeats):
        shutil.rmtree(out, ignore_errors=True)
        pipeline.append(
            timed(
                lambda: embed(
                    checkpoint,
                    folder,
                    out,
                    device,
                    batch_size=args.batch_size,
                    num_workers=args.workers,
                ),
                device,
            )
        )
    model = load_model(checkpoint, device).model
    batch = torch.stack([load_image(p, size) for p in images[: args.batch_size]]).to(device)
    batches = -(-len(images) // args.batch_size)

    def forward() -> None:
        with torch.no_grad():
            for _ in range(batches):
                model.encode_image(batch)

    compute = [timed(forward, device) for _ in range(args.repeats)]
    embed_rate = len(images) / median(pipeline)
    forward_rate = batches * args.batch_size / median(compute)
    return {
        "shape": name,
        "images": len(images),
        "embed_images_per_s": embed_rate,
        "forward_images_per_s": forward_rate,
        "forward_over_embed": forward_rate / embed_rate,
    }


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0], "embed_speed")
    p.add_argument("--products", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    source = catalogue(args.work, args.products, 256)
    folder = args.work / f"embed-images-{args.products}"
    if not folder.is_dir():
        shutil.copytree(source / "women", folder)
    images = sorted(folder.rglob("*.jpeg"))
    rows = [measure(name, *SHAPES[name], images, args) for name in args.shapes]
    return finish(
        "embed_speed",
        args.out,
        rows,
        {
            "device": args.device,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "repeats": args.repeats,
            "jpeg_side": 256,
            "note": "embed time includes loading the checkpoint and writing the index",
        },
    )


if __name__ == "__main__":
    main()
