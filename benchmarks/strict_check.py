"""What ``prepare --strict`` costs: full decoding of every image against the header check.

``prepare`` (no image cache) is timed on a synthetic catalogue twice per round, without and
with ``strict``: the default reads each image's header and lets PIL verify what it can; strict
decodes every pixel at full resolution, in the same thread pool, so truncated or corrupt data
is found at prepare time instead of during training. Cases run interleaved; each figure is the
median of --repeats runs.

examples:
  taskset -c 0 python benchmarks/strict_check.py       # ~6,000 images of 256 px, one core
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    base_parser,
    interleaved,
    median,
    paired_ratio,
    synthetic_catalogue,
    timed,
    write_result,
)
from stylequery.config import load_config
from stylequery.prepare import prepare

NAME = "strict_check"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time prepare with and without --strict; write and return the result."""
    parser = base_parser(__doc__ or "", NAME)
    parser.add_argument("--products", type=int, default=3000, help="synthetic products")
    parser.add_argument("--jpeg-size", type=int, default=256, help="side of the JPEGs")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    root = synthetic_catalogue(args.work, args.products, args.jpeg_size)
    cfg = load_config(None, [f"data.root={root}"])
    out = args.work / f"strict-check-{args.products}p"
    images = {}

    def case(strict: bool) -> float:
        def run() -> None:
            summary = prepare(cfg.data, out, strict=strict)
            images[strict] = summary.images["train"] + summary.images["test"]

        return timed(run)

    times = interleaved({"header": lambda: case(False), "strict": lambda: case(True)}, args.repeats)
    rows = [
        {
            "check": name,
            "images": images[name == "strict"],
            "prepare_s": median(times[name]),
            "images_per_s": images[name == "strict"] / median(times[name]),
        }
        for name in ("header", "strict")
    ]
    ratio = paired_ratio(times["strict"], times["header"])
    settings = {"products": args.products, "jpeg_size": args.jpeg_size}
    return write_result(NAME, args, argv, rows, settings, started, strict_over_header=ratio)


if __name__ == "__main__":
    main()
