"""Self-describing checkpoints: weights, resolved config, vocabulary, version and training state.

A checkpoint is a plain dict of tensors and Python primitives, so it loads with
``torch.load(weights_only=True)``: no pickled classes, nothing executed on load. Evaluate, embed
and query need nothing but the checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from stylequery import __version__
from stylequery.config import Config, config_from_dict, config_to_dict
from stylequery.encode import Encoding
from stylequery.errors import CheckpointError
from stylequery.fileio import atomic_file

if TYPE_CHECKING:
    from stylequery.model import StyleQueryModel

logger = logging.getLogger(__name__)

FORMAT = "stylequery-checkpoint/1"


def fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of a model's tensors."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(
            tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        )
    return digest.hexdigest()


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and primitives (weights_only-safe)."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [
            np_name,
            torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            np_pos,
            np_has_gauss,
            np_gauss,
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (loaded onto any device)."""
    state = {k: _to_cpu(v) for k, v in state.items()}
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def save_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    loss: nn.Module,
    cfg: Config,
    vocab: list[str],
    iteration: int,
    training_state: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    encoding: Encoding | None = None,
) -> str:
    """Write a checkpoint atomically and return the model's fingerprint.

    Args:
        path: Destination ``.pt`` file.
        model: The (unwrapped) model.
        loss: The loss module (it holds the learnable logit scale).
        cfg: The resolved config.
        vocab: Vocabulary tokens, index = token id.
        iteration: Iterations completed.
        training_state: Optimiser, scheduler, scaler and RNG states for resuming (``last.pt``
            only; ``best.pt`` is weights for inference).
        metrics: Latest validation metrics.
        encoding: How the model encodes images (default: from ``cfg``'s data and train keys).
    """
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    fp = fingerprint(weights)
    payload = {
        "format": FORMAT,
        "version": __version__,
        "fingerprint": fp,
        "iteration": iteration,
        "config": config_to_dict(cfg),
        "encoding": (encoding or Encoding.from_config(cfg)).to_dict(),
        "vocab": list(vocab),
        "model": weights,
        "loss": {k: v.detach().cpu() for k, v in loss.state_dict().items()},
        "metrics": dict(metrics or {}),
        "training": training_state or {},
    }
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)
    return fp


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``), or raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a stylequery checkpoint")
    return payload


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, ready for inference."""

    model: StyleQueryModel
    cfg: Config
    vocab: list[str]
    fingerprint: str
    path: Path
    iteration: int
    encoding: Encoding


def read_encoding(payload: dict[str, Any], cfg: Config, source: Path) -> Encoding:
    """The checkpoint's encoding record; older checkpoints without one derive it from config."""
    if "encoding" in payload:
        return Encoding.from_dict(payload["encoding"], str(source))
    return Encoding.from_config(cfg)


def load_model(path: Path, device: torch.device) -> LoadedModel:
    """Rebuild the model of a checkpoint in eval mode on ``device`` (no pretrained download)."""
    from stylequery.model import build_model

    payload = load_checkpoint(path)
    cfg = config_from_dict(payload["config"])
    model = build_model(cfg.model, len(payload["vocab"]), load_pretrained=False)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit the model ({str(exc).splitlines()[0]})"
        ) from None
    encoding = read_encoding(payload, cfg, Path(path))
    encoding.apply_to(model)
    model.to(device).eval()
    return LoadedModel(
        model=model,
        cfg=cfg,
        vocab=payload["vocab"],
        fingerprint=payload["fingerprint"],
        path=Path(path),
        iteration=int(payload["iteration"]),
        encoding=encoding,
    )
