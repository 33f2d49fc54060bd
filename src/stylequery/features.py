"""The frozen-encoder feature cache: backbone features of every image, computed once per run.

With ``model.freeze_image_encoder`` the CNN never changes, so its pooled features are computed
once, kept in the run folder (``features/``, keyed by the backbone's fingerprint) and fed to the
projection in place of images by training and validation.
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
from stylequery.fileio import atomic_file
from stylequery.model import StyleQueryModel

logger = logging.getLogger(__name__)


@torch.no_grad()
def cache_backbone_features(
    model: StyleQueryModel, prepared: PreparedData, cfg: Config, device: torch.device, run_dir: Path
) -> dict[str, torch.Tensor]:
    """Backbone features (N, F) of every train and evaluation image, on ``device``: computed on
    rank 0 the first time, read from ``run_dir/features/`` afterwards (and by the other ranks)."""
    encoding = Encoding.from_config(cfg)
    key = fingerprint(dict(model.image_encoder.state_dict()))[:16]
    features = {}
    for split in dict.fromkeys(["train", cfg.eval.split]):
        path = run_dir / "features" / f"{split}_{encoding.image_size}_{key}.pt"
        if not path.is_file() and runtime.is_main_process():
            features[split] = encode_split(model, prepared, split, cfg, encoding, device, True)
            with atomic_file(path) as tmp:
                torch.save(features[split], tmp)
        runtime.barrier()
        if split not in features:
            features[split] = torch.load(path, weights_only=True)
    return {k: v.to(device) for k, v in features.items()}
