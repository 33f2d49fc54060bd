"""The hostile-image corpus of the reliability suite, made fresh by code (no binaries kept)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# What each hostile image must get: "ok" (decoded like any photo) or the reason it is refused.
HOSTILE = {
    "zero-byte.jpeg": "empty file",
    "truncated.jpeg": "truncated",
    "cmyk.jpeg": "ok",
    "grayscale.jpeg": "ok",
    "rgba.png": "ok",
    "png-named.jpeg": "ok",
    "bomb.png": "above the limit",  # 10,000 x 10,000 pixels in 12 KB
}


def _photo(seed: int, size: int = 64) -> Image.Image:
    noise = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(noise)


def _write(name: str, path: Path) -> None:
    """Write one corpus image."""
    if name == "zero-byte.jpeg":
        path.write_bytes(b"")
    elif name == "truncated.jpeg":
        buffer = io.BytesIO()
        _photo(1, 256).save(buffer, format="JPEG", quality=95)
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 6 // 10])
    elif name == "cmyk.jpeg":
        _photo(2).convert("CMYK").save(path, format="JPEG")
    elif name == "grayscale.jpeg":
        _photo(3).convert("L").save(path, format="JPEG")
    elif name == "rgba.png":
        image = _photo(4).convert("RGBA")
        image.putalpha(128)
        image.save(path, format="PNG")
    elif name == "png-named.jpeg":
        _photo(5).save(path, format="PNG")
    elif name == "bomb.png":
        Image.new("1", (10_000, 10_000)).save(path, format="PNG")


def write_corpus(folder: Path) -> dict[str, Path]:
    """Write every image of :data:`HOSTILE` into ``folder``; name -> path."""
    paths = {}
    for name in HOSTILE:
        paths[name] = folder / name
        _write(name, paths[name])
    return paths
