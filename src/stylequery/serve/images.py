"""Untrusted image bytes in, decoded pixels or thumbnails out, with size and pixel limits.

Uploads are checked before their pixels are decoded: the header gives the size, so a
decompression bomb is refused without allocating it. JPEGs are decoded at a reduced scale
(``draft``) when only a small image is needed.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageOps

from stylequery.errors import StyleQueryError

DEFAULT_MAX_PIXELS = 40_000_000  # a 40-megapixel photo decodes to 120 MB of RGB
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class BadImageError(StyleQueryError):
    """Bytes that are not a readable image, or one larger than the pixel limit."""


def open_limited(source: io.BytesIO | Path, max_pixels: int, draft_size: int) -> Image.Image:
    """Decode an image to RGB, refusing more than ``max_pixels`` before decoding them.

    Args:
        source: the encoded bytes, or a file.
        max_pixels: the largest width x height accepted.
        draft_size: the smallest side later needed; JPEGs are decoded at a scale that covers it.

    Raises:
        BadImageError: not an image, truncated, or too many pixels (one-line message).
    """
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise BadImageError(
                    f"image is {width} x {height} pixels, more than the limit of {max_pixels:,}"
                )
            image.draft("RGB", (draft_size, draft_size))
            return ImageOps.exif_transpose(image).convert("RGB")
    except Image.DecompressionBombError:
        raise BadImageError(f"image has more pixels than the limit of {max_pixels:,}") from None
    except Image.UnidentifiedImageError:
        raise BadImageError("not an image (JPEG, PNG, WebP, GIF or BMP expected)") from None
    except _PIL_ERRORS as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise BadImageError(f"cannot decode the image: {reason}") from None


def decode_upload(data: bytes, max_pixels: int, draft_size: int) -> Image.Image:
    """An uploaded file's bytes -> RGB image; see :func:`open_limited`."""
    if not data:
        raise BadImageError("the uploaded file is empty")
    return open_limited(io.BytesIO(data), max_pixels, draft_size)


def thumbnail_jpeg(path: Path, size: int, max_pixels: int) -> bytes:
    """JPEG bytes of the image at ``path`` fitted into ``size`` x ``size`` (aspect kept)."""
    image = open_limited(path, max_pixels, size)
    image.thumbnail((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()
