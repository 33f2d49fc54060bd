"""Retrieval quality: image_only, text_only, concat and tirg with the same budget and data.

Every model trains with configs/cpu.yaml, overriding only model.composer (and train.seed for
the spread), on the demo's synthetic catalogue (stylequery.demo: DEMO_PRODUCTS products,
DEMO_IMAGE_SIZE px JPEGs, seed 0, prepared with cpu.yaml's 64 px cache). Validation runs once,
at the end (train.eval_every=0: it does not change the weights, only saves time), on the full
test split, so the figures are those `stylequery evaluate` reports for the run's last.pt.
With several seeds the table gives the mean and the sample standard deviation.

examples:
  python benchmarks/quality.py                      # 2 seeds x 4 composers, ~20 min on 2 cores
  python benchmarks/quality.py --catalogue stylequery-demo/catalogue --seeds 0
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_overrides_option, base_parser, write_result
from stylequery import runtime
from stylequery.config import load_config
from stylequery.data import load_prepared
from stylequery.demo import DEMO_IMAGE_SIZE, DEMO_PRODUCTS
from stylequery.prepare import prepare
from stylequery.synth import synthesize
from stylequery.train import train

NAME = "quality"
COMPOSERS = ("image_only", "text_only", "concat", "tirg")
METRICS = ("recall@1", "recall@10", "recall@50")


def demo_catalogue(catalogue: Path, products: int) -> tuple[Path, Path]:
    """The demo's catalogue and prepared folder (``<catalogue>/prepared/pants``), made if absent."""
    prepared = catalogue / "prepared" / "pants"
    if not (catalogue / "labels").is_dir():
        synthesize(catalogue, products=products, image_size=DEMO_IMAGE_SIZE, seed=0)
    if not (prepared / "manifest.json").is_file():
        cfg = load_config("cpu.yaml", [f"data.root={catalogue}"])
        prepare(cfg.data, prepared, image_cache=cfg.data.image_size)
    return catalogue, prepared


def summarize(composer: str, runs: list[dict[str, float]], seconds: list[float]) -> dict:
    """One table row: the mean of each metric over seeds, its spread, the training time."""
    row: dict[str, Any] = {"composer": composer}
    for metric in METRICS:
        values = [run[metric] for run in runs]
        row[metric] = statistics.mean(values)
        row[f"{metric}_sd"] = statistics.stdev(values) if len(values) > 1 else None
    row["seeds"] = len(runs)
    row["train_s"] = statistics.mean(seconds)
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    parser = base_parser(__doc__ or "", NAME, repeats=False)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="train.seed values")
    parser.add_argument("--catalogue", type=Path, help="reuse (or make) the catalogue here")
    parser.add_argument("--products", type=int, default=DEMO_PRODUCTS, help="catalogue size")
    parser.add_argument("--composers", nargs="+", default=list(COMPOSERS), choices=COMPOSERS)
    add_overrides_option(parser)
    args = parser.parse_args(argv)
    device = runtime.resolve_device(args.device)
    default = args.work / f"quality-catalogue-{args.products}p"
    catalogue, prepared = demo_catalogue(args.catalogue or default, args.products)
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in args.composers}
    seconds: dict[str, list[float]] = {c: [] for c in args.composers}
    per_run = []
    for seed in args.seeds:
        for composer in args.composers:
            overrides = [f"data.root={catalogue}", f"data.prepared_dir={prepared}"]
            overrides += [f"model.composer={composer}", f"train.seed={seed}", "train.eval_every=0"]
            cfg = load_config("cpu.yaml", [*overrides, *args.overrides])
            result = train(cfg, args.work / "quality-runs" / f"{composer}-seed{seed}", device)
            runs[composer].append(result.metrics)
            seconds[composer].append(result.seconds)
            per_run.append({"composer": composer, "seed": seed, **result.metrics})
    rows = [summarize(c, runs[c], seconds[c]) for c in args.composers]
    data = load_prepared(prepared)
    settings = {
        "device": str(device),
        "config": "cpu.yaml",
        "seeds": args.seeds,
        "catalogue": str(catalogue),
        "train_images": len(data.split("train")),
        "test_images": len(data.split("test")),
        "test_queries": len(data.queries),
        "jpeg_size": DEMO_IMAGE_SIZE,
        "extra_overrides": args.overrides,
        "note": "recall on the full test split after the last iteration; sd over seeds",
    }
    return write_result(NAME, args, argv, rows, settings, started, device, per_run=per_run)


if __name__ == "__main__":
    main()
