"""Composers: image embedding (B, D) + text embedding (B, D) -> query embedding (B, D).

Chosen by ``model.composer``. Adding one is a :class:`Composer` subclass plus a line in
:data:`COMPOSERS`. Composers take raw (unnormalised) embeddings, as TIRG composes raw
features; the model normalises the result.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
from torch import Tensor, nn

from stylequery.errors import ConfigError

logger = logging.getLogger(__name__)


class Composer(nn.Module):
    """Base class: ``forward(image (B, D), text (B, D)) -> (B, D)``.

    ``uses_image`` / ``uses_text`` say whether the query depends on the source image / the
    text, so the model can freeze an encoder that would never get a gradient.

    Args:
        embed_dim: Embedding size D of inputs and output.
        dropout: Dropout probability, for composers that use it.
    """

    uses_image: ClassVar[bool] = True
    uses_text: ClassVar[bool] = True

    def __init__(self, embed_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.embed_dim = embed_dim

    def forward(self, image: Tensor, text: Tensor) -> Tensor:
        """Compose: image (B, D), text (B, D) -> (B, D)."""
        raise NotImplementedError


class ConcatComposer(Composer):
    """The reference baseline: an MLP on ``[image, text]``.

    BN(2D), ReLU, Linear(2D, 2D), BN(2D), ReLU, Dropout, Linear(2D, D).
    """

    def __init__(self, embed_dim: int, dropout: float = 0.1) -> None:
        super().__init__(embed_dim, dropout)
        both = 2 * embed_dim
        self.mlp = nn.Sequential(
            nn.BatchNorm1d(both),
            nn.ReLU(),
            nn.Linear(both, both),
            nn.BatchNorm1d(both),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(both, embed_dim),
        )

    def forward(self, image: Tensor, text: Tensor) -> Tensor:
        """Compose: image (B, D), text (B, D) -> (B, D)."""
        both = torch.cat([image, text], dim=1)  # (B, 2D)
        return self.mlp(both)  # (B, D)


class TirgComposer(Composer):
    """TIRG (Vo et al., CVPR 2019): a gated image plus a residual from ``[image, text]``.

    ``out = w0 * sigmoid(MLP_g([x, t])) * x + w1 * MLP_r([x, t])`` with learnable
    ``w = [1, 10]``; MLP_g = BN, ReLU, Linear(2D, D); MLP_r = BN, ReLU, Linear(2D, 2D), ReLU,
    Linear(2D, D).
    """

    def __init__(self, embed_dim: int, dropout: float = 0.1) -> None:
        super().__init__(embed_dim, dropout)
        both = 2 * embed_dim
        self.gate = nn.Sequential(nn.BatchNorm1d(both), nn.ReLU(), nn.Linear(both, embed_dim))
        self.residual = nn.Sequential(
            nn.BatchNorm1d(both),
            nn.ReLU(),
            nn.Linear(both, both),
            nn.ReLU(),
            nn.Linear(both, embed_dim),
        )
        self.weights = nn.Parameter(torch.tensor([1.0, 10.0]))

    def forward(self, image: Tensor, text: Tensor) -> Tensor:
        """Compose: image (B, D), text (B, D) -> (B, D)."""
        both = torch.cat([image, text], dim=1)  # (B, 2D)
        gate = torch.sigmoid(self.gate(both))  # (B, D)
        residual = self.residual(both)  # (B, D)
        return self.weights[0] * gate * image + self.weights[1] * residual  # (B, D)


class GatedComposer(Composer):
    """A gated image-text combiner in the manner of CLIP4Cir's (Baldrati et al., 2022).

    Both inputs are projected (Linear, ReLU, Dropout); from the pair, one branch predicts a
    per-query scalar ``a`` (sigmoid) and another a residual, and the query is
    ``residual + a * text + (1 - a) * image``: the model learns per query how much of the
    source image to keep and how much of the text to add.
    """

    def __init__(self, embed_dim: int, dropout: float = 0.1) -> None:
        super().__init__(embed_dim, dropout)
        both = 2 * embed_dim

        def branch(size_in: int, size_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(size_in, size_out), nn.ReLU(), nn.Dropout(dropout))

        self.image_proj = branch(embed_dim, embed_dim)
        self.text_proj = branch(embed_dim, embed_dim)
        self.mix = nn.Sequential(branch(both, both), nn.Linear(both, embed_dim))
        self.scalar = nn.Sequential(branch(both, both), nn.Linear(both, 1))

    def forward(self, image: Tensor, text: Tensor) -> Tensor:
        """Compose: image (B, D), text (B, D) -> (B, D)."""
        both = torch.cat([self.image_proj(image), self.text_proj(text)], dim=1)  # (B, 2D)
        a = torch.sigmoid(self.scalar(both))  # (B, 1)
        return self.mix(both) + a * text + (1 - a) * image  # (B, D)


class ImageOnlyComposer(Composer):
    """Baseline: the query is the source image; the text is ignored."""

    uses_text = False

    def forward(self, image: Tensor, text: Tensor) -> Tensor:
        """Return the image embedding: (B, D) -> (B, D)."""
        return image  # (B, D)


class TextOnlyComposer(Composer):
    """Baseline: the query is the text; the source image is ignored."""

    uses_image = False

    def forward(self, image: Tensor, text: Tensor) -> Tensor:
        """Return the text embedding: (B, D) -> (B, D)."""
        return text  # (B, D)


COMPOSERS: dict[str, type[Composer]] = {
    "concat": ConcatComposer,
    "tirg": TirgComposer,
    "gated": GatedComposer,
    "image_only": ImageOnlyComposer,
    "text_only": TextOnlyComposer,
}


def composer_class(name: str) -> type[Composer]:
    """Look up a composer class by its ``model.composer`` name.

    Raises:
        ConfigError: the name is not registered.
    """
    if name not in COMPOSERS:
        raise ConfigError(
            f"config key 'model.composer': unknown composer {name!r}; "
            f"choose from {sorted(COMPOSERS)}"
        )
    return COMPOSERS[name]


def build_composer(name: str, embed_dim: int, dropout: float = 0.1) -> Composer:
    """Build the composer registered as ``name``.

    Raises:
        ConfigError: the name is not registered.
    """
    return composer_class(name)(embed_dim, dropout)
