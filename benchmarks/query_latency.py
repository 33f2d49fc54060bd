"""Query latency at gallery sizes 10k, 100k and 1M: warm in-process, cold CLI, peak memory.

Galleries are random unit vectors (exact search does not care what they are) saved as real
index folders, float32 and float16, for two model shapes: the reference (224 px, D=512) and
cpu.yaml's (64 px, D=256), random weights. Warm, in one process, each in its own loop:
"search" is EmbeddingIndex.search alone (k=10, a new random query each time), "encode" the
image decode + encode + compose (QueryEngine.encode of load_image), "e2e" QueryEngine.query
with one JPEG and one change. Percentiles over --runs queries after 3 warm-ups. "cli" is the
cold `stylequery query` command in a subprocess (median of --repeats). Peak memory at the
largest gallery is the high-water RSS (VmHWM, Linux) of a fresh process per setting that loads
the engine and answers 3 queries (memory-mapped pages count once touched). Target: under 50 ms
plus the image encode at 1M on 2 CPU cores.

examples:
  python benchmarks/query_latency.py                # about 6 minutes, 5 GB of scratch disk
  python benchmarks/query_latency.py --sizes 10000 100000 --shapes cpu
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    QUERY_WORDS,
    base_parser,
    median,
    percentile,
    random_checkpoint,
    shape_config,
    synthetic_catalogue,
    write_result,
)
from stylequery import runtime
from stylequery.checkpoint import load_checkpoint
from stylequery.data import load_image
from stylequery.index import EmbeddingIndex
from stylequery.index.exact import INFO_FILE, read_info
from stylequery.inference import QueryEngine

NAME = "query_latency"
DTYPES = ("float32", "float16")
CHANGE = ("black", "green")
WARMUP = 3

# Run in a fresh interpreter: argv = checkpoint, index, image, device. Prints the peak RSS in
# MB after the imports, after loading the engine and after 3 queries. VmHWM, not ru_maxrss:
# ru_maxrss survives fork + exec, so a child would report its parent's size.
MEMORY_PROBE = """
import re, sys
from pathlib import Path
import torch
from stylequery.inference import QueryEngine
status = Path("/proc/self/status")
peak = lambda: int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read_text()).group(1)) / 1024
imports = peak()
engine = QueryEngine(Path(sys.argv[1]), Path(sys.argv[2]), torch.device(sys.argv[4]))
loaded = peak()
for _ in range(3):
    engine.query(Path(sys.argv[3]), [("black", "green")], k=10)
print(imports, loaded, peak())
"""


def make_indexes(work: Path, shape: str, size: int, dim: int, checkpoint: Path) -> dict[str, Path]:
    """Index folders of ``size`` random unit vectors, one per storage dtype, made once per
    checkpoint (folders embedded for another checkpoint are made again)."""
    folders = {dtype: work / f"index-{shape}-{size}-{dtype}" for dtype in DTYPES}
    fingerprint = load_checkpoint(checkpoint)["fingerprint"]
    infos = [folder / INFO_FILE for folder in folders.values()]
    if all(info.is_file() and read_info(info)["fingerprint"] == fingerprint for info in infos):
        return folders
    rng = np.random.default_rng(size + dim)
    vectors = rng.standard_normal((size, dim), dtype=np.float32)  # (N, D)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    paths = [f"/gallery/{i:07d}.jpeg" for i in range(size)]
    for dtype, folder in folders.items():
        EmbeddingIndex.build(vectors, paths, None, fingerprint, dtype=dtype).save(folder)  # type: ignore[arg-type]
    return folders


def warm_latencies(
    engine: QueryEngine, image: Path, runs: int, seed: int
) -> dict[str, list[float]]:
    """Milliseconds per query of search alone, encode alone and end to end.

    Each case runs in its own loop (after warm-ups), so "search" is the index by itself and
    "e2e" is what a caller gets, including any cost of running one after the other.
    """
    rng = np.random.default_rng(seed)
    queries = rng.standard_normal((WARMUP + runs, engine.index.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    size = engine.loaded.cfg.data.image_size
    texts = engine.texts_for([CHANGE], None)
    cases: dict[str, Callable[[int], object]] = {
        "search": lambda i: engine.index.search(queries[i : i + 1], 10),
        "encode": lambda i: engine.encode(load_image(image, size), texts),
        "e2e": lambda i: engine.query(image, [CHANGE], k=10),
    }
    times: dict[str, list[float]] = {}
    for name, case in cases.items():
        times[name] = []
        for i in range(WARMUP + runs):
            start = time.perf_counter()
            case(i)
            if i >= WARMUP:
                times[name].append(1000 * (time.perf_counter() - start))
    return times


def cold_cli_seconds(
    checkpoint: Path, index: Path, image: Path, device: str, repeats: int
) -> float:
    """Median wall time of the `stylequery query` command, a fresh process each time."""
    command = [sys.executable, "-m", "stylequery", "query", str(image)]
    command += ["--change", ":".join(CHANGE), "--checkpoint", str(checkpoint)]
    command += ["--index", str(index), "--device", device, "--json"]
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds.append(time.perf_counter() - start)
    return median(seconds)


def peak_memory_mb(checkpoint: Path, index: Path, image: Path, device: str) -> dict[str, float]:
    """Peak RSS of a fresh process after imports, after loading the engine, after queries."""
    command = [sys.executable, "-c", MEMORY_PROBE, str(checkpoint), str(index), str(image), device]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    imports, loaded, queried = (float(v) for v in output.split()[-3:])
    return {"rss_imports_mb": imports, "rss_engine_mb": loaded, "rss_peak_mb": queried}


def measure_shape(
    shape: str, args: argparse.Namespace, image: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Warm rows and cold rows (CLI, memory) of one model shape, per gallery size and dtype."""
    cfg = shape_config(shape)
    checkpoint = random_checkpoint(args.work / f"query-{shape}.pt", cfg, QUERY_WORDS)
    device = runtime.resolve_device(args.device)
    warm, cold = [], []
    for size in args.sizes:
        folders = make_indexes(args.work, shape, size, cfg.model.embed_dim, checkpoint)
        for dtype in args.dtypes:
            setting = {"shape": shape, "dim": cfg.model.embed_dim, "gallery": size, "dtype": dtype}
            engine = QueryEngine(checkpoint, folders[dtype], device)
            ms = warm_latencies(engine, image, args.runs, seed=size)
            del engine
            row = dict(setting)
            for name, values in ms.items():
                row[f"{name}_p50_ms"] = percentile(values, 50)
                row[f"{name}_p95_ms"] = percentile(values, 95)
            warm.append(row)
            cli = cold_cli_seconds(checkpoint, folders[dtype], image, str(device), args.repeats)
            cold.append({**setting, "cli_s": cli})
            if size == max(args.sizes):
                cold[-1].update(peak_memory_mb(checkpoint, folders[dtype], image, str(device)))
    return warm, cold


def main(argv: list[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    parser = base_parser(__doc__ or "", NAME)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--shapes", nargs="+", default=["reference", "cpu"], help="model shapes")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--runs", type=int, default=40, help="timed queries per setting")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    image = next((synthetic_catalogue(args.work, 4, 256) / "women").rglob("*.jpeg"))
    rows, cold = [], []
    for shape in args.shapes:
        warm_rows, cold_rows = measure_shape(shape, args, image)
        rows += warm_rows
        cold += cold_rows
    settings = {
        "device": str(runtime.resolve_device(args.device)),
        "k": 10,
        "runs": args.runs,
        "warmup": WARMUP,
        "cli_runs": args.repeats,
        "query_image": "a 256 px synthetic JPEG (not in the gallery)",
        "gallery": "random unit vectors, memory-mapped index folders",
        "weights": "random (speed only)",
        "note": "ms are per query (Q=1); rss_* in MB at the largest gallery only",
    }
    device = runtime.resolve_device(args.device)
    return write_result(NAME, args, argv, rows, settings, started, device, cold=cold)


if __name__ == "__main__":
    main()
