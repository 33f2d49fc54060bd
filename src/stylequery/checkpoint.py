"""Self-describing checkpoints and exports: weights, resolved config, vocabulary, image
encoding, version and (``last.pt`` only) training state.

A checkpoint is a plain dict of tensors and Python primitives, so it loads with
``torch.load(weights_only=True)``: no pickled classes, nothing executed on load. An export
folder holds the same model as ``model.safetensors`` plus ``stylequery.json``. Evaluate, embed
and query need nothing but one of the two (:func:`load_model` reads both).
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn

from stylequery import __version__
from stylequery.config import Config, config_from_dict, config_to_dict
from stylequery.encode import Encoding
from stylequery.errors import CheckpointError, ConfigError
from stylequery.fileio import atomic_dir, atomic_file, read_json, read_torch, write_json
from stylequery.runtime import resolve_device

if TYPE_CHECKING:
    from stylequery.model import StyleQueryModel

logger = logging.getLogger(__name__)

FORMAT = "stylequery-checkpoint/1"
EXPORT_FORMAT = "stylequery-export/1"
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_META = "stylequery.json"


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


# What every checkpoint holds, and the type each entry must have.
_REQUIRED = {
    "fingerprint": str,
    "iteration": int,
    "config": dict,
    "vocab": list,
    "model": dict,
    "loss": dict,
}


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``), or raise CheckpointError.

    Nothing in the file is executed; any damage is one line (:func:`fileio.read_torch`).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    payload = read_torch(path, "checkpoint", CheckpointError, map_location)
    _check_structure(payload, path)
    return payload


def _check_structure(payload: Any, path: Path) -> None:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a stylequery checkpoint (no format '{FORMAT}')")
    missing = [key for key in _REQUIRED if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(map(repr, missing))}")
    wrong = [key for key, kind in _REQUIRED.items() if not isinstance(payload[key], kind)]
    if wrong:
        raise CheckpointError(
            f"{path}: checkpoint has {', '.join(map(repr, wrong))} of the wrong type"
        )
    tensors = [*payload["model"].values(), *payload["loss"].values()]
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        raise CheckpointError(f"{path}: checkpoint's 'model' or 'loss' holds non-tensors")
    if not all(isinstance(word, str) for word in payload["vocab"]):
        raise CheckpointError(f"{path}: checkpoint's 'vocab' holds non-strings")


def weights_misfit(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """Which weights do not fit a model's state dict (empty when all do), in one line."""

    def some(names: list[str]) -> str:
        shown = ", ".join(repr(n) for n in names[:3])
        return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    parts = []
    if missing := sorted(expected.keys() - given.keys()):
        parts.append(f"missing {some(missing)}")
    if unexpected := sorted(given.keys() - expected.keys()):
        parts.append(f"unexpected {some(unexpected)}")
    for name in sorted(expected.keys() & given.keys()):
        if tuple(expected[name].shape) != tuple(given[name].shape):
            want, got = tuple(expected[name].shape), tuple(given[name].shape)
            parts.append(f"{name!r} has shape {got}, the model's is {want}")
            break
    return "; ".join(parts)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def export_model(checkpoint: Path, out_dir: Path) -> Path:
    """Write a checkpoint's model as an export folder, atomically, and return the folder.

    The folder holds ``model.safetensors`` (the weights, loadable without unpickling) and
    ``stylequery.json`` (config, vocabulary, encoding record, fingerprint, version, metrics):
    all that :func:`load_model` needs, without optimiser, scheduler or RNG state. An earlier
    export at ``out_dir`` is replaced; any other non-empty folder there is refused.
    """
    out_dir = Path(out_dir)
    occupied = out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir()))
    if occupied and not (out_dir / EXPORT_META).is_file():
        raise CheckpointError(f"{out_dir}: exists and is not a stylequery export")
    payload = load_checkpoint(checkpoint)
    cfg = config_from_dict(payload["config"])
    meta = {key: payload[key] for key in ("version", "fingerprint", "iteration", "vocab")}
    meta.update(
        format=EXPORT_FORMAT,
        config=payload["config"],
        encoding=read_encoding(payload, cfg, Path(checkpoint)).to_dict(),
        metrics=payload.get("metrics", {}),
        source=Path(checkpoint).name,
    )
    weights = {k: v.contiguous() for k, v in payload["model"].items()}
    with atomic_dir(Path(out_dir)) as tmp:
        safetensors.torch.save_file(weights, str(tmp / EXPORT_WEIGHTS))
        write_json(tmp / EXPORT_META, meta)
    return Path(out_dir)


def read_export(folder: Path) -> dict[str, Any]:
    """An export folder as a checkpoint-like dict (``model`` weights, ``config``, ``vocab``,
    ``encoding``, ``fingerprint``, ``iteration``), its weights checked against the fingerprint."""
    meta_path, weights_path = folder / EXPORT_META, folder / EXPORT_WEIGHTS
    payload = _read_export_meta(meta_path)
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: missing from the export folder")
    try:
        payload["model"] = safetensors.torch.load_file(str(weights_path))
    except (safetensors.SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights_path}: unreadable weights ({_first_line(exc)})") from None
    if fingerprint(payload["model"]) != payload["fingerprint"]:
        raise CheckpointError(f"{weights_path}: weights do not match the recorded fingerprint")
    return payload


def _read_export_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: not a checkpoint file nor an export folder")
    payload = read_json(path, "export description", CheckpointError)
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{path}: not a stylequery export")
    missing = sorted({"config", "vocab", "fingerprint", "iteration"} - set(payload))
    if missing:
        raise CheckpointError(f"{path}: missing {', '.join(missing)}")
    return payload


def read_config(path: Path) -> Config:
    """The resolved config stored in a checkpoint or export folder."""
    path = Path(path)
    payload = _read_export_meta(path / EXPORT_META) if path.is_dir() else load_checkpoint(path)
    return config_from_dict(payload["config"])


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint or export, ready for inference."""

    model: StyleQueryModel
    cfg: Config
    vocab: list[str]
    fingerprint: str
    path: Path
    iteration: int
    encoding: Encoding
    metrics: dict[str, float] = field(default_factory=dict)  # saved with it, e.g. val_recall@10


def read_encoding(payload: dict[str, Any], cfg: Config, source: Path) -> Encoding:
    """The checkpoint's encoding record; older checkpoints without one derive it from config."""
    if "encoding" in payload:
        return Encoding.from_dict(payload["encoding"], str(source))
    return Encoding.from_config(cfg)


def load_model(path: Path, device: torch.device | str = "auto") -> LoadedModel:
    """Rebuild the model of a checkpoint (``.pt``) or export folder in eval mode on ``device``,
    with the image encoding it was trained with (no pretrained download)."""
    from stylequery.model import build_model

    path, device = Path(path), resolve_device(device)
    payload = read_export(path) if path.is_dir() else load_checkpoint(path)
    try:
        cfg = config_from_dict(payload["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model = build_model(cfg.model, len(payload["vocab"]), load_pretrained=False)
    misfit = weights_misfit(model.state_dict(), payload["model"])
    if misfit:
        raise CheckpointError(f"{path}: weights do not fit the model of its config: {misfit}")
    model.load_state_dict(payload["model"])
    encoding = read_encoding(payload, cfg, path)
    encoding.apply_to(model)
    model.to(device).eval()
    return LoadedModel(
        model=model,
        cfg=cfg,
        vocab=list(payload["vocab"]),
        fingerprint=payload["fingerprint"],
        path=path,
        iteration=int(payload["iteration"]),
        encoding=encoding,
        metrics=dict(payload.get("metrics") or {}),
    )
