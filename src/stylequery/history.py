"""A run's ``metrics.csv``: one row per logged iteration, rewritten atomically, read on resume.

Validation recall (``val_recall@K``, which chooses ``best.pt``) and the one test evaluation at
the end (``test_recall@K``) have their own columns, so no number's split is in doubt.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from stylequery.fileio import atomic_file

BASE_COLUMNS = ["iteration", "epoch", "minutes", "loss", "lr", "images_per_s"]
SPLITS = ("val", "test")  # recall columns are named by split: val_recall@10, test_recall@10


def write_metrics_csv(path: Path, rows: list[dict[str, float]], ks: list[int]) -> None:
    """Rewrite ``metrics.csv`` atomically with a fixed header (empty cells where unknown)."""
    header = BASE_COLUMNS + [f"{split}_recall@{k}" for split in SPLITS for k in ks]
    with atomic_file(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(k, row[k]) for k in header if k in row})


def _cell(key: str, value: float) -> str:
    return str(int(value)) if key == "iteration" else f"{value:.6g}"


def read_metrics_csv(path: Path, upto: int) -> list[dict[str, float]]:
    """Rows of an earlier ``metrics.csv`` up to iteration ``upto`` (for resume)."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(handle)
        ]
    return [r for r in rows if r.get("iteration", math.inf) <= upto]
