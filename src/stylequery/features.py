"""The frozen-stage feature cache: what the frozen CNN stages make of every image, once per run.

With ``model.freeze_image_encoder`` (the whole CNN) or ``model.frozen_stages`` (its first
stages) frozen, their output never changes, so it is computed once for the training and
validation images, kept in the run folder (``features/``, keyed by the frozen weights and the
validation carving) and fed to the trainable rest in place of images. With ``data.hflip`` the
mirrored training images are cached too (``train_flipped``), so flipping stays an augmentation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from stylequery import runtime
from stylequery.checkpoint import fingerprint
from stylequery.config import Config
from stylequery.data import PreparedData
from stylequery.encode import Encoding, encode_split
from stylequery.errors import DataError
from stylequery.fileio import atomic_file, read_torch
from stylequery.model import StyleQueryModel

logger = logging.getLogger(__name__)


@torch.no_grad()
def cache_backbone_features(
    model: StyleQueryModel, prepared: PreparedData, cfg: Config, device: torch.device, run_dir: Path
) -> dict[str, torch.Tensor]:
    """Frozen-stage output of every train and validation image (and mirrored training image
    with ``data.hflip``), on ``device``: computed on rank 0 the first time, read from
    ``run_dir/features/`` afterwards (and by the other ranks)."""
    encoding = Encoding.from_config(cfg)
    encoder = model.image_encoder
    frozen = {
        f"{i}.{name}": value
        for i, stage in enumerate(encoder.stages()[: encoder.frozen_stages])
        for name, value in stage.state_dict().items()
    }
    carving = f"{cfg.data.val_fraction}/{cfg.data.seed}/{encoder.frozen_stages}"
    key = fingerprint({**frozen, carving: torch.zeros(1)})[:16]
    features = {}
    views = [("train", False), ("val", False)] + ([("train", True)] if cfg.data.hflip else [])
    for split, hflip in views:
        name = f"{split}_flipped" if hflip else split
        path = run_dir / "features" / f"{name}_{encoding.image_size}_{key}.pt"
        if not path.is_file() and runtime.is_main_process():
            features[name] = encode_split(
                model, prepared, split, cfg, encoding, device, features=True, hflip=hflip
            )
            with atomic_file(path) as tmp:
                torch.save(features[name], tmp)
        runtime.barrier()
        if name not in features:
            features[name] = read_torch(path, "feature cache (delete it to recompute)", DataError)
    return {k: v.to(device) for k, v in features.items()}
