"""Synthetic catalogue: Fashion200k layout and format, determinism, families, pictures."""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylequery.captions import SiblingIndex, is_sibling, normalize_caption
from stylequery.errors import DataError, StyleQueryError
from stylequery.garments import COLOURS, PANTS_CUTS, draw_garment
from stylequery.synth import make_products, split_families, synthesize

REAL_PANTS_SUBCATEGORIES = {
    "leggings",
    "wide-leg_and_palazzo_pants",
    "cropped_pants",
    "skinny_pants",
    "straight-leg_pants",
    "full_length_pants",
    "harem_pants",
    "cargo_pants",
}
LINE = re.compile(
    r"^women/pants/(?P<sub>[a-z_-]+)/(?P<id>\d{8})/(?P=id)_(?P<n>\d)\.jpeg\t0\.\d{4}\t(?P<caption>.+)$"
)


def read_lines(root: Path, split: str) -> list[str]:
    return (root / "labels" / f"pants_{split}_detect_all.txt").read_text("utf-8").splitlines()


def digest_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_label_format(tiny_catalogue: Path) -> None:
    products: dict[str, list[int]] = defaultdict(list)
    split_of: dict[str, str] = {}
    for split in ("train", "test"):
        for line in read_lines(tiny_catalogue, split):
            match = LINE.match(line)
            assert match, line
            assert match["sub"] in REAL_PANTS_SUBCATEGORIES
            path = line.split("\t")[0]
            with Image.open(tiny_catalogue / path) as image:
                assert image.format == "JPEG" and image.size == (32, 32)
            products[match["id"]].append(int(match["n"]))
            assert split_of.setdefault(match["id"], split) == split  # split by product
            caption = match["caption"]
            assert 4 <= len(caption.split()) <= 9 and caption == caption.lower()
    assert len(products) == 36
    assert all(sorted(ns) == list(range(len(ns))) and 1 <= len(ns) <= 3 for ns in products.values())
    jpegs = {p.relative_to(tiny_catalogue).as_posix() for p in tiny_catalogue.rglob("*.jpeg")}
    listed = {
        line.split("\t")[0] for s in ("train", "test") for line in read_lines(tiny_catalogue, s)
    }
    assert jpegs == listed
    assert not (tiny_catalogue / "test_queries.txt").exists()


@pytest.mark.parametrize("seed", [0, 7])
def test_same_seed_same_bytes(tmp_path: Path, seed: int) -> None:
    a = synthesize(tmp_path / "a", products=12, image_size=24, seed=seed, with_queries=True)
    synthesize(tmp_path / "b", products=12, image_size=24, seed=seed, with_queries=True)
    assert digest_tree(tmp_path / "a") == digest_tree(tmp_path / "b")
    synthesize(tmp_path / "c", products=12, image_size=24, seed=seed + 1)
    assert read_lines(tmp_path / "a", "train") != read_lines(tmp_path / "c", "train")
    assert a.images["train"] + a.images["test"] == len(list((tmp_path / "a").rglob("*.jpeg")))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_families_share_all_but_one_word_and_both_splits_have_siblings(seed: int) -> None:
    made = make_products(400, ["pants"], seed)
    assert len(made) == 400
    by_family = defaultdict(list)
    for product in made:
        by_family[product.family].append(product.caption)
    multi = [set(c) for c in by_family.values() if len(set(c)) > 1]
    assert len(multi) > 20
    for captions in multi:
        ordered = sorted(captions)
        assert all(is_sibling(ordered[0], other) for other in ordered[1:])
    splits = split_families(made, 0.17, seed)
    assert 0.1 < splits.count("test") / len(made) < 0.3
    for split in ("train", "test"):
        captions = [
            normalize_caption(p.caption) for p, s in zip(made, splits, strict=True) if s == split
        ]
        assert len(SiblingIndex.build(captions).usable_sources()) > 0.3 * len(captions)


@pytest.mark.parametrize("seed", [0, 1])
def test_caption_statistics(seed: int) -> None:
    made = make_products(400, ["pants"], seed)
    captions = [p.caption for p in made]
    assert 0.3 < sum(p.colour == "black" for p in made) / len(made) < 0.5
    assert all(4 <= len(c.split()) <= 9 for c in captions)
    assert any("\u2019" in c for c in captions) or any("\u00e2\u20ac\u2122" in c for c in captions)
    assert any("\u00ae" in c for c in captions)
    assert any("." in c or "&" in c for c in captions)
    assert 0 < sum(not c.isascii() for c in captions) < 0.2 * len(captions)
    colours = Counter(p.colour for p in made)
    assert len(colours) >= 10
    patterns = {p.pattern for p in made}
    assert {"solid", "striped", "checked", "dotted", "distressed", "faded"} <= patterns


def test_queries_file_lists_sibling_pairs_inside_the_test_split(tmp_path: Path) -> None:
    summary = synthesize(tmp_path / "cat", products=40, image_size=16, seed=1, with_queries=True)
    captions = {}
    for line in read_lines(tmp_path / "cat", "test"):
        path, _, caption = line.split("\t")
        captions[path] = normalize_caption(caption)
    lines = (tmp_path / "cat" / "test_queries.txt").read_text("utf-8").splitlines()
    assert len(lines) == summary.queries > 0
    for line in lines:
        source, target = line.split(" ")
        assert source != target and is_sibling(captions[source], captions[target])


def test_refuses_a_non_empty_folder_unless_overwriting(tmp_path: Path) -> None:
    out = tmp_path / "cat"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(DataError, match="not empty"):
        synthesize(out, products=4, image_size=16)
    assert (out / "keep.txt").exists()
    synthesize(out, products=4, image_size=16, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "labels").is_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    synthesize(empty, products=4, image_size=16)
    with pytest.raises(StyleQueryError, match="categories"):
        synthesize(tmp_path / "x", products=4, categories=("hats",))


def test_pictures_show_the_colour_and_differ_between_photos() -> None:
    def garment_mean(colour: str, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        image = draw_garment(64, "pants", "straight-leg_pants", COLOURS[colour], "solid", rng)
        pixels = np.asarray(image, dtype=np.float64)
        centre = pixels[11:18, 26:38].reshape(-1, 3)  # below the waistband: always garment
        return centre.mean(axis=0)

    assert np.abs(garment_mean("red", 0) - COLOURS["red"]).max() < 12
    assert garment_mean("black", 0).sum() < garment_mean("white", 0).sum() - 400
    one = np.asarray(
        draw_garment(
            64, "pants", "cargo_pants", COLOURS["blue"], "checked", np.random.default_rng(0)
        )
    )
    two = np.asarray(
        draw_garment(
            64, "pants", "cargo_pants", COLOURS["blue"], "checked", np.random.default_rng(1)
        )
    )
    assert not np.array_equal(one, two)


def test_cuts_have_their_silhouettes() -> None:
    def width_near_hem(subcategory: str) -> int:
        cut = PANTS_CUTS[subcategory]
        rng = np.random.default_rng(0)
        image = draw_garment(128, "pants", subcategory, COLOURS["black"], "solid", rng)
        dark = np.asarray(image.convert("L")) < 128
        rows = np.flatnonzero(dark.any(axis=1))
        near_hem = rows[int(len(rows) * 0.95)]
        assert cut.length > 0
        return int(dark[near_hem].sum())

    assert width_near_hem("wide-leg_and_palazzo_pants") > 1.5 * width_near_hem("skinny_pants")
    assert width_near_hem("harem_pants") < width_near_hem("straight-leg_pants")

    def height(subcategory: str) -> int:
        image = draw_garment(
            128, "pants", subcategory, COLOURS["black"], "solid", np.random.default_rng(0)
        )
        return int((np.asarray(image.convert("L")) < 128).any(axis=1).sum())

    assert height("cropped_pants") < 0.8 * height("full_length_pants")


@pytest.mark.slow
def test_a_thousand_products_make_about_two_thousand_images(tmp_path: Path) -> None:
    summary = synthesize(tmp_path / "big", products=1000, image_size=128, seed=0)
    assert sum(summary.images.values()) > 1800
