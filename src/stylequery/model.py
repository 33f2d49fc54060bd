"""StyleQueryModel: image encoder + text encoder + composer, and ``build_model(cfg)``.

Every ``encode_*``/``compose``/``project_image`` output passes through :func:`finish`, the one
place embeddings are L2-normalised; outputs are float32 even under autocast. The composer takes
the *raw* image embedding (TIRG composes unnormalised features); query and target are
normalised afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch.nn.functional as F
from torch import Tensor, nn

from stylequery.compose import Composer, build_composer, composer_class
from stylequery.config import ModelConfig
from stylequery.errors import ConfigError
from stylequery.image_encoder import ImageEncoder
from stylequery.text_encoder import TextEncoder

logger = logging.getLogger(__name__)


def finish(x: Tensor, normalize: bool) -> Tensor:
    """Cast an embedding to float32 and, if asked, L2-normalise it along the last dim."""
    x = x.float()  # (B, D)
    return F.normalize(x, dim=-1) if normalize else x  # (B, D)


class StyleQueryModel(nn.Module):
    """Composed image retrieval model.

    Args:
        image_encoder: uint8 images -> (B, D).
        text_encoder: token ids -> (B, D).
        composer: (image, text) -> query.
        backbone_pretrained: Whether the CNN backbone started from pretrained weights (the
            optimiser then gives it a smaller learning rate). Recorded from the config, so it
            holds for a model rebuilt from a checkpoint too.
    """

    def __init__(
        self,
        image_encoder: ImageEncoder,
        text_encoder: TextEncoder,
        composer: Composer,
        backbone_pretrained: bool = False,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.composer = composer
        self.backbone_pretrained = backbone_pretrained

    @property
    def embed_dim(self) -> int:
        """Size D of every embedding."""
        return self.composer.embed_dim

    @property
    def uses_image(self) -> bool:
        """Whether the query depends on the source image."""
        return self.composer.uses_image

    @property
    def uses_text(self) -> bool:
        """Whether the query depends on the text."""
        return self.composer.uses_text

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        """Embed images: uint8 (B, 3, H, W) -> (B, D) float32."""
        return finish(self.image_encoder(images), normalize)  # (B, D)

    def image_features(self, images: Tensor) -> Tensor:
        """Output of the frozen backbone stages, the part training caches: uint8 (B, 3, H, W)
        -> (B, 512) pooled features (whole backbone frozen) or (B, C, h, w) maps, float32."""
        return self.image_encoder.frozen_features(images).float()

    def project_image(self, feats: Tensor, normalize: bool = True) -> Tensor:
        """Embed :meth:`image_features` output through the trainable rest -> (B, D) float32."""
        return finish(self.image_encoder.from_frozen(feats), normalize)  # (B, D)

    def encode_text(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Embed text: tokens (B, L) long, lengths (B,) long -> (B, D) float32, raw."""
        return finish(self.text_encoder(tokens, lengths), normalize=False)  # (B, D)

    def compose(self, image: Tensor, text: Tensor, normalize: bool = True) -> Tensor:
        """Compose a query: raw image (B, D), text (B, D) -> (B, D) float32."""
        return finish(self.composer(image, text), normalize)  # (B, D)

    def encode_query(
        self, images: Tensor, tokens: Tensor, lengths: Tensor, normalize: bool = True
    ) -> Tensor:
        """Embed queries: uint8 (B, 3, H, W), tokens (B, L), lengths (B,) -> (B, D) float32."""
        image = self.encode_image(images, normalize=False)  # (B, D)
        text = self.encode_text(tokens, lengths)  # (B, D)
        return self.compose(image, text, normalize)  # (B, D)

    def forward(
        self, images: Tensor, tokens: Tensor, lengths: Tensor, normalize: bool = True
    ) -> Tensor:
        """Same as :meth:`encode_query` (so DDP can wrap the model): -> (B, D)."""
        return self.encode_query(images, tokens, lengths, normalize)  # (B, D)

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the CNN backbone (all of them, frozen or not)."""
        return self.image_encoder.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Every other parameter: image projection, text encoder, composer."""
        backbone = {id(p) for p in self.backbone_parameters()}
        return (p for p in self.parameters() if id(p) not in backbone)

    def freeze_image_backbone(self, stages: int = 4) -> None:
        """Freeze the first ``stages`` CNN stages (4: all, the fast mode): their output can be
        cached; the rest still trains."""
        self.image_encoder.freeze_backbone(stages)


def build_model(cfg: ModelConfig, vocab_size: int, load_pretrained: bool = True) -> StyleQueryModel:
    """Build the model described by ``cfg.model``.

    Args:
        cfg: The model section of the config.
        vocab_size: Number of token ids (including ``<UNK>``).
        load_pretrained: Load ``cfg.pretrained`` weights; False when the weights will come from
            a checkpoint (no weight file is touched).

    Raises:
        ConfigError: an unknown composer or a non-positive size in ``cfg``.
        WeightsError: pretrained weights that cannot be loaded.
    """
    composer_class(cfg.composer)  # fail on a bad name before building the CNN
    if not 0 <= cfg.frozen_stages <= 4:
        stages = cfg.frozen_stages
        raise ConfigError(f"config key 'model.frozen_stages': must be 0..4, got {stages}")
    for key in ("embed_dim", "word_dim", "text_hidden"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(
                f"config key 'model.{key}': must be positive, got {getattr(cfg, key)}"
            )
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    pretrained = cfg.pretrained if load_pretrained else "none"
    model = StyleQueryModel(
        image_encoder=ImageEncoder(cfg.embed_dim, pretrained),
        text_encoder=TextEncoder(
            vocab_size, cfg.word_dim, cfg.text_hidden, cfg.embed_dim, cfg.dropout
        ),
        composer=build_composer(cfg.composer, cfg.embed_dim, cfg.dropout),
        backbone_pretrained=cfg.pretrained != "none",
    )
    if not model.uses_text:
        # image_only: the text never reaches a loss, so its weights would never get a gradient.
        model.text_encoder.requires_grad_(False)
    if cfg.freeze_image_encoder or cfg.frozen_stages:
        model.freeze_image_backbone(4 if cfg.freeze_image_encoder else cfg.frozen_stages)
    logger.debug("built model: composer=%s, pretrained=%s", cfg.composer, pretrained)
    return model
