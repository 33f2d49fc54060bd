"""HTTP query latency of `stylequery serve` (upload + encode + search + JSON) against the cold CLI.

For each model shape (cpu.yaml's 64 px D=256 and the reference 224 px D=512, random weights)
and gallery size (random unit vectors as float32 index folders, shared with
query_latency.py), the server runs as a subprocess and C client threads (C = 1, 4, 16) post
about --requests multipart queries in all (at least 2 each): one 256 px JPEG upload, one
change, k=10, over keep-alive connections. Latency is per request, p50 and p95 over all
clients, after 3 warm-up requests; an error is any answer other than 200 or a failed request.
"cli" is the cold `stylequery query` of the same image and change (median of --repeats), and
"speedup" the cold CLI time over the warm single-client p50. Goal on 2 CPU cores: speedup
>= 20 and no errors at 16 clients.

examples:
  taskset -c 0 python benchmarks/serve_latency.py    # about 4 minutes, one core
  python benchmarks/serve_latency.py --sizes 10000 --shapes cpu --clients 1 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    QUERY_WORDS,
    base_parser,
    percentile,
    random_checkpoint,
    shape_config,
    synthetic_catalogue,
    write_result,
)
from query_latency import CHANGE, cold_cli_seconds, make_indexes

NAME = "serve_latency"
WARMUP = 3
START_TIMEOUT_S = 180


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(checkpoint: Path, index: Path, device: str) -> tuple[subprocess.Popen[str], str]:
    """`stylequery serve` in a subprocess, once its /api/health answers; and its URL."""
    port = free_port()
    command = [sys.executable, "-m", "stylequery", "serve", "--checkpoint", str(checkpoint)]
    command += ["--index", str(index), "--port", str(port), "--device", device]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}: {proc.communicate()[1]}")
        try:
            httpx.get(f"{url}/api/health", timeout=5).raise_for_status()
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"serve did not answer within {START_TIMEOUT_S} s")


def stop_server(proc: subprocess.Popen[str]) -> None:
    """SIGINT, as Ctrl-C would; the server must exit cleanly."""
    proc.send_signal(2)
    proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"serve exited with {proc.returncode} on SIGINT")


def client(url: str, image: bytes, requests: int, out: list[float], errors: list[str]) -> None:
    """Post ``requests`` queries one after the other; record ms per success, or the error."""
    fields = {"changes": json.dumps([{"from": CHANGE[0], "to": CHANGE[1]}]), "k": "10"}
    with httpx.Client(base_url=url, timeout=120) as session:
        for _ in range(requests):
            start = time.perf_counter()
            try:
                files = {"image": ("query.jpeg", image, "image/jpeg")}
                response = session.post("/api/query", data=fields, files=files)
                ok = response.status_code == 200 and len(response.json()["results"]) == 10
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                ok, reason = False, type(exc).__name__
            if ok:
                out.append(1000 * (time.perf_counter() - start))
            else:
                errors.append(reason)


def load(url: str, image: bytes, clients: int, per_client: int) -> dict[str, Any]:
    """Latency percentiles and errors of ``clients`` concurrent clients."""
    times: list[float] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=client, args=(url, image, per_client, times, errors))
        for _ in range(clients)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": clients * per_client,
        "errors": len(errors),
        "p50_ms": percentile(times, 50) if times else None,
        "p95_ms": percentile(times, 95) if times else None,
        "queries_per_s": len(times) / wall,
    }


def measure(
    shape: str, size: int, args: argparse.Namespace, image: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows per client count, and the cold-CLI comparison, of one model shape and gallery."""
    cfg = shape_config(shape)
    checkpoint = random_checkpoint(args.work / f"query-{shape}.pt", cfg, QUERY_WORDS)
    index = make_indexes(args.work, shape, size, cfg.model.embed_dim, checkpoint)["float32"]
    setting = {"shape": shape, "image_size": cfg.data.image_size, "dim": cfg.model.embed_dim}
    setting["gallery"] = size
    proc, url = start_server(checkpoint, index, args.device)
    data = image.read_bytes()
    try:
        load(url, data, 1, WARMUP)
        rows = []
        for c in args.clients:
            per_client = max(2, math.ceil(args.requests / c))
            rows.append({**setting, **load(url, data, c, per_client)})
    finally:
        stop_server(proc)
    cli_s = cold_cli_seconds(checkpoint, index, image, args.device, args.repeats)
    single = next((r["p50_ms"] for r in rows if r["clients"] == 1 and r["p50_ms"]), None)
    speedup = 1000 * cli_s / single if single else None
    return rows, {**setting, "cli_s": cli_s, "serve_p50_ms": single, "speedup": speedup}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    parser = base_parser(__doc__ or "", NAME)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--shapes", nargs="+", default=["cpu", "reference"], help="model shapes")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=32, help="requests per client count")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    image = next((synthetic_catalogue(args.work, 4, 256) / "women").rglob("*.jpeg"))
    rows, cold = [], []
    for shape in args.shapes:
        for size in args.sizes:
            shape_rows, comparison = measure(shape, size, args, image)
            rows += shape_rows
            cold.append(comparison)
    settings = {
        "device": args.device,
        "k": 10,
        "requests": args.requests,
        "warmup": WARMUP,
        "cli_runs": args.repeats,
        "cpu_affinity": sorted(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "query_image": f"a 256 px synthetic JPEG ({image.stat().st_size:,} bytes), not in gallery",
        "gallery": "random unit vectors, float32 memory-mapped index folders",
        "weights": "random (speed only)",
        "server": "stylequery serve subprocess; clients are threads of this process (httpx)",
    }
    return write_result(NAME, args, argv, rows, settings, started, cold=cold)


if __name__ == "__main__":
    main()
