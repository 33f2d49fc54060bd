"""Where runs live: ``runs/train/<name>/`` with ``config.yaml``, ``metrics.csv``, ``curves.png``,
``weights/{last,best}.pt`` and, once embedded, ``index/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from stylequery.errors import StyleQueryError

TRAIN_DIR = Path("runs") / "train"


def new_run_dir(base: Path, name: str = "") -> Path:
    """``base/name``, or the next free ``base/runN`` when no name is given (not created)."""
    if name:
        if "/" in name or name in (".", ".."):
            raise StyleQueryError(f"train.name '{name}' must be a plain folder name")
        return base / name
    taken = [int(m.group(1)) for p in base.glob("run*") if (m := re.fullmatch(r"run(\d+)", p.name))]
    return base / f"run{max(taken, default=0) + 1}"


def checkpoint_paths(run_dir: Path) -> tuple[Path, Path]:
    """``(last.pt, best.pt)`` of a run."""
    return run_dir / "weights" / "last.pt", run_dir / "weights" / "best.pt"


def latest_run(base: Path = TRAIN_DIR) -> Path:
    """The most recently written run under ``base`` that has a best checkpoint."""
    runs = [p.parent.parent for p in base.glob("*/weights/best.pt")]
    if not runs:
        raise StyleQueryError(
            f"no trained model under {base}/: run `stylequery train` first (or pass --checkpoint)"
        )
    return max(runs, key=lambda p: checkpoint_paths(p)[1].stat().st_mtime)


def relative_to_cwd(path: str | Path) -> Path:
    """A path relative to the working folder when it lies below it, else as given."""
    try:
        return Path(path).resolve().relative_to(Path.cwd())
    except ValueError:
        return Path(path)


def default_index_dir(checkpoint: Path) -> Path | None:
    """``<run>/index`` for a checkpoint stored as ``<run>/weights/<name>.pt``, else None."""
    checkpoint = Path(checkpoint)
    if checkpoint.parent.name == "weights":
        return checkpoint.parent.parent / "index"
    return None
