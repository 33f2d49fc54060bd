"""Prepared data and the datasets built on it.

``prepare`` (in :mod:`stylequery.prepare`) writes a prepared folder; :func:`load_prepared`
reads it back as :class:`PreparedData`. :class:`PairDataset` yields training pairs (source
image, modification text, target image) and :class:`ImageDataset` plain images, both as uint8
(3, S, S) tensors from :func:`load_image` or the prepared cache. Label parsing, caption
relations, test queries and the image transform live in :mod:`labels`, :mod:`captions`,
:mod:`queries` and :mod:`imagecache`; the names other modules need are re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from stylequery.captions import (
    SiblingIndex,
    caption_difference,
    fill_template,
    is_sibling,
    normalize_caption,
    sample_queries,
    seed_entropy,
)
from stylequery.errors import DataError
from stylequery.fileio import read_json
from stylequery.imagecache import ImageSource, cache_file_name, load_image, open_cache
from stylequery.labels import PREPARED_FORMAT, SPLITS, Item, prepared_dir, read_items, subset_name
from stylequery.queries import QUERY_FILE, read_prepared_queries
from stylequery.splits import CacheRows, carve_validation
from stylequery.vocab import Vocab, pad_batch

__all__ = [
    "EpochSampler",
    "ImageDataset",
    "Item",
    "PairDataset",
    "PreparedData",
    "SiblingIndex",
    "caption_difference",
    "caption_labels",
    "collate_pairs",
    "generate_queries",
    "is_sibling",
    "load_image",
    "load_prepared",
    "modification_text",
    "normalize_caption",
    "prepared_dir",
    "query_target_labels",
    "query_texts",
    "subset_name",
]

logger = logging.getLogger(__name__)


class PreparedData:
    """A prepared folder in memory: splits, test queries, vocabulary, optional image caches.

    Attributes:
        dir: The prepared folder.
        root: The catalogue root that image paths are relative to.
        manifest: Parsed ``manifest.json``.
        vocab: Vocabulary of the training captions.
        queries: Test queries as ``(source, target)`` indices into the test split.
    """

    def __init__(
        self,
        dir: Path,
        root: Path,
        manifest: dict[str, Any],
        splits: dict[str, list[Item]],
        queries: list[tuple[int, int]],
        vocab: Vocab,
    ) -> None:
        self.dir = Path(dir)
        self.root = Path(root)
        self.manifest = manifest
        self.vocab = vocab
        self.queries = queries
        self._splits = splits
        self._siblings: dict[str, SiblingIndex] = {}
        # Carved splits: name -> (split whose cache file holds the rows, those rows).
        self._rows: dict[str, tuple[str, list[int]]] = {}

    def carve_validation(self, fraction: float, seed: int = 0) -> None:
        """Move whole products from "train" to a "val" split (see :mod:`stylequery.splits`)."""
        if "val" in self._splits:
            raise DataError(f"{self.dir}: the validation split is already carved")
        train, val = carve_validation(self._splits["train"], fraction, seed)
        items = self._splits["train"]
        self._splits["train"] = [items[i] for i in train]
        self._splits["val"] = [items[i] for i in val]
        self._rows = {"train": ("train", train), "val": ("train", val)}
        self._siblings.clear()

    def split(self, name: str) -> list[Item]:
        """Images of split ``name`` ("train", "val" or "test"), in file order."""
        if name not in self._splits:
            raise DataError(f"{self.dir}: unknown split {name!r}; use one of {list(self._splits)}")
        return self._splits[name]

    def image_paths(self, name: str) -> list[Path]:
        """Absolute image paths of a split."""
        return [self.root / item.path for item in self.split(name)]

    def siblings(self, name: str) -> SiblingIndex:
        """Caption ids, images per caption and sibling captions of a split (cached)."""
        if name not in self._siblings:
            self._siblings[name] = SiblingIndex.build([it.caption for it in self.split(name)])
        return self._siblings[name]

    def image_cache(self, split: str, size: int) -> np.ndarray | None:
        """Memory-mapped uint8 (N, S, S, 3) cache of a split, or None if none of this size."""
        file_split, rows = self._rows.get(split, (split, []))
        path = self.dir / cache_file_name(file_split, size)
        if not path.is_file():
            return None
        if split not in self._rows:
            return open_cache(path, len(self.split(split)), size)
        total = int(self.manifest["counts"][file_split]["images"])
        return CacheRows(path, total, size, rows)  # type: ignore[return-value]

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={len(v)}" for s, v in self._splits.items())
        return f"PreparedData({self.dir}, {counts}, queries={len(self.queries)})"


def load_prepared(
    dir: Path, root: Path | None = None, val_fraction: float = 0.0, val_seed: int = 0
) -> PreparedData:
    """Read a prepared folder written by :func:`prepare`.

    Args:
        dir: The prepared folder.
        root: Catalogue root; default the one recorded in the manifest, or the folder two
            levels up (``ROOT/prepared/<subset>``) when the catalogue has moved.
        val_fraction: Share of the training images carved out as the "val" split
            (``data.val_fraction``); 0 leaves no validation split.
        val_seed: Seed of that carving.

    Raises:
        DataError: The folder is missing, incomplete or inconsistent.
    """
    dir = Path(dir)
    manifest = _read_manifest(dir)
    splits = {}
    for name in SPLITS:
        splits[name] = read_items(_require_file(dir / f"{name}.tsv"))
        expected = manifest.get("counts", {}).get(name, {}).get("images")
        if expected != len(splits[name]):
            raise DataError(
                f"{dir / f'{name}.tsv'}: holds {len(splits[name])} images but manifest.json "
                f"says {expected}; the prepared folder is corrupt, run prepare again"
            )
    queries = read_prepared_queries(_require_file(dir / QUERY_FILE), splits["test"])
    vocab = Vocab.load(_require_file(dir / "vocab.json"))
    data = PreparedData(dir, root or _find_root(dir, manifest), manifest, splits, queries, vocab)
    if val_fraction > 0:
        data.carve_validation(val_fraction, val_seed)
    return data


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: missing from the prepared folder; run prepare again")
    return path


def _read_manifest(dir: Path) -> dict[str, Any]:
    if not dir.is_dir():
        raise DataError(f"{dir}: prepared folder not found; prepare it first")
    path = _require_file(dir / "manifest.json")
    manifest = read_json(path, "manifest", DataError)
    if not isinstance(manifest, dict) or manifest.get("format") != PREPARED_FORMAT:
        raise DataError(f"{path}: not a stylequery prepared-folder manifest")
    return manifest


def _find_root(dir: Path, manifest: dict[str, Any]) -> Path:
    recorded = Path(str(manifest.get("root", "")))
    if (recorded / "labels").is_dir():
        return recorded
    guess = dir.resolve().parent.parent
    if (guess / "labels").is_dir():
        logger.info("catalogue not at %s any more; using %s", recorded, guess)
        return guess
    return recorded


def caption_labels(items: Sequence[Item]) -> np.ndarray:
    """(N,) int64 caption ids: equal captions share an id (numbered by first appearance)."""
    return SiblingIndex.build([item.caption for item in items]).labels


def query_target_labels(prepared: PreparedData) -> np.ndarray:
    """(Q,) caption id of each test query's target, in the ids of ``caption_labels(test)``."""
    labels = prepared.siblings("test").labels
    targets = np.array([t for _, t in prepared.queries], dtype=np.int64)
    return labels[targets] if len(targets) else np.empty(0, dtype=np.int64)


def modification_text(source_caption: str, target_caption: str, template: str) -> str:
    """Modification text from one sibling caption to another, e.g. ``"change black to blue"``.

    Raises:
        DataError: The captions are not siblings.
        ConfigError: The template is not a valid ``{src}``/``{tgt}`` template.
    """
    src, tgt = caption_difference(source_caption, target_caption)
    return fill_template(template, src, tgt)


def query_texts(prepared: PreparedData, template: str) -> list[str]:
    """Modification text of every test query."""
    items = prepared.split("test")
    return [
        modification_text(items[s].caption, items[t].caption, template) for s, t in prepared.queries
    ]


def generate_queries(items: Sequence[Item], seed: int) -> list[tuple[int, int]]:
    """Queries for any split, made as ``prepare`` makes test queries without a query file.

    One ``(source, target)`` per image whose caption has a sibling in ``items``: a seeded
    random sibling caption, then a seeded random image of it.
    """
    return sample_queries(SiblingIndex.build([item.caption for item in items]), seed)


def _resolve_paths(paths: Sequence[str | Path | Item], root: str | Path | None) -> list[Path]:
    resolved = []
    for entry in paths:
        path = Path(entry.path if isinstance(entry, Item) else entry)
        resolved.append(Path(root) / path if root is not None else path)
    return resolved


class ImageDataset(Dataset[dict[str, Any]]):
    """Plain images for embedding a gallery; item = ``{"image": uint8 (3,S,S), "index": i}``.

    Args:
        paths: Image files, or Items of a prepared split.
        root: Folder that relative paths (and Items) are resolved against; None: as given.
        image_size: Square side S.
        cache: Optional uint8 (N, S, S, 3) array whose row i is image i.
    """

    def __init__(
        self,
        paths: Sequence[str | Path | Item],
        root: str | Path | None,
        image_size: int,
        cache: np.ndarray | None = None,
    ) -> None:
        self.images = ImageSource(_resolve_paths(paths, root), image_size, cache)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images.get(index), "index": index}


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, sharded across ranks, able to skip finished batches."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world = rank, world
        self.num_batches = (size // world) // batch_size
        self.epoch, self.skip_batches = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)[self.rank :: self.world]
        used = order[: self.num_batches * self.batch_size]
        return iter(used[self.skip_batches * self.batch_size :].tolist())

    def __len__(self) -> int:
        return (self.num_batches - self.skip_batches) * self.batch_size


class PairDataset(Dataset[dict[str, Any]]):
    """Training pairs: one item per usable source image of a split.

    The target caption, target image and flips derive only from ``(seed, epoch, index)``,
    so any number of DataLoader workers, and a resumed run, see the same pairs.

    Args:
        prepared: The prepared data.
        split: Split to draw pairs from (normally "train").
        image_size: Square side S.
        template: Modification template, e.g. ``"change {src} to {tgt}"``.
        seed: Seed of the pair sampling.
        with_images: Include ``source``/``target`` pixels (off when features are cached).
        hflip: Randomly flip source and target horizontally (independently): the pixels, or
            without them the ``source_flip``/``target_flip`` flags that pick a mirrored
            feature cache.
        cache: Optional uint8 (N, S, S, 3) cache of the split (``prepared.image_cache``),
            read instead of decoding the image files.
    """

    def __init__(
        self,
        prepared: PreparedData,
        split: str,
        image_size: int,
        template: str,
        seed: int,
        with_images: bool = True,
        hflip: bool = False,
        cache: np.ndarray | None = None,
    ) -> None:
        fill_template(template, "a", "b")  # fail early on a bad template
        self.index = prepared.siblings(split)
        self.sources = self.index.usable_sources()
        self.template = template
        self.seed = seed
        self.epoch = 0
        self.with_images = with_images
        self.hflip = hflip
        self.images = ImageSource(prepared.image_paths(split), image_size, cache)

    def set_epoch(self, epoch: int) -> None:
        """Select the pairs of ``epoch`` (call before iterating each epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng(seed_entropy(self.seed, self.epoch, index))
        source = self.sources[index]
        target = self.index.sample_target(source, rng)
        item: dict[str, Any] = {
            "text": self.index.modification(source, target, self.template),
            "source_index": source,
            "target_index": target,
        }
        flips = rng.random(2) < 0.5
        if self.with_images:
            for key, image_index, flip in (
                ("source", source, flips[0]),
                ("target", target, flips[1]),
            ):
                image = self.images.get(image_index)  # (3, S, S) uint8
                item[key] = image.flip(-1) if self.hflip and flip else image
        elif self.hflip:
            item["source_flip"], item["target_flip"] = bool(flips[0]), bool(flips[1])
        return item


def collate_pairs(batch: list[dict[str, Any]], vocab: Vocab) -> dict[str, Any]:
    """Stack :class:`PairDataset` items and encode their texts.

    Returns:
        ``source``/``target`` (B, 3, S, S) uint8 (when the items have images), ``tokens``
        (B, L) long, ``lengths`` (B,) long, ``source_index``/``target_index`` (B,) long,
        ``source_flip``/``target_flip`` (B,) bool (when the items have flip flags) and
        ``texts`` (list of B strings).
    """
    texts = [item["text"] for item in batch]
    tokens, lengths = pad_batch([vocab.encode(text) for text in texts])
    out: dict[str, Any] = {
        "tokens": tokens,  # (B, L)
        "lengths": lengths,  # (B,)
        "source_index": torch.tensor([item["source_index"] for item in batch], dtype=torch.long),
        "target_index": torch.tensor([item["target_index"] for item in batch], dtype=torch.long),
        "texts": texts,
    }
    for key in ("source", "target"):
        if batch and key in batch[0]:
            out[key] = torch.stack([item[key] for item in batch])  # (B, 3, S, S)
        if batch and f"{key}_flip" in batch[0]:
            out[f"{key}_flip"] = torch.tensor([item[f"{key}_flip"] for item in batch])  # (B,)
    return out
