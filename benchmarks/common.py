"""Shared helpers of the benchmark scripts: machine facts, statistics, timing, fixtures, output.

Every script has ``main(argv) -> dict``, writes one JSON file (``benchmarks/results/<name>.json``
unless ``--out``) holding the machine, the settings, the command and the rows, and prints the
rows as a Rich table. Scratch data (catalogues, checkpoints, indexes) goes under ``--work`` and
is reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from rich.console import Console
from rich.table import Table

from stylequery.checkpoint import save_checkpoint
from stylequery.config import Config, load_config
from stylequery.loss import build_loss
from stylequery.model import build_model

T = TypeVar("T")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
WORK_DIR = Path(tempfile.gettempdir()) / "stylequery-bench"

# Model shapes the benchmarks measure: a shipped config plus overrides (random weights, never a
# download). "tiny" exists for the smoke tests.
SHAPES: dict[str, tuple[str | None, list[str]]] = {
    "cpu": ("cpu.yaml", []),  # 64 px, D=256, tirg, frozen ResNet18
    "reference": ("p100.yaml", ["model.pretrained=none"]),  # 224 px, D=512, concat
    "tiny": ("tiny.yaml", []),  # 32 px, D=16: the tests' config
}
QUERY_WORDS = ["<UNK>", "black", "blue", "green", "grey", "jeans", "pants", "white"]
# Taken when a script starts (imports this module), before it loads the machine itself.
LOAD_AT_START = os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def machine_info(device: torch.device | None = None) -> dict[str, Any]:
    """CPU model, cores, torch version and threads, GPU (when used), 1-minute load averages."""
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    uses_cuda = device is not None and device.type == "cuda"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if uses_cuda else None,
        "python": platform.python_version(),
        "load_average_1m_at_start": LOAD_AT_START,
        "load_average_1m_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between order statistics (numpy's)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median of per-round ratios: two cases measured side by side, round by round."""
    return median([a / b for a, b in zip(numerators, denominators, strict=True)])


def synchronize(device: torch.device | None) -> None:
    """Wait for queued GPU work, so wall-clock time covers it (no-op off CUDA)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device | None = None) -> float:
    """Seconds one call of ``fn`` takes, GPU work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved(cases: Mapping[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Run every case once per round, round after round.

    Cases measured this way share the machine's slow drifts (background load, clocks), so
    their ratios are side by side.
    """
    results: dict[str, list[T]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            results[name].append(case())
    return results


def base_parser(doc: str, name: str, repeats: bool = True) -> argparse.ArgumentParser:
    """An argument parser with the options the benchmarks share (``--repeats`` if asked)."""
    first, _, rest = doc.strip().partition("\n")
    parser = argparse.ArgumentParser(
        prog=f"benchmarks/{name}.py",
        description=first,
        epilog=rest,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR / f"{name}.json", help="JSON result file"
    )
    parser.add_argument(
        "--work", type=Path, default=WORK_DIR, help="scratch folder (reused between runs)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    if repeats:
        parser.add_argument(
            "--repeats", type=int, default=3, help="runs per figure; the median is reported"
        )
    return parser


def add_overrides_option(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable, into ``args.overrides``): extra config overrides for
    every training run of a quality benchmark (smoke tests only: the figures use none)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra override for every run (smoke tests only: the figures use none)",
    )


def shape_config(shape: str, overrides: Sequence[str] = ()) -> Config:
    """The config of a model shape in :data:`SHAPES`, with extra overrides."""
    path, shape_overrides = SHAPES[shape]
    return load_config(path, [*shape_overrides, *overrides])


def synthetic_catalogue(
    work: Path, products: int, jpeg_size: int, seed: int = 0, test_fraction: float = 0.17
) -> Path:
    """A synthetic catalogue (Fashion200k layout) under ``work``, made once and reused."""
    from stylequery.synth import synthesize

    root = work / f"catalogue-{products}p-{jpeg_size}px-s{seed}-t{test_fraction:g}"
    if not (root / "labels").is_dir():
        synthesize(
            root, products=products, image_size=jpeg_size, seed=seed, test_fraction=test_fraction
        )
    return root


def prepared_folder(root: Path, cache_size: int | None, name: str | None = None) -> Path:
    """``prepare`` a catalogue (with a uint8 image cache of ``cache_size`` px) unless done."""
    from stylequery.prepare import prepare

    out = root / "prepared" / (name or f"pants-cache{cache_size or 0}")
    if not (out / "manifest.json").is_file():
        cfg = load_config(None, [f"data.root={root}"])
        prepare(cfg.data, out, image_cache=cache_size)
    return out


def random_checkpoint(path: Path, cfg: Config, vocab: Sequence[str], seed: int = 0) -> Path:
    """Save a checkpoint of ``cfg``'s model with random weights (speed does not need trained)."""
    torch.manual_seed(seed)
    save_checkpoint(
        path,
        model=build_model(cfg.model, len(vocab), load_pretrained=False),
        loss=build_loss(cfg.train.loss, cfg.train.loss_scale),
        cfg=cfg,
        vocab=list(vocab),
        iteration=0,
    )
    return path


def command_line(name: str, argv: Sequence[str] | None) -> str:
    """The shell command that reproduces a run."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{name}.py", *args])


def write_result(
    name: str,
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    rows: list[dict[str, Any]],
    settings: dict[str, Any],
    started: float,
    device: torch.device | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write the JSON result and print the rows, and every list of dicts in ``extra``, as tables.

    Returns:
        What was written.
    """
    result = {
        "benchmark": name,
        "command": command_line(name, argv),
        "machine": machine_info(device),
        "settings": {"repeats": getattr(args, "repeats", None), **settings},
        "seconds": time.perf_counter() - started,
        "rows": rows,
        **extra,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_table(f"{name}  ({args.out})", rows)
    for key, value in extra.items():
        if value and isinstance(value, list) and all(isinstance(v, dict) for v in value):
            print_table(f"{name}: {key}", value)
    return result


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Rows (dicts with the same keys) as a Rich table; floats to 4 significant digits."""
    table = Table(title=title)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    # Off a terminal (a log file) Rich would wrap at 80 columns.
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
