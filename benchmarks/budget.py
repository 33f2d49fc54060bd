"""Recall per wall-clock budget: every recipe trains for the same minutes on the same data.

Each recipe trains for --minutes of wall clock (train.max_minutes; feature caching and
validation count against it) on a synthetic catalogue of the size `stylequery synth` makes for
the reference comparison (1,200 products at 128 px: about 1,800 training images after the
validation split is carved out, and 430 test images). best.pt is chosen on the validation
queries; the table reports its test recall (the test split chooses nothing). With several
seeds the table gives the mean and the sample standard deviation. The learning curves
(validation recall@10 against minutes, every recipe) go to a PNG beside the JSON.

Recipes: "reference" is the reference code's own (full ResNet18 from scratch, fp32, concat,
64 px, lr 1e-2, batch 32, D=512); "frozen-old" is the cpu.yaml before this benchmark (ResNet18
frozen at random init, features cached, TIRG); "cpu" is configs/cpu.yaml as shipped;
"image_only" and "text_only" are cpu.yaml with the baseline composers; the rest are the
candidates that were measured to choose cpu.yaml.

With --jobs N, N runs go at once, each in its own process pinned to one of the cores the
script may use (with --threads torch threads), so a 2-core machine measures two 1-core runs
side by side instead of one after the other.

examples:
  python benchmarks/budget.py --threads 1 --jobs 2                # 15 min x recipes x 2 seeds
  taskset -c 1 python benchmarks/budget.py --threads 1 --minutes 2 --recipes reference cpu
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_overrides_option, base_parser, write_result
from stylequery import runtime
from stylequery.config import Config, load_config
from stylequery.data import load_prepared
from stylequery.history import read_metrics_csv
from stylequery.prepare import prepare
from stylequery.synth import synthesize
from stylequery.train import train
from stylequery.viz import plot_lines

NAME = "budget"
PRODUCTS = 1200  # `stylequery synth --products 1200`: ~2,000 training, ~430 test images
JPEG_SIZE = 128  # `stylequery synth`'s default image size
METRICS = ("recall@1", "recall@5", "recall@10", "recall@50")
CURVE_POINTS = 8  # validations per run (besides the last), for the learning curves

REFERENCE = ["model.composer=concat", "data.image_size=64", "train.precision=fp32"]
FROZEN_OLD = [
    "model.composer=tirg",
    "model.freeze_image_encoder=true",
    "model.embed_dim=256",
    "model.word_dim=128",
    "model.text_hidden=256",
    "data.image_size=64",
    "train.precision=fp32",
    "train.lr_decay_every=3000",
]


@dataclass(frozen=True)
class Recipe:
    """A config file plus overrides, trained for the budget."""

    config: str | None
    overrides: tuple[str, ...] = ()

    def settings(self) -> list[str]:
        return list(self.overrides)


def _cpu(*extra: str) -> Recipe:
    return Recipe("cpu.yaml", extra)


RECIPES: dict[str, Recipe] = {
    "reference": Recipe(None, tuple(REFERENCE)),
    "frozen-old": Recipe(None, tuple(FROZEN_OLD)),
    "cpu": _cpu(),
    "image_only": _cpu("model.composer=image_only"),
    "text_only": _cpu("model.composer=text_only"),
    # Candidates: each differs from cpu.yaml in one or two settings.
    "reference-bf16": Recipe(None, (*REFERENCE, "train.precision=bf16")),
    "cpu-fp32": _cpu("train.precision=fp32"),
    "cpu-gated": _cpu("model.composer=gated"),
    "cpu-frozen": _cpu("model.freeze_image_encoder=true"),
    "cpu-tirg": _cpu("model.composer=tirg"),
    "cpu-stages1": _cpu("model.frozen_stages=1"),
    "cpu-stages3": _cpu("model.frozen_stages=3"),
    "cpu-full": _cpu("model.frozen_stages=0"),
    "cpu-96px": _cpu("data.image_size=96"),
    "cpu-128px": _cpu("data.image_size=128"),
    "cpu-noflip": _cpu("data.hflip=false"),
    "cpu-lr3e-2": _cpu("train.lr=3e-2"),
    "cpu-lr3e-3": _cpu("train.lr=3e-3"),
    "cpu-batch64": _cpu("train.batch_size=64"),
    "cpu-batch16": _cpu("train.batch_size=16"),
    "cpu-step": _cpu("train.lr_schedule=step"),
    "cpu-wd5e-4": _cpu("train.weight_decay=5e-4"),
    "cpu-d512": _cpu("model.embed_dim=512", "model.word_dim=512", "model.text_hidden=512"),
}
DEFAULT_RECIPES = [
    "reference",
    "frozen-old",
    "cpu",
    "image_only",
    "text_only",
    "cpu-tirg",
    "cpu-gated",
    "cpu-fp32",
]


def budget_data(work: Path, products: int, sizes: set[int]) -> tuple[Path, dict[int, Path]]:
    """The catalogue and one prepared folder per image size (with its cache), made if absent."""
    catalogue = work / f"budget-catalogue-{products}p"
    if not (catalogue / "labels").is_dir():
        synthesize(catalogue, products=products, image_size=JPEG_SIZE, seed=0)
    prepared = {}
    for size in sorted(sizes):
        prepared[size] = catalogue / "prepared" / f"pants-{size}"
        if not (prepared[size] / "manifest.json").is_file():
            cfg = load_config(None, [f"data.root={catalogue}"])
            prepare(cfg.data, prepared[size], image_cache=size)
    return catalogue, prepared


def recipe_config(
    name: str, args: Any, seed: int, catalogue: Path, prepared: Path | None = None
) -> Config:
    """The resolved config of one recipe's budgeted run (``args.overrides`` last)."""
    recipe, minutes = RECIPES[name], args.minutes
    budget = [
        f"data.root={catalogue}",
        f"data.prepared_dir={prepared or ''}",
        "data.num_workers=0",
        f"train.seed={seed}",
        f"train.max_minutes={minutes}",
        "train.iterations=100000000",  # the budget ends the run
        "train.eval_every=0",
        f"train.eval_every_minutes={minutes / CURVE_POINTS}",
        "train.checkpoint_every=0",
        "train.log_every=1000",
    ]
    return load_config(recipe.config, [*budget, *recipe.settings(), *args.overrides])


def summarize(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row: mean (and sd) over seeds of each test metric, iterations, and the
    validation score that chose best.pt."""
    row: dict[str, Any] = {"recipe": name, "seeds": len(runs)}
    for metric in METRICS:
        values = [run[f"test_{metric}"] for run in runs]
        row[metric] = statistics.mean(values)
        row[f"{metric}_sd"] = statistics.stdev(values) if len(values) > 1 else None
    row["val_best"] = statistics.mean(run["val_best"] for run in runs)
    row["iterations"] = statistics.mean(run["iterations"] for run in runs)
    return row


def run_recipe(name: str, seed: int, args: Any, data: tuple[Path, dict[int, Path]]) -> tuple:
    """Train one recipe for the budget; its per-run row and its validation curve."""
    catalogue, prepared = data
    size = recipe_config(name, args, seed, catalogue).data.image_size
    cfg = recipe_config(name, args, seed, catalogue, prepared[size])
    run_dir = args.work / "budget-runs" / f"{name}-seed{seed}"
    result = train(cfg, run_dir, runtime.resolve_device(args.device))
    history = read_metrics_csv(run_dir / "metrics.csv", result.iterations)
    curve = [(r["minutes"], r["val_recall@10"]) for r in history if "val_recall@10" in r]
    row = {
        "recipe": name,
        "seed": seed,
        "iterations": result.iterations,
        "best_metric": cfg.train.best_metric,
        "val_best": result.best_value,
        **{f"test_{m}": result.metrics[m] for m in METRICS},
        "precision": load_config(run_dir / "config.yaml").train.precision,  # as resolved
        "minutes": result.seconds / 60,
    }
    return row, curve


def _pin_worker(counter: Any, cores: list[int], threads: int) -> None:
    """Pool initializer: bind this worker process to the next free core."""
    with counter.get_lock():
        core = cores[counter.value % len(cores)]
        counter.value += 1
    os.sched_setaffinity(0, {core})
    torch.set_num_threads(threads or 1)


def run_all(args: Any, data: tuple[Path, dict[int, Path]]) -> list[tuple]:
    """Every (seed, recipe) run, ``args.jobs`` at a time on separate cores, in order."""
    runs = list(itertools.product(args.seeds, args.recipes))
    if args.jobs <= 1:
        return [run_recipe(name, seed, args, data) for seed, name in runs]
    context = multiprocessing.get_context("spawn")
    cores = sorted(os.sched_getaffinity(0))
    initargs = (context.Value("i", 0), cores, args.threads)
    with ProcessPoolExecutor(args.jobs, context, _pin_worker, initargs) as pool:
        futures = [pool.submit(run_recipe, name, seed, args, data) for seed, name in runs]
        return [future.result() for future in futures]


def draw_curves(curves: dict[str, list], seed: int, minutes: float, out: Path) -> Path:
    """Validation recall@10 against minutes, one line per recipe (its run with ``seed``, so the
    legend stays readable; every seed's curve is in the JSON)."""
    suffix = f" s{seed}"
    series = {k.removesuffix(suffix): v for k, v in curves.items() if k.endswith(suffix)}
    title = f"validation recall@10, {minutes:g}-minute budget, seed {seed}"
    return plot_lines(series, out, title, "minutes")


def goals(rows: dict[str, dict[str, Any]], candidate: str) -> dict[str, Any]:
    """The issue's goals, from this run's rows (where the recipes they need were run)."""
    out: dict[str, Any] = {"candidate": candidate}
    if candidate in rows and "reference" in rows:
        ratio = rows[candidate]["recall@1"] / max(rows["reference"]["recall@1"], 1e-9)
        out.update(r1_vs_reference=ratio, r1_goal_met=ratio >= 1.4)
    if candidate in rows and "image_only" in rows:
        ratio = rows[candidate]["recall@10"] / max(rows["image_only"]["recall@10"], 1e-9)
        out.update(r10_vs_image_only=ratio, r10_goal_met=ratio >= 2.0)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    parser = base_parser(__doc__ or "", NAME, repeats=False)
    parser.add_argument("--minutes", type=float, default=15.0, help="budget per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="train.seed values")
    parser.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES, choices=list(RECIPES))
    parser.add_argument("--candidate", default="cpu", help="recipe the goals are checked for")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's own")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, one core each")
    parser.add_argument("--products", type=int, default=PRODUCTS, help="catalogue size")
    add_overrides_option(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    first = recipe_config(args.recipes[0], args, 0, Path())
    sizes = {recipe_config(n, args, 0, Path()).data.image_size for n in args.recipes}
    data = budget_data(args.work, args.products, sizes)
    per_run, curves = [], {}
    for row, curve in run_all(args, data):
        per_run.append(row)
        curves[f"{row['recipe']} s{row['seed']}"] = curve
    rows = [summarize(n, [r for r in per_run if r["recipe"] == n]) for n in args.recipes]
    plot = draw_curves(curves, args.seeds[0], args.minutes, args.out.with_suffix(".png"))
    prepared = load_prepared(
        data[1][first.data.image_size], None, first.data.val_fraction, first.data.seed
    )
    settings = {
        "device": str(runtime.resolve_device(args.device)),
        "minutes": args.minutes,
        "seeds": args.seeds,
        "threads": args.threads or (1 if args.jobs > 1 else torch.get_num_threads()),  # per run
        "jobs": args.jobs,
        "products": args.products,
        "extra_overrides": args.overrides,
        "recipes": {n: [RECIPES[n].config, *RECIPES[n].settings()] for n in args.recipes},
        "train_images": len(prepared.split("train")),
        "val_images": len(prepared.split("val")),
        "test_images": len(prepared.split("test")),
        "test_queries": len(prepared.queries),
        "plot": str(plot),
        "note": "test recall of best.pt, chosen on validation (val_best: its score); sd over seeds",
    }
    by_name = {row["recipe"]: row for row in rows}
    return write_result(
        NAME,
        args,
        argv,
        rows,
        settings,
        started,
        goals=goals(by_name, args.candidate),
        per_run=per_run,
        curves=curves,
    )


if __name__ == "__main__":
    main()
