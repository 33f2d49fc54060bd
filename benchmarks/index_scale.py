# ruff: noqa: E402  (BLAS threads are set before numpy loads)
"""Index backends at scale: build time, memory, latency and recall@10 against exact search.

Galleries are synthetic L2-normalised vectors stored as float16 (the exact backend's compact
dtype): "uniform" (uniformly random directions: no cluster structure, the worst case for an
inverted-file index) and "clustered" (4096 random centres plus Gaussian noise of the same norm,
so a row's cosine to its centre is ~0.7, nearer to what trained embeddings look like). Queries
are 1,000 fresh vectors of the same kind. The truth is exact float32 top-10 over the stored
rows; recall@10 is the mean overlap of a backend's top 10 with it, over all queries (exact
itself is scored on one batch of 64: its float16 scores may order near-ties differently).

Per backend: build seconds (exact: writing nothing, the rows are the index; faiss: training
and adding, in memory; qdrant: upserting into a local-mode folder), the process's resident
memory after building (VmRSS, Linux; memory-mapped pages count once touched) and the index's
own bytes, single-query p50/p95 (--single queries) and batch-64 p50/p95 (the 1,000 queries in
batches) latency, k=10. faiss is swept over --nprobe. qdrant runs in qdrant-client's local mode
(exhaustive numpy search in this process) on galleries up to --qdrant-max rows.

examples:
  taskset -c 0 python benchmarks/index_scale.py                       # 1M and 10M at D=256
  taskset -c 0 python benchmarks/index_scale.py --sizes 100000 --backends exact qdrant
"""

from __future__ import annotations

import os

# One BLAS thread: OpenBLAS starts one per core it sees, and on a core shared via taskset they
# spin against each other (a 1000-query exact search ran 20x slower).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_parser, command_line, percentile, write_result
from stylequery.index import EmbeddingIndex, Gallery, build_index
from stylequery.index.faiss import FaissIndex, _add_rows, _train, default_params, import_faiss

K = 10
BATCH = 64
CENTRES = 4096
CHUNK = 262144


def make_rows(kind: str, num: int, dim: int, seed: int) -> np.ndarray:
    """(num, dim) float32 unit rows of ``kind`` (centres are shared by every seed)."""
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((num, dim), dtype=np.float32)
    if kind == "clustered":
        centres = np.random.default_rng(12345).standard_normal((CENTRES, dim), dtype=np.float32)
        rows += centres[rng.integers(0, CENTRES, num)]
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def gallery_file(work: Path, kind: str, num: int, dim: int) -> np.ndarray:
    """The float16 gallery as a read-only memmap, written once under ``work`` and reused."""
    path = work / f"gallery-{kind}-{num}x{dim}.npy"
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(num, dim))
        for start in range(0, num, CHUNK):
            stop = min(num, start + CHUNK)
            out[start:stop] = make_rows(kind, stop - start, dim, seed=1000 + start // CHUNK)
        out.flush()
        del out
        tmp.rename(path)
    return np.load(path, mmap_mode="r")


def exact_truth(gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(Q, K) exact float32 top-K rows (ties by lower row), chunked over the gallery."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(gallery), CHUNK):
        scores = queries @ np.asarray(gallery[start : start + CHUNK], np.float32).T
        top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
        best_s = np.concatenate([best_s, np.take_along_axis(scores, top, 1)], axis=1)
        best_i = np.concatenate([best_i, top + start], axis=1)
        order = np.lexsort((best_i, -best_s), axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    return best_i


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, truth, strict=False)]))


def memory_mb(field: str = "VmRSS") -> float | None:
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def latency(
    search: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    queries: np.ndarray,
    single: int,
    batches: int,
) -> tuple[dict[str, float], np.ndarray]:
    """Single-query and batch-64 p50/p95 milliseconds, and the ids of the batched queries."""
    search(queries[:1])  # warm-up
    singles = []
    for q in queries[:single]:
        start = time.perf_counter()
        search(q[None])
        singles.append((time.perf_counter() - start) * 1000)
    times, ids = [], []
    for start in range(0, min(len(queries), batches * BATCH), BATCH):
        began = time.perf_counter()
        ids.append(search(queries[start : start + BATCH])[1])
        times.append((time.perf_counter() - began) * 1000)
    stats = {
        "single_p50_ms": percentile(singles, 50),
        "single_p95_ms": percentile(singles, 95),
        "batch64_p50_ms": percentile(times, 50),
        "batch64_p95_ms": percentile(times, 95),
    }
    return stats, np.concatenate(ids)


def run_exact(rows: np.ndarray, queries: np.ndarray, truth: np.ndarray, single: int) -> dict:
    index = EmbeddingIndex(rows, [""] * len(rows), [None] * len(rows), "bench")
    stats, ids = latency(lambda q: index.search(q, K), queries, single, batches=1)
    return {
        "backend": "exact",
        "params": "float16 rows, memory-mapped",
        "build_s": 0.0,
        "rss_mb": memory_mb(),
        "index_mb": rows.nbytes / 2**20,
        **stats,
        "recall@10": recall(ids, truth[: len(ids)]),
    }


def run_faiss(
    rows: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    args: Any,
    factory: str | None,
) -> list[dict]:
    params = default_params(len(rows), rows.shape[1])
    if factory:
        params["factory"] = factory.format(nlist=params["nlist"], m=rows.shape[1] // 4)
    start = time.perf_counter()
    ann = _train(rows, params)
    _add_rows(ann, rows, 0)
    build_s = time.perf_counter() - start
    exact = EmbeddingIndex(rows, [""] * len(rows), [None] * len(rows), "bench")
    index = FaissIndex.wrap(exact, ann, params)
    index_mb = len(import_faiss().serialize_index(ann)) / 2**20
    out = []
    for nprobe in args.nprobe:
        if nprobe > params["nlist"]:
            continue
        index.search_params = {"nprobe": nprobe, "refine": args.refine}
        stats, ids = latency(lambda q: index.search(q, K), queries, args.single, args.batches)
        out.append(
            {
                "backend": "faiss",
                "params": f"{params['factory']} nprobe={nprobe} refine={args.refine}",
                "build_s": build_s,
                "rss_mb": memory_mb(),
                "index_mb": index_mb,
                **stats,
                "recall@10": recall(ids, truth),
            }
        )
        print(out[-1], flush=True)
    return out


def run_qdrant(rows: np.ndarray, queries: np.ndarray, truth: np.ndarray, args: Any, name: str):
    folder = args.work / f"qdrant-{name}"
    paths = [f"img/{i}.jpg" for i in range(len(rows))]
    start = time.perf_counter()
    index = build_index("qdrant", folder, Gallery.of(rows, paths, None, "bench"))
    build_s = time.perf_counter() - start
    stats, ids = latency(lambda q: index.search(q, K), queries, args.single, args.batches)
    info = index.info()
    index.close()  # type: ignore[attr-defined]
    return {
        "backend": "qdrant",
        "params": "local mode (exhaustive)",
        "build_s": build_s,
        "rss_mb": memory_mb(),
        "index_mb": (info["bytes"] or 0) / 2**20,
        **stats,
        "recall@10": recall(ids, truth),
    }


def run_case(kind: str, num: int, dim: int, args: Any) -> list[dict]:
    rows = gallery_file(args.work, kind, num, dim)
    queries = make_rows(kind, args.queries, dim, seed=1)
    truth_path = args.work / f"truth-{kind}-{num}x{dim}-{args.queries}.npy"
    if not truth_path.is_file():
        began = time.perf_counter()
        np.save(truth_path, exact_truth(rows, queries))
        print(f"{kind} {num}x{dim}: truth in {time.perf_counter() - began:.0f}s", flush=True)
    truth = np.load(truth_path)
    case = {"kind": kind, "gallery": num, "dim": dim}
    out = []
    if "exact" in args.backends:
        out.append({**case, **run_exact(rows, queries, truth, args.exact_single)})
        print(out[-1], flush=True)
    if "faiss" in args.backends:
        for factory in args.factories or [None]:
            out += [{**case, **row} for row in run_faiss(rows, queries, truth, args, factory)]
    if "qdrant" in args.backends and num <= args.qdrant_max:
        out.append({**case, **run_qdrant(rows, queries, truth, args, f"{kind}-{num}x{dim}")})
        print(out[-1], flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    parser = base_parser(__doc__ or "", "index_scale", repeats=False)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[256])
    parser.add_argument("--kinds", nargs="+", default=["uniform", "clustered"])
    parser.add_argument("--backends", nargs="+", default=["exact", "faiss", "qdrant"])
    parser.add_argument("--queries", type=int, default=1000, help="queries scored for recall")
    parser.add_argument("--single", type=int, default=200, help="single queries timed")
    parser.add_argument("--exact-single", type=int, default=10, help="single exact queries")
    parser.add_argument("--batches", type=int, default=16, help="batches of 64 timed")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    parser.add_argument("--refine", type=int, default=10, help="faiss candidates per result")
    parser.add_argument("--factories", nargs="*", help="faiss factory strings ({nlist}, {m})")
    parser.add_argument("--qdrant-max", type=int, default=100_000, help="largest qdrant gallery")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for dim in args.dims:
        for num in args.sizes:
            for kind in args.kinds:
                rows += run_case(kind, num, dim, args)
                partial = {"partial": True, "command": command_line("index_scale", argv)}
                args.out.write_text(json.dumps({**partial, "rows": rows}, indent=2) + "\n")
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "work", "device")}
    return write_result(
        "index_scale", args, argv, rows, settings, started, peak_rss_mb=memory_mb("VmHWM")
    )


if __name__ == "__main__":
    main()
