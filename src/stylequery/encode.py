"""The one path from images to embeddings, with the settings stored in the checkpoint.

An :class:`Encoding` records how a model turns an image into an embedding: the square side
images are decoded at, the mean/std they are normalised with, the autocast precision and the
memory format. Training builds it from the config and saves it in every checkpoint and export;
evaluate, embed and query read it back, so a query image is encoded exactly as its gallery was.
:func:`encode_images` is the one function every command calls to encode a batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import torch
from torch.utils.data import DataLoader, Dataset

from stylequery.data import ImageDataset, PreparedData
from stylequery.errors import CheckpointError
from stylequery.image_encoder import IMAGENET_MEAN, IMAGENET_STD
from stylequery.progress import progress_bar
from stylequery.runtime import autocast, resolve_precision

if TYPE_CHECKING:
    from stylequery.config import Config
    from stylequery.model import StyleQueryModel

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]
Triple = tuple[float, float, float]


@dataclass(frozen=True)
class Encoding:
    """How a model encodes images; saved in checkpoints as ``encoding``.

    Attributes:
        image_size: Square side images are decoded at (shorter side resized, centre crop).
        precision: Autocast precision of the image encoder (fp32 runs without autocast).
        channels_last: Feed images in channels_last memory format (ignored on mps).
        mean: Per-channel mean of the 0..1 pixel values, subtracted on the device.
        std: Per-channel standard deviation the centred pixels are divided by.
    """

    image_size: int
    precision: Precision = "fp32"
    channels_last: bool = True
    mean: Triple = IMAGENET_MEAN
    std: Triple = IMAGENET_STD

    @classmethod
    def from_config(cls, cfg: Config, device: torch.device | None = None) -> Encoding:
        """The encoding a training run with this config uses (``precision: auto`` resolved for
        ``device``, default the CPU; training resolves it before it gets here)."""
        precision = resolve_precision(device or torch.device("cpu"), cfg.train.precision)
        assert precision != "auto"
        return cls(cfg.data.image_size, precision, cfg.train.channels_last)

    def to_dict(self) -> dict[str, Any]:
        """Plain primitives, safe for ``torch.load(weights_only=True)`` and JSON."""
        data = asdict(self)
        data.update(mean=list(self.mean), std=list(self.std))
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> Encoding:
        """Read a record written by :meth:`to_dict`; ``source`` names the file in errors."""
        try:
            encoding = cls(
                image_size=int(data["image_size"]),
                precision=data["precision"],
                channels_last=bool(data["channels_last"]),
                mean=cast(Triple, tuple(float(v) for v in data["mean"])),
                std=cast(Triple, tuple(float(v) for v in data["std"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: malformed encoding record ({exc})") from None
        sizes_ok = len(encoding.mean) == len(encoding.std) == 3 and encoding.image_size > 0
        if encoding.precision not in get_args(Precision) or not sizes_ok:
            raise CheckpointError(f"{source}: malformed encoding record {dict(data)}")
        return encoding

    def apply_to(self, model: StyleQueryModel) -> None:
        """Set the model's on-device normalisation to this encoding's mean and std."""
        encoder = model.image_encoder
        encoder.mean.copy_(torch.tensor(self.mean).view(1, 3, 1, 1))
        encoder.std.copy_(torch.tensor(self.std).view(1, 3, 1, 1))

    def memory_format(self, device: torch.device) -> torch.memory_format:
        """channels_last where asked for and supported (not on mps), else contiguous."""
        if self.channels_last and device.type != "mps":
            return torch.channels_last
        return torch.contiguous_format


def encode_images(
    model: StyleQueryModel,
    images: torch.Tensor,
    encoding: Encoding,
    device: torch.device,
    normalize: bool = True,
) -> torch.Tensor:
    """Embed a batch the way ``encoding`` says: the one image-encoding path.

    Args:
        model: The model (its mode and gradient context are the caller's).
        images: uint8 images (B, 3, S, S), or cached backbone features (B, F) of them.
        encoding: The checkpoint's (or training config's) encoding.
        device: Where the model lives; the batch is moved there.
        normalize: L2-normalise the embeddings.

    Returns:
        (B, D) float32 embeddings on ``device``.
    """
    images = images.to(device, non_blocking=device.type == "cuda")
    with autocast(device, encoding.precision):
        if images.dtype != torch.uint8:
            return model.project_image(images, normalize)  # (B, D)
        images = images.contiguous(memory_format=encoding.memory_format(device))
        return model.encode_image(images, normalize)  # (B, D)


def image_features(
    model: StyleQueryModel, images: torch.Tensor, encoding: Encoding, device: torch.device
) -> torch.Tensor:
    """Backbone features (B, F) float32 of uint8 images, encoded as :func:`encode_images` does."""
    images = images.to(device, non_blocking=device.type == "cuda")
    images = images.contiguous(memory_format=encoding.memory_format(device))
    with autocast(device, encoding.precision):
        return model.image_features(images).float()  # (B, F)


@torch.no_grad()
def encode_dataset(
    model: StyleQueryModel,
    dataset: Dataset[dict[str, Any]],
    encoding: Encoding,
    device: torch.device,
    *,
    batch_size: int,
    num_workers: int,
    description: str,
    features: bool = False,
    hflip: bool = False,
) -> torch.Tensor:
    """Encode every ``item["image"]`` of a dataset in order, in eval mode (mode restored).

    Args:
        features: Return backbone features (N, F) on the CPU instead of raw (unnormalised)
            embeddings (N, D) on ``device``.
        hflip: Encode the mirror image of each picture.
    """
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),  # leaves the global RNG (training) untouched
    )
    was_training, chunks = model.training, []
    model.eval()
    try:
        with progress_bar(description, total=len(loader.dataset), log_every=30) as bar:  # type: ignore[arg-type]
            for batch in loader:
                images = batch["image"].flip(-1) if hflip else batch["image"]  # (B, 3, S, S)
                if features:
                    chunks.append(image_features(model, images, encoding, device).cpu())
                else:
                    chunks.append(encode_images(model, images, encoding, device, False))
                bar.advance(len(images))
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def encode_split(
    model: StyleQueryModel,
    prepared: PreparedData,
    split: str,
    cfg: Config,
    encoding: Encoding,
    device: torch.device,
    features: bool = False,
    hflip: bool = False,
) -> torch.Tensor:
    """Every image of a prepared split through :func:`encode_dataset` (``cfg.eval.batch_size``,
    ``cfg.data.num_workers``), read from the prepared uint8 cache of the encoding's size when
    there is one and ``cfg.data.use_image_cache``; ``hflip`` mirrors every image."""
    size = encoding.image_size
    cache = prepared.image_cache(split, size) if cfg.data.use_image_cache else None
    dataset = ImageDataset(prepared.split(split), prepared.root, size, cache=cache)
    return encode_dataset(
        model,
        dataset,
        encoding,
        device,
        batch_size=cfg.eval.batch_size,
        num_workers=cfg.data.num_workers,
        description=f"encode {split} {'features' if features else 'images'}"
        + (" (mirrored)" if hflip else ""),
        features=features,
        hflip=hflip,
    )
