"""ImageEncoder: uint8 images (B, 3, H, W) -> embeddings (B, D).

A torchvision ResNet-18 without its classifier (global average pool, 512 features), then a
linear projection to ``embed_dim``. ImageNet mean/std normalisation happens here, on the
device, so every caller feeds the same uint8 tensors.

Pretrained weights are opt-in (``model.pretrained``): ``"none"``, ``"imagenet"`` (torchvision's
file in the TORCH_HOME cache, downloaded only when asked for and missing), or a path to a
``.pth`` state dict of a torchvision ResNet-18.
"""

from __future__ import annotations

import logging
from http.client import HTTPException
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
from torch import Tensor, nn
from torchvision.models import ResNet18_Weights, resnet18

from stylequery.errors import WeightsError
from stylequery.fileio import read_torch

logger = logging.getLogger(__name__)

FEATURE_DIM = 512  # ResNet-18 pooled feature size
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

StateDict = dict[str, Tensor]


class ImageEncoder(nn.Module):
    """ResNet-18 backbone + linear projection, taking uint8 images.

    Args:
        embed_dim: Size of the output embedding.
        pretrained: ``"none"``, ``"imagenet"`` or a path to a ResNet-18 ``.pth`` state dict.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, embed_dim: int = 512, pretrained: str = "none") -> None:
        super().__init__()
        self.backbone = resnet18(weights=None)
        # The classifier is dropped; keeping the torchvision module names lets state dicts load.
        self.backbone.fc = nn.Identity()
        self.projection = nn.Linear(FEATURE_DIM, embed_dim)
        # Shaped (1, 3, 1, 1) so the arithmetic broadcasts and keeps channels_last inputs as is.
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.frozen_stages = 0  # leading ResNet stages kept frozen (4: the whole backbone)
        state = load_backbone_state(pretrained)
        if state is not None:
            self.load_backbone(state, source=pretrained)

    def features(self, images: Tensor) -> Tensor:
        """Backbone pooled features.

        Args:
            images: uint8 images, (B, 3, H, W), any memory format.

        Returns:
            (B, 512) pooled ResNet features.
        """
        if images.dtype != torch.uint8:
            raise TypeError(f"ImageEncoder expects uint8 images, got {images.dtype}")
        x = images.float() / 255.0  # (B, 3, H, W) in [0, 1]
        x = (x - self.mean) / self.std  # (B, 3, H, W)
        return self.backbone(x)  # (B, 512)

    def stages(self) -> list[nn.Module]:
        """The backbone's four stages: stem + layer1, layer2, layer3, layer4."""
        net = self.backbone
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        return [stem, net.layer2, net.layer3, net.layer4]

    def frozen_features(self, images: Tensor) -> Tensor:
        """Output of the frozen stages, what training caches once per image.

        Args:
            images: uint8 images, (B, 3, H, W).

        Returns:
            (B, C, h, w) feature maps after ``frozen_stages`` stages, or (B, 512) pooled
            features when the whole backbone is frozen (or none of it).
        """
        if self.frozen_stages in (0, len(self.stages())):
            return self.features(images)  # (B, 512)
        x = (images.float() / 255.0 - self.mean) / self.std  # (B, 3, H, W)
        for stage in self.stages()[: self.frozen_stages]:
            x = stage(x)
        return x  # (B, C, h, w)

    def from_frozen(self, feats: Tensor) -> Tensor:
        """Embed :meth:`frozen_features` output: the trainable stages and projection -> (B, D)."""
        x = feats
        if 0 < self.frozen_stages < len(self.stages()):
            for stage in self.stages()[self.frozen_stages :]:
                x = stage(x)
            x = torch.flatten(self.backbone.avgpool(x), 1)  # (B, 512)
        return self.project(x)  # (B, D)

    def project(self, feats: Tensor) -> Tensor:
        """Project pooled features: (B, 512) -> (B, D)."""
        return self.projection(feats)  # (B, D)

    def forward(self, images: Tensor) -> Tensor:
        """Embed images: uint8 (B, 3, H, W) -> (B, D), not normalised."""
        return self.project(self.features(images))  # (B, D)

    def freeze_backbone(self, stages: int = 4) -> None:
        """Stop training the first ``stages`` stages (4: the whole CNN): no gradients,
        BatchNorm statistics fixed (eval mode)."""
        if not 0 <= stages <= len(self.stages()):
            raise ValueError(f"frozen stages must be in 0..4, got {stages}")
        self.frozen_stages = stages
        for stage in self.stages()[:stages]:
            stage.requires_grad_(False)
        self.train(self.training)

    @property
    def backbone_frozen(self) -> bool:
        """Whether the whole CNN is frozen."""
        return self.frozen_stages == len(self.stages())

    def train(self, mode: bool = True) -> ImageEncoder:
        """Set train/eval mode; frozen stages stay in eval mode."""
        super().train(mode)
        for stage in self.stages()[: self.frozen_stages]:
            stage.eval()
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def load_backbone(self, state: StateDict, source: str) -> None:
        """Load a ResNet-18 state dict (``fc.*`` already removed) into the backbone.

        Raises:
            WeightsError: a key is missing, unexpected or of the wrong shape.
        """
        bad = _first_mismatch(self.backbone.state_dict(), state)
        if bad is not None:
            raise WeightsError(f"{source}: not ResNet-18 weights: {bad}")
        self.backbone.load_state_dict(state, strict=False)
        logger.info("loaded ResNet-18 backbone weights from %s", source)


def load_backbone_state(pretrained: str) -> StateDict | None:
    """Read the backbone weights named by ``model.pretrained``, or None for ``"none"``.

    Raises:
        WeightsError: the file is missing or unreadable, or ImageNet weights cannot be fetched.
    """
    if pretrained == "none":
        return None
    if pretrained == "imagenet":
        return _imagenet_state()
    path = Path(pretrained)
    if not path.is_file():
        raise WeightsError(
            f"model.pretrained: weights file not found: {path} (use imagenet, none or a .pth path)"
        )
    return read_state_file(path)


def imagenet_cache_path() -> Path:
    """Where torchvision keeps the ImageNet ResNet-18 file: ``<hub dir>/checkpoints/<name>``."""
    name = ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _imagenet_state() -> StateDict:
    weights = ResNet18_Weights.IMAGENET1K_V1
    path = imagenet_cache_path()
    if path.is_file():
        return read_state_file(path)
    logger.info("downloading ImageNet ResNet-18 weights to %s", path.parent)
    try:
        raw = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    # URLError and socket errors are OSErrors; a hash mismatch is a RuntimeError.
    except (OSError, URLError, HTTPException, RuntimeError) as exc:
        raise WeightsError(
            f"ImageNet weights not available offline: put {path.name} (from {weights.url}) "
            f"in {path.parent}"
        ) from exc
    return _clean_state(raw, str(path))


def read_state_file(path: Path) -> StateDict:
    """Load a ResNet-18 state dict from a ``.pth`` file, unwrapping ``state_dict``/``model``.

    Raises:
        WeightsError: the file cannot be read or holds no state dict.
    """
    return _clean_state(read_torch(path, "weights file", WeightsError), str(path))


def _clean_state(raw: Any, source: str) -> StateDict:
    """Unwrap a checkpoint-like dict and drop the classifier (``fc.*``) keys."""
    for wrapper in ("state_dict", "model"):
        if isinstance(raw, dict) and isinstance(raw.get(wrapper), dict):
            raw = raw[wrapper]
            break
    if not isinstance(raw, dict):
        raise WeightsError(f"{source}: holds a {type(raw).__name__}, not a state dict")
    state: StateDict = {}
    for key, value in raw.items():
        if not isinstance(value, Tensor):
            raise WeightsError(f"{source}: key '{key}' is not a tensor")
        if not str(key).startswith("fc."):
            state[str(key)] = value
    return state


def _first_mismatch(expected: StateDict, given: StateDict) -> str | None:
    """Describe the first key that keeps ``given`` from loading into ``expected``, or None."""
    for key, value in expected.items():
        # Old torchvision files predate num_batches_tracked; BatchNorm fills it in.
        if key not in given and not key.endswith("num_batches_tracked"):
            return f"missing key '{key}'"
        if key in given and given[key].shape != value.shape:
            shapes = f"{tuple(given[key].shape)} instead of {tuple(value.shape)}"
            return f"key '{key}' has shape {shapes}"
    for key in given:
        if key not in expected:
            return f"unexpected key '{key}'"
    return None
