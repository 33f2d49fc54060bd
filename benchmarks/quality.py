"""Retrieval quality: image_only, text_only, concat and tirg with the same budget and data.

Every model trains with configs/cpu.yaml, overriding only ``model.composer`` (and the seed), on
the demo's synthetic catalogue; the figures are the final validation recall on the full test
split (the same numbers ``stylequery evaluate`` gives for ``last.pt``).

    python benchmarks/quality.py                      # about 6 minutes per seed on 2 CPU cores
    python benchmarks/quality.py --seeds 0 1 2
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import catalogue, finish, parser, prepared
from stylequery import runtime
from stylequery.config import load_config
from stylequery.demo import DEMO_IMAGE_SIZE, DEMO_PRODUCTS
from stylequery.train import train

COMPOSERS = ("image_only", "text_only", "concat", "tirg")
KS = (1, 10, 50)


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0], "quality")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--products", type=int, default=DEMO_PRODUCTS)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="extra config override for every run, e.g. train.iterations=100",
    )
    args = p.parse_args(argv)
    device = runtime.resolve_device(args.device)
    root = catalogue(args.work, args.products, DEMO_IMAGE_SIZE)
    prep = prepared(root, load_config("cpu.yaml").data.image_size)
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in COMPOSERS}
    for seed in args.seeds:
        for composer in COMPOSERS:
            cfg = load_config(
                "cpu.yaml",
                [
                    f"data.root={root}",
                    f"data.prepared_dir={prep}",
                    f"model.composer={composer}",
                    f"train.seed={seed}",
                    "train.eval_every=0",
                    *args.overrides,
                ],
            )
            result = train(cfg, args.work / "quality" / f"{composer}-{seed}", device)
            runs[composer].append(result.metrics)
    rows = []
    for composer, metrics in runs.items():
        row: dict[str, object] = {"composer": composer}
        for k in KS:
            values = [m[f"recall@{k}"] for m in metrics]
            row[f"recall@{k}"] = statistics.mean(values)
            if len(values) > 1:
                row[f"recall@{k}_sd"] = statistics.stdev(values)
        rows.append(row)
    return finish(
        "quality",
        args.out,
        rows,
        {
            "seeds": args.seeds,
            "products": args.products,
            "config": "configs/cpu.yaml",
            "overrides": args.overrides,
            "device": str(device),
        },
    )


if __name__ == "__main__":
    main()
