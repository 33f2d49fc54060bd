"""The state of a run in progress, and the checkpoints that save and restore it.

``last.pt`` holds the weights plus everything resume needs (optimiser, scheduler, scaler, RNG
states, best value so far); ``best.pt`` holds the weights only, for evaluate, embed and query.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from stylequery import runtime
from stylequery.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from stylequery.config import Config
from stylequery.data import PreparedData
from stylequery.errors import StyleQueryError
from stylequery.history import read_metrics_csv
from stylequery.model import StyleQueryModel

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Everything that changes while training, and what resume restores."""

    model: StyleQueryModel
    loss_fn: nn.Module
    step: nn.Module  # TrainingStep, DDP-wrapped under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.StepLR
    scaler: torch.amp.GradScaler
    iteration: int = 0
    best_value: float = -math.inf
    seconds_before: float = 0.0  # training time of earlier sessions of a resumed run
    started: float = field(default_factory=time.perf_counter)
    last_eval: float = field(default_factory=time.perf_counter)  # when validation last ran
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # frozen-stage cache
    history: list[dict[str, float]] = field(default_factory=list)  # metrics.csv rows

    def elapsed(self) -> float:
        """Seconds this run has trained (set-up and validation included), over resumes."""
        return self.seconds_before + time.perf_counter() - self.started


@dataclass
class RunContext:
    """Fixed facts of a run that the epoch loop needs."""

    cfg: Config
    prepared: PreparedData
    run_dir: Path
    device: torch.device
    total: int
    steps_per_epoch: int


def save_state(
    state: TrainState,
    ctx: RunContext,
    path: Path,
    metrics: dict[str, float] | None = None,
    resumable: bool = True,
) -> str:
    """Save a checkpoint from rank 0: weights, plus the resume state when ``resumable``
    (``last.pt``; ``best.pt`` serves inference and carries no optimiser or RNG state)."""
    if not runtime.is_main_process():
        return ""
    training = None
    if resumable:
        training = {
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict(),
            "rng": rng_state(),
            "best_value": state.best_value,
            "seconds": state.elapsed(),
        }
    return save_checkpoint(
        path,
        model=state.model,
        loss=state.loss_fn,
        cfg=ctx.cfg,
        vocab=list(ctx.prepared.vocab.tokens),
        iteration=state.iteration,
        training_state=training,
        metrics=metrics,
    )


def restore_state(state: TrainState, path: Path, ctx: RunContext) -> None:
    """Load ``last.pt`` into ``state`` for ``--resume``."""
    payload = load_checkpoint(path, map_location=ctx.device)
    if payload["vocab"] != list(ctx.prepared.vocab.tokens):
        raise StyleQueryError(f"{path}: was trained on another prepared vocabulary; cannot resume")
    state.model.load_state_dict(payload["model"])
    state.loss_fn.load_state_dict(payload["loss"])
    training = payload["training"]
    if not training:
        raise StyleQueryError(f"{path}: holds weights only, no training state to resume from")
    state.optimizer.load_state_dict(training["optimizer"])
    state.scheduler.load_state_dict(training["scheduler"])
    state.scaler.load_state_dict(training["scaler"])
    set_rng_state(training["rng"])
    state.iteration = int(payload["iteration"])
    state.best_value = float(training["best_value"])
    state.seconds_before = float(training.get("seconds", 0.0))
    state.started = time.perf_counter()
    state.history = read_metrics_csv(ctx.run_dir / "metrics.csv", state.iteration)
    logger.info("resumed %s at iteration %d", path, state.iteration)
