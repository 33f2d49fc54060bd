"""How far a run is, by iterations or by wall clock, and the learning rate that follows.

A run ends when its iterations or its time budget (``train.max_minutes``) are spent, whichever
comes first; :func:`run_progress` says how much of it is spent, so a cosine schedule expressed
against it still decays to zero when the budget, not the iteration count, ends the run.
"""

from __future__ import annotations

import math

import torch


def run_progress(iteration: int, total: int, seconds: float, max_minutes: float) -> float:
    """Share of the run spent, in [0, 1]: iterations of ``total`` or seconds of the budget
    (``max_minutes`` > 0), whichever is further along."""
    progress = iteration / max(total, 1)
    if max_minutes > 0:
        progress = max(progress, seconds / (60.0 * max_minutes))
    return min(progress, 1.0)


def cosine_factor(progress: float) -> float:
    """Learning-rate factor of a cosine schedule: 1 at the start, 0 when the run is spent."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def set_lr_factor(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every parameter group to ``factor`` times its initial learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor
