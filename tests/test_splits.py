"""The validation split: whole products, carved from train, with queries; caches follow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stylequery.data import generate_queries, load_prepared
from stylequery.errors import ConfigError
from stylequery.labels import Item
from stylequery.splits import carve_validation, product_id


def catalogue_items() -> list[Item]:
    """Three families of sibling captions, products of one to three images each."""
    items = []
    for family, cut in enumerate(["skinny", "cargo", "wide-leg"]):
        for colour_index, colour in enumerate(["black", "blue", "red", "grey"]):
            product = f"{family}{colour_index}"
            for n in range(1 + (family + colour_index) % 3):
                path = f"women/pants/{cut}_pants/{product}/{product}_{n}.jpeg"
                items.append(Item(path, f"{colour} {cut} pants"))
    items.append(Item("women/pants/odd/99/99_0.jpeg", "lonely orange culottes"))
    return items


def test_product_id_is_the_image_folder() -> None:
    assert product_id("women/pants/skinny_pants/123/123_4.jpeg") == "women/pants/skinny_pants/123"
    assert product_id("loose.jpeg") == "loose.jpeg"


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_carving_keeps_products_whole_and_gives_queries(fraction: float) -> None:
    items = catalogue_items()
    train, val = carve_validation(items, fraction, seed=3)
    assert sorted(train + val) == list(range(len(items)))
    assert len(val) >= round(fraction * len(items))
    train_products = {product_id(items[i].path) for i in train}
    assert not train_products & {product_id(items[i].path) for i in val}
    held_out = [items[i] for i in val]
    # Every validation image has a sibling caption inside validation: it makes a query.
    assert len(generate_queries(held_out, 0)) == len(held_out)


def test_carving_is_seeded_and_zero_carves_nothing() -> None:
    items = catalogue_items()
    assert carve_validation(items, 0.25, 1) == carve_validation(items, 0.25, 1)
    assert carve_validation(items, 0.0, 1) == (list(range(len(items))), [])
    with pytest.raises(ConfigError, match=r"data\.val_fraction"):
        carve_validation(items, 0.9, 1)


def test_prepared_folder_gives_a_val_split_with_its_cache_rows(tiny_prepared: Path) -> None:
    whole = load_prepared(tiny_prepared)
    carved = load_prepared(tiny_prepared, None, 0.2, 0)
    train, val = carved.split("train"), carved.split("val")
    assert sorted(i.path for i in train + val) == sorted(i.path for i in whole.split("train"))
    assert carved.split("test") == whole.split("test") and carved.queries == whole.queries
    full = whole.image_cache("train", 32)
    position = {item.path: i for i, item in enumerate(whole.split("train"))}
    for name, items in (("train", train), ("val", val)):
        cache = carved.image_cache(name, 32)
        assert cache is not None and cache.shape == (len(items), 32, 32, 3)
        for row, item in enumerate(items):
            np.testing.assert_array_equal(cache[row], full[position[item.path]])
