"""Training: pairs in, a trained checkpoint out, with validation, curves and exact resume.

``train(cfg, run_dir, device)`` is composed of :func:`build_loaders`, :func:`build_state`,
:func:`train_one_epoch`, validation through :mod:`stylequery.evaluate` and
:func:`save_state`. Data order depends only on ``(seed, epoch)`` and pair sampling only on
``(seed, epoch, index)``, so a resumed run replays exactly what an uninterrupted one would.
Under ``torchrun`` the same code runs DistributedDataParallel; only rank 0 logs, evaluates
and saves.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from stylequery import runtime
from stylequery.checkpoint import (
    fingerprint,
)
from stylequery.config import Config, check_best_metric, dump_config, replace
from stylequery.config import validate as validate_config
from stylequery.data import (
    EpochSampler,
    PairDataset,
    PreparedData,
    collate_pairs,
    load_prepared,
    prepared_dir,
)
from stylequery.encode import Encoding, encode_images
from stylequery.errors import DataError, StyleQueryError
from stylequery.evaluate import evaluate_model, format_metrics, test_best_checkpoint
from stylequery.features import cache_backbone_features
from stylequery.fileio import exclusive_lock
from stylequery.history import write_metrics_csv
from stylequery.loss import build_loss, gather_with_grad
from stylequery.metrics import selection_score
from stylequery.model import StyleQueryModel, build_model
from stylequery.progress import progress_bar
from stylequery.runs import checkpoint_paths
from stylequery.schedule import cosine_factor, run_progress, set_lr_factor
from stylequery.trainstate import RunContext, TrainState, restore_state, save_state
from stylequery.viz import plot_curves

logger = logging.getLogger(__name__)


class TrainingDiverged(StyleQueryError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What a finished run left behind."""

    run_dir: Path
    last: Path
    best: Path
    iterations: int
    best_value: float
    metrics: dict[str, float]
    fingerprint: str
    seconds: float


class TrainingStep(nn.Module):
    """The whole differentiable step in one ``forward``, so DDP synchronises every gradient
    (the loss's learnable scale included) and in-batch negatives come from all ranks."""

    def __init__(
        self, model: StyleQueryModel, loss_fn: nn.Module, encoding: Encoding, device: torch.device
    ):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn
        self.encoding, self.device = encoding, device

    def forward(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        """Loss of one batch.

        Args:
            source: Source images (B, 3, H, W) uint8, or cached backbone features (B, F).
            target: Target images or features, like ``source``.
            tokens: Modification text ids (B, L); lengths (B,).
        """
        enc, device = self.encoding, self.device
        with runtime.autocast(device, enc.precision):
            src = encode_images(self.model, source, enc, device, normalize=False)  # (B, D)
            tgt = encode_images(self.model, target, enc, device, normalize=False)  # (B, D)
            text = self.model.encode_text(tokens, lengths)  # (B, D)
            query = self.model.compose(src, text, normalize=False)  # (B, D)
        targets = gather_with_grad(tgt.float())  # (world * B, D)
        positives = torch.arange(len(query), device=query.device) + runtime.rank() * len(query)
        return self.loss_fn(query.float(), targets, positives)


def caches_features(cfg: Config) -> bool:
    """Whether training reads cached output of frozen backbone stages instead of pixels."""
    return cfg.model.freeze_image_encoder or cfg.model.frozen_stages > 0


def build_loaders(
    cfg: Config, prepared: PreparedData, device: torch.device
) -> tuple[PairDataset, EpochSampler, DataLoader]:
    """The training pair dataset, its sampler and loader."""
    frozen = caches_features(cfg)
    dataset = PairDataset(
        prepared,
        "train",
        cfg.data.image_size,
        cfg.data.modification_template,
        seed=cfg.train.seed,
        with_images=not frozen,
        hflip=cfg.data.hflip,
        cache=None
        if frozen or not cfg.data.use_image_cache
        else prepared.image_cache("train", cfg.data.image_size),
    )
    sampler = EpochSampler(
        len(dataset), cfg.train.batch_size, cfg.train.seed, runtime.rank(), runtime.world_size()
    )
    if sampler.num_batches == 0:
        raise DataError(
            f"{prepared.dir}: {len(dataset)} usable training pairs, fewer than one batch of "
            f"train.batch_size={cfg.train.batch_size} per process"
        )
    loader = DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=0 if frozen else cfg.data.num_workers,
        collate_fn=functools.partial(collate_pairs, vocab=prepared.vocab),
        pin_memory=device.type == "cuda",
        drop_last=True,
        generator=torch.Generator().manual_seed(cfg.train.seed),  # keeps the global RNG untouched
    )
    return dataset, sampler, loader


def build_state(cfg: Config, vocab_size: int, device: torch.device) -> TrainState:
    """Model, loss, optimiser (backbone at ``backbone_lr_mult`` when pretrained) and schedule."""
    runtime.seed_everything(cfg.train.seed)
    encoding = Encoding.from_config(cfg)
    model = build_model(cfg.model, vocab_size).to(device)
    model = model.to(memory_format=encoding.memory_format(device))
    loss_fn = build_loss(cfg.train.loss, cfg.train.loss_scale).to(device)
    mult = cfg.train.backbone_lr_mult if cfg.model.pretrained != "none" else 1.0
    trainable = lambda params: [p for p in params if p.requires_grad]  # noqa: E731
    groups = [
        {"params": trainable(model.backbone_parameters()), "lr": cfg.train.lr * mult},
        {
            "params": trainable(model.head_parameters()) + list(loss_fn.parameters()),
            "lr": cfg.train.lr,
        },
    ]
    optimizer = torch.optim.SGD(
        [g for g in groups if g["params"]],
        lr=cfg.train.lr,
        momentum=cfg.train.momentum,
        weight_decay=cfg.train.weight_decay,
    )
    decay_every = cfg.train.lr_decay_every
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer,
        step_size=max(decay_every, 1),
        gamma=cfg.train.lr_decay_factor if decay_every else 1.0,
    )
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.train.precision == "fp16")
    step: nn.Module = TrainingStep(model, loss_fn, encoding, device)
    if runtime.is_distributed():
        step = nn.parallel.DistributedDataParallel(
            step, device_ids=[device.index] if device.type == "cuda" else None
        )
    torch.manual_seed(cfg.train.seed + runtime.rank())  # dropout differs across ranks
    return TrainState(model, loss_fn, step, optimizer, scheduler, scaler)


def optimise(state: TrainState, batch: dict[str, Any], cfg: Config, device: torch.device) -> float:
    """One SGD step on a batch; returns the loss value."""
    if state.features:
        source = cached_features(state.features, batch, "source")
        target = cached_features(state.features, batch, "target")
    else:
        source, target = batch["source"], batch["target"]
    source, target, tokens, lengths = runtime.to_device(
        (source, target, batch["tokens"], batch["lengths"]), device
    )
    loss = state.step(source, target, tokens, lengths)
    value = float(loss.detach())
    if not math.isfinite(value):
        last = "none yet" if state.iteration == 0 else "weights/last.pt is the last good checkpoint"
        raise TrainingDiverged(
            f"loss became {value} at iteration {state.iteration + 1}; stopping ({last}). "
            "Try a lower train.lr or train.precision=fp32"
        )
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    return value


def cached_features(
    features: dict[str, torch.Tensor], batch: dict[str, Any], key: str
) -> torch.Tensor:
    """Cached frozen-stage features (B, ...) of the batch's ``source`` or ``target`` images, of
    the mirrored image where the batch's ``{key}_flip`` flag says so."""
    rows = batch[f"{key}_index"]
    plain = features["train"][rows]
    if f"{key}_flip" not in batch:
        return plain
    flip = batch[f"{key}_flip"].to(plain.device).view(-1, *[1] * (plain.dim() - 1))
    return torch.where(flip, features["train_flipped"][rows], plain)


def train_one_epoch(state: TrainState, loader: DataLoader, ctx: RunContext, bar: Any) -> None:
    """Train until the epoch's batches or the run's iterations run out."""
    cfg = ctx.cfg
    state.step.train()
    window: list[float] = []
    tick, pairs = time.perf_counter(), 0
    for batch in loader:
        value = optimise(state, batch, cfg, ctx.device)
        window.append(value)
        state.iteration += 1
        pairs += len(batch["tokens"])
        progress = run_progress(state.iteration, ctx.total, state.elapsed(), cfg.train.max_minutes)
        if cfg.train.lr_schedule == "cosine":
            set_lr_factor(state.optimizer, cosine_factor(progress))
        done = progress >= 1.0
        if state.iteration % cfg.train.log_every == 0 or done:
            images_per_s = 2 * pairs * runtime.world_size() / (time.perf_counter() - tick)
            record(state, ctx, loss=sum(window) / len(window), images_per_s=images_per_s)
            window, tick, pairs = [], time.perf_counter(), 0
            bar.set(img_s=f"{images_per_s:.0f}")
        bar.advance(1, loss=value, lr=state.optimizer.param_groups[-1]["lr"])
        if due_validation(state, cfg) and not done:
            validate(state, ctx)
        if cfg.train.checkpoint_every and state.iteration % cfg.train.checkpoint_every == 0:
            save_state(state, ctx, checkpoint_paths(ctx.run_dir)[0])
        if done:
            return


def due_validation(state: TrainState, cfg: Config) -> bool:
    """Whether ``eval_every`` iterations or ``eval_every_minutes`` have passed."""
    if cfg.train.eval_every and state.iteration % cfg.train.eval_every == 0:
        return True
    minutes = cfg.train.eval_every_minutes
    return minutes > 0 and time.perf_counter() - state.last_eval >= 60 * minutes


def record(state: TrainState, ctx: RunContext, **values: float) -> None:
    """Append a metrics row (rank 0 writes ``metrics.csv``)."""
    row = {
        "iteration": float(state.iteration),
        "epoch": state.iteration / ctx.steps_per_epoch,
        "lr": state.optimizer.param_groups[-1]["lr"],
        "minutes": state.elapsed() / 60,
        **values,
    }
    state.history.append(row)
    if runtime.is_main_process():
        write_metrics_csv(ctx.run_dir / "metrics.csv", state.history, ctx.cfg.eval.ks)


def validate(state: TrainState, ctx: RunContext) -> dict[str, float]:
    """Run the protocol on the validation split (rank 0), log it, and keep ``best.pt`` by
    ``train.best_metric``. The test split is never looked at here."""
    metrics: dict[str, float] = {}
    if runtime.is_main_process():
        result = evaluate_model(
            state.model,
            ctx.prepared,
            ctx.cfg,
            ctx.device,
            split="val",
            max_queries=ctx.cfg.train.eval_max_queries,
            features=state.features.get("val"),
        )
        metrics = result.metrics
        labelled = {f"val_{k}": v for k, v in metrics.items()}
        record(state, ctx, **labelled)
        logger.info("iteration %d: validation %s", state.iteration, format_metrics(metrics))
        value = selection_score(metrics, ctx.cfg.train.best_metric)
        if value > state.best_value:
            state.best_value = value
            save_state(state, ctx, checkpoint_paths(ctx.run_dir)[1], labelled, resumable=False)
        plot_curves(state.history, ctx.run_dir / "curves.png")
    state.last_eval = time.perf_counter()
    runtime.barrier()
    return metrics


def test_best(state: TrainState, ctx: RunContext) -> dict[str, float]:
    """Test recall of ``best.pt`` into ``metrics.json`` and a last ``test_`` row (rank 0)."""
    if not runtime.is_main_process():
        return {}
    best, out = checkpoint_paths(ctx.run_dir)[1], ctx.run_dir / "metrics.json"
    metrics = test_best_checkpoint(best, ctx.prepared, ctx.device, out).metrics
    record(state, ctx, **{f"test_{k}": v for k, v in metrics.items()})
    return metrics


def train(
    cfg: Config, run_dir: Path, device: torch.device | str = "auto", resume: bool = False
) -> TrainResult:
    """Train a model; write ``config.yaml``, ``metrics.csv``, ``curves.png`` and weights.

    The run folder is locked while training (a second run into it fails at once), and a new
    run folder that a failure leaves holding only ``config.yaml`` is removed.

    Args:
        cfg: Resolved config.
        run_dir: Run folder (created).
        device: Where to train: ``auto``, ``cpu``, ``cuda:N``, ``mps`` or a torch device.
        resume: Continue from ``run_dir/weights/last.pt``.

    Raises:
        ConfigError: A setting is out of range (a Config built in Python is checked too).
        LockError: Another process is training into ``run_dir``.
    """
    validate_config(cfg)
    check_best_metric(cfg)
    device = runtime.resolve_device(device)
    if not runtime.is_main_process():
        return _train(cfg, run_dir, device, resume)
    with exclusive_lock(run_dir, timeout=0):
        fresh = not run_dir.exists()
        try:
            return _train(cfg, run_dir, device, resume)
        except (StyleQueryError, KeyboardInterrupt):
            left = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
            if fresh and left <= {"config.yaml"}:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise


def _train(cfg: Config, run_dir: Path, device: torch.device, resume: bool) -> TrainResult:
    start = time.perf_counter()
    precision = runtime.resolve_precision(device, cfg.train.precision)
    cfg = replace(cfg, train=dataclasses.replace(cfg.train, precision=precision))
    runtime.check_precision(device, precision)
    prepared = load_prepared(prepared_dir(cfg.data), None, cfg.data.val_fraction, cfg.data.seed)
    if not prepared.split("val"):
        raise DataError(f"data.val_fraction={cfg.data.val_fraction}: no validation images")
    if runtime.is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, run_dir / "config.yaml")
    dataset, sampler, loader = build_loaders(cfg, prepared, device)
    state = build_state(cfg, len(prepared.vocab), device)
    state.started = start
    steps = sampler.num_batches
    total = cfg.train.iterations or max(1, math.ceil(cfg.train.epochs * steps))
    ctx = RunContext(cfg, prepared, run_dir, device, total, steps)
    last, best = checkpoint_paths(run_dir)
    if resume:
        restore_state(state, last, ctx)
    if caches_features(cfg):
        state.features = cache_backbone_features(state.model, prepared, cfg, device, run_dir)
    logger.info(
        "training %d iterations (%d per epoch, %d pairs) on %s into %s",
        *(total, steps, len(dataset), device, run_dir),
    )
    with progress_bar("train", total=total, enabled=runtime.is_main_process()) as bar:
        bar.completed = state.iteration
        while (
            state.iteration == 0
            or run_progress(state.iteration, total, state.elapsed(), cfg.train.max_minutes) < 1.0
        ):
            epoch = state.iteration // steps
            dataset.set_epoch(epoch)
            sampler.set_epoch(epoch, skip_batches=state.iteration % steps)
            train_one_epoch(state, loader, ctx, bar)
    runtime.broadcast_buffers(state.model)  # each rank updated its own BatchNorm statistics
    val_metrics = validate(state, ctx)
    fp = save_state(state, ctx, last, {f"val_{k}": v for k, v in val_metrics.items()})
    fp = fp or fingerprint(state.model.state_dict())
    metrics = test_best(state, ctx)
    seconds = time.perf_counter() - start
    return TrainResult(run_dir, last, best, state.iteration, state.best_value, metrics, fp, seconds)
