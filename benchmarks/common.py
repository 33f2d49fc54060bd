"""Shared helpers for the benchmark scripts: machine facts, statistics, catalogues, output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """CPU model, cores, torch version and threads, GPU if any."""
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def timed(fn: Callable[[], Any], device: torch.device | None = None) -> float:
    """Seconds one call takes (synchronising CUDA around it)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def parser(description: str, name: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=RESULTS / f"{name}.json", help="JSON result file")
    p.add_argument(
        "--work", type=Path, default=Path("/tmp/stylequery-bench"), help="scratch folder"
    )
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda")
    p.add_argument("--repeats", type=int, default=3, help="runs per figure (median reported)")
    return p


def catalogue(work: Path, products: int, image_size: int, seed: int = 0, **kwargs: Any) -> Path:
    """A synthetic catalogue and its prepared folder, made once and reused."""
    from stylequery.synth import synthesize

    root = work / f"cat-{products}-{image_size}-{seed}-{kwargs.get('test_fraction', 'd')}"
    if not (root / "labels").is_dir():
        synthesize(root, products=products, image_size=image_size, seed=seed, **kwargs)
    return root


def prepared(root: Path, cache: int | None) -> Path:
    """Prepare a catalogue (with a uint8 cache of ``cache`` px) unless already prepared."""
    from stylequery.config import load_config
    from stylequery.data import prepare

    out = root / "prepared" / f"pants-{cache}"
    if not (out / "manifest.json").is_file():
        cfg = load_config(None, [f"data.root={root}"])
        prepare(cfg.data, out, image_cache=cache)
    return out


def finish(name: str, out: Path, rows: list[dict[str, Any]], extra: dict[str, Any]) -> dict:
    """Write the JSON result (rows + machine + extra) and print the rows as a table."""
    result = {"benchmark": name, "machine": machine(), "rows": rows, **extra}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title=f"{name} ({out})")
    for key in rows[0] if rows else []:
        table.add_column(key, justify="right")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)
    return result
