"""The one image transform, cheap image checks, and the prepared uint8 image cache.

Every image the project sees goes through :func:`decode_image`: decoded, converted to RGB,
shorter side resized to S (bilinear, antialiased), centre-cropped to S x S. The cache built by
:func:`build_cache` stores exactly those pixels, so reading it is indistinguishable from
decoding the JPEGs, only faster.

An image's pixel count is read from its header before any decoding, and an image above
``max_pixels`` (``data.max_image_pixels``, default 40 megapixels: a catalogue photo is far
smaller) is refused, so a 100 KB PNG that claims 10,000 x 10,000 pixels never costs 1.4 GB.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from stylequery.config import DataConfig
from stylequery.errors import DataError, one_line
from stylequery.fileio import atomic_file
from stylequery.progress import progress_bar

_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
_BLOCK = 256  # images decoded per batch of thread-pool work (bounds memory held in flight)
MAX_PIXELS = DataConfig().max_image_pixels  # default of data.max_image_pixels
# PIL warns (at 89 MP) about images that _check_pixels refuses anyway, with a lower limit.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class _TooLarge(ValueError):
    """An image whose header claims more pixels than the limit."""


def _check_pixels(image: Image.Image, max_pixels: int) -> None:
    """Raise _TooLarge when the header's pixel count exceeds ``max_pixels``."""
    width, height = image.size
    if width * height > max_pixels:
        raise _TooLarge(
            f"{width} x {height} pixels is above the limit of {max_pixels:,} "
            "(data.max_image_pixels)"
        )


def decode_image(path: Path, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file into uint8 pixels (S, S, 3), the project's one transform.

    Args:
        path: The image file.
        size: Square side S.
        max_pixels: Refuse images with more pixels than this, before decoding them.

    Raises:
        DataError: The file is missing, too large or not a readable image (the message
            names it).
    """
    try:
        with Image.open(path) as image:
            return image_array(image, size, max_pixels)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except _TooLarge as exc:
        raise DataError(f"{path}: image too large: {exc}") from None
    except _PIL_ERRORS as exc:
        raise DataError(f"{path}: cannot read image: {one_line(exc)}") from None


def image_array(image: Image.Image, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An opened image (upright by its EXIF, as RGB) -> uint8 pixels (S, S, 3).

    Raises:
        ValueError: More pixels than ``max_pixels`` (checked before decoding).
    """
    _check_pixels(image, max_pixels)
    # JPEG not yet decoded: let libjpeg decode at a reduced scale that still covers S x S.
    image.draft("RGB", (size, size))
    return resize_crop(ImageOps.exif_transpose(image).convert("RGB"), size)


def resize_crop(image: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (bilinear, antialiased) and centre-crop square."""
    width, height = image.size
    if width <= height:
        new_w, new_h = size, max(size, int(size * height / width))
    else:
        new_w, new_h = max(size, int(size * width / height)), size
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left = round((new_w - size) / 2.0)
    top = round((new_h - size) / 2.0)
    return np.array(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def load_image(path: Path | Image.Image, size: int, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Image file, or an opened image (an upload) -> uint8 tensor (3, S, S); see
    :func:`decode_image`."""
    if isinstance(path, Image.Image):
        try:
            pixels = image_array(path, size, max_pixels)
        except _PIL_ERRORS as exc:
            raise DataError(f"cannot read the given image: {one_line(exc)}") from None
    else:
        pixels = decode_image(path, size, max_pixels)
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def image_problem(path: Path, max_pixels: int = MAX_PIXELS, full: bool = False) -> str | None:
    """Why an image cannot be used (``"not found"``, ``"unreadable: ..."``), or None if fine.

    Args:
        path: The image file.
        max_pixels: Images with more pixels than this are a problem (read from the header).
        full: Decode every pixel at full resolution (finds truncated and corrupt data; about
            as slow as building the cache). Otherwise only the header is read and PIL verifies
            what it can without decoding.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "not found"
    except OSError as exc:
        return f"cannot stat: {one_line(exc)}"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "empty file"
    try:
        with Image.open(path) as image:
            _check_pixels(image, max_pixels)
            if full:
                image.load()
            else:
                image.verify()
    except _TooLarge as exc:
        return f"too large: {exc}"
    except _PIL_ERRORS as exc:
        return f"unreadable: {one_line(exc)}"
    return None


def find_image_problems(
    paths: Sequence[Path], max_pixels: int = MAX_PIXELS, full: bool = False, description: str = ""
) -> dict[int, str]:
    """:func:`image_problem` of every image, checked in a thread pool with a progress bar.

    Returns:
        ``{index: reason}`` of the images that cannot be used, in index order.
    """
    problems: dict[int, str] = {}
    with (
        ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool,
        progress_bar(description or "check images", total=len(paths)) as bar,
    ):
        for start in range(0, len(paths), _BLOCK):
            block = paths[start : start + _BLOCK]
            reasons = pool.map(image_problem, block, [max_pixels] * len(block), [full] * len(block))
            for offset, reason in enumerate(reasons):
                if reason is not None:
                    problems[start + offset] = reason
            bar.advance(len(block))
    return problems


def cache_file_name(split: str, size: int) -> str:
    """File name of a split's cache inside a prepared folder."""
    return f"cache_{split}_{size}.npy"


def _decode_or_reason(path: Path, size: int, max_pixels: int) -> tuple[np.ndarray | None, str]:
    try:
        return decode_image(path, size, max_pixels), ""
    except DataError as exc:
        return None, str(exc).removeprefix(f"{path}: ")


def build_cache(
    paths: Sequence[Path],
    size: int,
    out_path: Path,
    description: str = "cache",
    max_pixels: int = MAX_PIXELS,
) -> dict[int, str]:
    """Decode every image once into a uint8 (N, S, S, 3) ``.npy`` file (loadable as mmap).

    Images that fail to decode are left out of the file; the caller must drop them from the
    split, so that row ``i`` of the file is the ``i``-th image that decoded.

    Args:
        paths: Image files in split order.
        size: Square side S.
        out_path: The ``.npy`` file to write.
        description: Progress bar label.
        max_pixels: Images with more pixels are left out, undecoded.

    Returns:
        ``{index: reason}`` of the images that could not be decoded.
    """
    failures: dict[int, str] = {}
    array = np.lib.format.open_memmap(
        out_path, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3)
    )
    row = 0
    with (
        ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool,
        progress_bar(description, total=len(paths)) as bar,
    ):
        for start in range(0, len(paths), _BLOCK):
            block = paths[start : start + _BLOCK]
            for offset, (pixels, reason) in enumerate(
                pool.map(_decode_or_reason, block, [size] * len(block), [max_pixels] * len(block))
            ):
                if pixels is None:
                    failures[start + offset] = reason
                else:
                    array[row] = pixels
                    row += 1
            bar.advance(len(block))
    array.flush()
    del array
    if failures:
        _truncate_cache(out_path, row)
    return failures


def _truncate_cache(path: Path, rows: int) -> None:
    """Keep only the first ``rows`` rows of a cache file (rare: some images failed)."""
    old = np.load(path, mmap_mode="r")
    with atomic_file(path) as tmp:
        new = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(rows, *old.shape[1:])
        )
        for start in range(0, rows, _BLOCK):
            new[start : start + _BLOCK] = old[start : min(rows, start + _BLOCK)]
        new.flush()
        del new
    del old


def open_cache(path: Path, count: int, size: int) -> np.ndarray:
    """Memory-map a cache file and check it holds ``count`` images of ``size``.

    Raises:
        DataError: The file is unreadable or has another shape or dtype.
    """
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: corrupt image cache: {one_line(exc)}") from None
    if array.dtype != np.uint8 or array.shape != (count, size, size, 3):
        raise DataError(
            f"{path}: image cache has shape {array.shape} {array.dtype}, "
            f"expected ({count}, {size}, {size}, 3) uint8; run prepare again"
        )
    return array


class ImageSource:
    """Images of a list of files as uint8 (3, S, S) tensors, from a cache when there is one.

    Picklable for DataLoader workers: a memory-mapped cache travels as its file name and is
    mapped again in the worker, instead of being copied.

    Args:
        paths: Image files.
        size: Square side S.
        cache: Optional (N, S, S, 3) uint8 array whose row ``i`` is image ``paths[i]``.
    """

    def __init__(self, paths: Sequence[Path], size: int, cache: np.ndarray | None = None) -> None:
        if cache is not None and (
            cache.dtype != np.uint8 or cache.shape != (len(paths), size, size, 3)
        ):
            raise ValueError(
                f"image cache of shape {cache.shape} {cache.dtype} does not fit "
                f"{len(paths)} images of size {size}"
            )
        self.paths = [Path(p) for p in paths]
        self.size = size
        self._cache = cache
        self._cache_file = getattr(cache, "filename", None)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def cached(self) -> bool:
        return self._cache is not None or self._cache_file is not None

    def get(self, index: int) -> torch.Tensor:
        """Image ``index`` as a uint8 tensor (3, S, S)."""
        if self._cache is None and self._cache_file is not None:
            self._cache = np.load(self._cache_file, mmap_mode="r")
        if self._cache is None:
            return load_image(self.paths[index], self.size)
        pixels = np.array(self._cache[index])  # (S, S, 3), copied out of the mmap
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._cache_file is not None:
            state["_cache"] = None
        return state
