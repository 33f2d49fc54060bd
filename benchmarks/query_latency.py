"""Query latency, warm and in-process, at gallery sizes 10k, 100k and 1M; cold CLI time; memory.

The galleries are random unit vectors (the search does not care what they are), stored in a
real index folder made with a checkpoint of the reference shape (ResNet18 at 224 px, D=512,
random weights), so the end-to-end figure includes the image encode. Peak memory is measured
in a fresh process per storage type.

    python benchmarks/query_latency.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import catalogue, finish, median, parser, percentile
from stylequery.checkpoint import save_checkpoint
from stylequery.config import load_config
from stylequery.index import EmbeddingIndex
from stylequery.inference import QueryEngine
from stylequery.loss import build_loss
from stylequery.model import build_model

MEMORY_PROBE = """
import resource, sys, numpy as np
from stylequery.index import EmbeddingIndex
index = EmbeddingIndex.load(sys.argv[1])
rng = np.random.default_rng(0)
for _ in range(5):
    q = rng.standard_normal((1, index.dim)).astype(np.float32)
    index.search(q / np.linalg.norm(q), 10)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def make_checkpoint(work: Path, image_size: int, dim: int) -> Path:
    cfg = load_config(None, [f"data.image_size={image_size}", f"model.embed_dim={dim}"])
    torch.manual_seed(0)
    path = work / f"query-{image_size}-{dim}.pt"
    model = build_model(cfg.model, vocab_size=64)
    vocab = ["<UNK>", "black", "change", "green", "to"] + [f"w{i}" for i in range(59)]
    save_checkpoint(
        path,
        model=model,
        loss=build_loss("batch_classification", 4.0),
        cfg=cfg,
        vocab=vocab,
        iteration=0,
    )
    return path


def make_index(work: Path, size: int, dim: int, dtype: str, checkpoint: Path) -> Path:
    out = work / f"index-{size}-{dim}-{dtype}"
    if (out / "index.json").is_file():
        return out
    rng = np.random.default_rng(size)
    vectors = rng.standard_normal((size, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    fingerprint = torch.load(checkpoint, weights_only=True)["fingerprint"]
    paths = [f"/gallery/{i:07d}.jpeg" for i in range(size)]
    EmbeddingIndex.build(vectors, paths, None, fingerprint, dtype=dtype).save(out)  # type: ignore[arg-type]
    return out


def latencies(fn: object, runs: int, warmup: int = 3) -> tuple[float, float]:
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return percentile(times, 50), percentile(times, 95)


def measure(size: int, dtype: str, args: object, checkpoint: Path, image: Path) -> dict:
    folder = make_index(args.work, size, args.dim, dtype, checkpoint)
    index = EmbeddingIndex.load(folder)
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((args.runs + 3, args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    rows = iter(queries)
    search = latencies(lambda: index.search(next(rows)[None], 10), args.runs)
    engine = QueryEngine(checkpoint, folder, torch.device("cpu"))
    end_to_end = latencies(lambda: engine.query(image, [("black", "green")], k=10), args.runs)
    return {
        "gallery": size,
        "dtype": dtype,
        "search_p50_ms": search[0],
        "search_p95_ms": search[1],
        "e2e_p50_ms": end_to_end[0],
        "e2e_p95_ms": end_to_end[1],
    }


def cold_cli(folder: Path, checkpoint: Path, image: Path, repeats: int) -> float:
    command = [
        sys.executable,
        "-m",
        "stylequery",
        "query",
        str(image),
        "--change",
        "black:green",
        "--checkpoint",
        str(checkpoint),
        "--index",
        str(folder),
        "--device",
        "cpu",
        "--json",
    ]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return median(times)


def peak_memory_mb(folder: Path) -> float:
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(folder)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0], "query_latency")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--runs", type=int, default=30, help="timed queries per setting")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = make_checkpoint(args.work, args.image_size, args.dim)
    image = next((catalogue(args.work, 8, 128) / "women").rglob("*.jpeg"))
    rows = [
        measure(size, dtype, args, checkpoint, image)
        for size in args.sizes
        for dtype in ("float32", "float16")
    ]
    largest = max(args.sizes)
    extra = {
        "dim": args.dim,
        "image_size": args.image_size,
        "runs": args.runs,
        "cold_cli_s": cold_cli(
            args.work / f"index-{largest}-{args.dim}-float32", checkpoint, image, args.repeats
        ),
        "peak_rss_mb": {
            dtype: peak_memory_mb(args.work / f"index-{largest}-{args.dim}-{dtype}")
            for dtype in ("float32", "float16")
        },
        "largest_gallery": largest,
    }
    return finish("query_latency", args.out, rows, extra)


if __name__ == "__main__":
    main()
