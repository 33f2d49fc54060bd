"""The validation split: products carved out of the training catalogue (no torch).

Checkpoints are chosen on validation queries, never on test ones. The validation images are
whole products (every image of a product folder ``.../<id>/<id>_<n>.jpeg`` falls on one side)
taken from the training split and left out of training. Products are taken a sibling group at
a time (captions that differ by one word), so the validation split has queries built by the
same protocol as the test split's: a random product split of the same size would leave most
validation captions without a sibling, hence without a query.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from stylequery.captions import SiblingIndex, seed_entropy
from stylequery.errors import ConfigError
from stylequery.imagecache import open_cache
from stylequery.labels import Item


def product_id(path: str) -> str:
    """The product of an image: its folder, ``women/<cat>/<sub>/<id>/<id>_<n>.jpeg`` -> ``<id>``.

    An image directly under the root has no product folder and is its own product.
    """
    parent = PurePosixPath(path).parent
    return str(parent) if str(parent) not in ("", ".") else path


def carve_validation(items: list[Item], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split training items into (train, validation) index lists, whole products on one side.

    Sibling-caption groups are visited in a seeded random order; every product with an image
    in the group goes to validation, until validation holds ``fraction`` of the images.

    Args:
        items: The training split.
        fraction: Share of the images to carve out, in [0, 0.5]; 0 carves nothing.
        seed: Seed of the group order.

    Returns:
        Sorted indices into ``items`` of the training and of the validation images.

    Raises:
        ConfigError: ``fraction`` is outside [0, 0.5].
    """
    if not 0.0 <= fraction <= 0.5:
        raise ConfigError(f"config key 'data.val_fraction': {fraction} is not in [0, 0.5]")
    wanted = round(fraction * len(items))
    products: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        products.setdefault(product_id(item.path), []).append(i)
    index = SiblingIndex.build([item.caption for item in items])
    rng = np.random.default_rng(seed_entropy(seed, 7919))
    chosen: set[int] = set()
    for group in rng.permutation(len(index.groups)).tolist():
        if len(chosen) >= wanted:
            break
        for caption_id in index.groups[group]:
            for image in index.images[caption_id]:
                chosen.update(products[product_id(items[image].path)])
    train = [i for i in range(len(items)) if i not in chosen]
    return train, sorted(chosen)


class CacheRows:
    """Some rows of a split's memory-mapped image cache, indexed like an array of them.

    Stands in for the cache of a carved split; it pickles as its file name and rows (for
    DataLoader workers) and maps the file again when first read.
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, path: Path, total: int, size: int, rows: list[int]) -> None:
        self.path, self.total, self.size, self.rows = path, total, size, rows
        self.shape = (len(rows), size, size, 3)
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> np.ndarray:
        if self._array is None:
            self._array = open_cache(self.path, self.total, self.size)
        return self._array[self.rows[index]]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}
