"""The recall a model could reach on the budget catalogue if it saw everything the pictures show.

A synthetic caption holds words no picture shows (a brand, "stretch", "high-rise"), as real
product titles do; the pictures show the cut (the subcategory folder), the colour and the
pattern (see stylequery.garments). An oracle that knows exactly those three for every image,
and nothing else, ranks first the gallery images whose cut, colour and pattern are the
target's, in random order among themselves. Its expected recall@K for a query, with h hits
among those c candidates, is 1 - C(c - h, K) / C(c, K). That is the ceiling of any
image-and-text model on these queries; BENCHMARKS.md compares the budget recipes with it.

examples:
  python benchmarks/ceiling.py                    # the catalogue of benchmarks/budget.py
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget import PRODUCTS, budget_data
from common import base_parser, write_result
from stylequery.config import load_config
from stylequery.data import Item, load_prepared
from stylequery.evaluate import split_queries
from stylequery.garments import PATTERNS

NAME = "ceiling"
KS = (1, 5, 10)


def visible(item: Item) -> tuple[str, str, str]:
    """What a synthetic picture shows: (subcategory folder, colour word, pattern word)."""
    words = item.caption.split()
    pattern = words[1] if len(words) > 1 and words[1] in PATTERNS else "solid"
    return item.path.split("/")[2], words[0], pattern


def oracle_recall(items: list[Item], queries: list[tuple[int, int]]) -> dict[str, float]:
    """Mean expected recall@K of the visible-attribute oracle over ``queries``, and the mean
    number of gallery images (source left out) that look like the target."""
    keys = [visible(item) for item in items]
    totals, look_alikes = dict.fromkeys(KS, 0.0), 0
    for source, target in queries:
        candidates = [i for i, key in enumerate(keys) if i != source and key == keys[target]]
        c = len(candidates)
        h = sum(items[i].caption == items[target].caption for i in candidates)
        look_alikes += c
        for k in KS:
            totals[k] += 1.0 - math.comb(c - h, min(k, c)) / math.comb(c, min(k, c))
    recalls = {f"recall@{k}": totals[k] / len(queries) for k in KS}
    return {"look_alikes_per_target": look_alikes / len(queries), **recalls}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    parser = base_parser(__doc__ or "", NAME, repeats=False)
    parser.add_argument("--products", type=int, default=PRODUCTS, help="catalogue size")
    args = parser.parse_args(argv)
    cfg = load_config("cpu.yaml")
    _, prepared_dirs = budget_data(args.work, args.products, {cfg.data.image_size})
    prepared = load_prepared(
        prepared_dirs[cfg.data.image_size], None, cfg.data.val_fraction, cfg.data.seed
    )
    rows = []
    for split in ("val", "test"):
        items, queries = prepared.split(split), split_queries(prepared, split, cfg.data.seed)
        rows.append(
            {
                "split": split,
                "gallery": len(items),
                "queries": len(queries),
                **oracle_recall(items, queries),
            }
        )
    settings = {"products": args.products, "ks": list(KS), "config": "cpu.yaml"}
    return write_result(NAME, args, argv, rows, settings, started)


if __name__ == "__main__":
    main()
