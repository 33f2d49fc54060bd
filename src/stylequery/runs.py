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


def latest_run(base: Path = TRAIN_DIR, checkpoint: str = "best.pt") -> Path:
    """The run under ``base`` whose ``weights/<checkpoint>`` was written last."""
    found = list(base.glob(f"*/weights/{checkpoint}"))
    if not found:
        raise StyleQueryError(f"no trained model under {base}/: run `stylequery train` first")
    return max(found, key=lambda p: p.stat().st_mtime).parent.parent


def newest_checkpoint(base: Path = TRAIN_DIR) -> Path:
    """``best.pt`` of the newest run under ``base`` (what commands use when given none)."""
    return checkpoint_paths(latest_run(base))[1]


def resume_dir(target: Path | None, base: Path = TRAIN_DIR) -> Path:
    """The run folder to resume: ``target`` (a run folder or one of its checkpoints), else the
    run under ``base`` whose ``last.pt`` was written last."""
    if target is None:
        run_dir = latest_run(base, "last.pt")
    else:
        run_dir = target.parent.parent if target.suffix == ".pt" else target
    if not (run_dir / "config.yaml").is_file():
        raise StyleQueryError(f"cannot resume {target or run_dir}: no config.yaml in {run_dir}")
    return run_dir


def metrics_path(checkpoint: Path) -> Path:
    """Where ``evaluate`` writes: ``<run>/metrics.json``, else ``<checkpoint>.metrics.json``."""
    index = default_index_dir(checkpoint)
    return index.parent / "metrics.json" if index else Path(checkpoint).with_suffix(".metrics.json")


def find_index(checkpoint: Path, index: Path | None = None) -> Path:
    """``index``, else the index folder of the checkpoint's run; it must hold an index."""
    found = index or default_index_dir(checkpoint)
    if found is None or not (found / "index.json").is_file():
        where = f"at {found}" if found else f"beside {checkpoint}"
        raise StyleQueryError(
            f"no index {where}: run `stylequery embed` with checkpoint {checkpoint} first"
        )
    return found


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
