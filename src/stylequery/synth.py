"""A synthetic catalogue in exactly the Fashion200k layout, for tests, demos and CI.

Products come in *families*: one cut, brand and pattern sold in several colours (or one colour
in several patterns, or under several brands), so that captions of a family differ in one
word and make training pairs and test queries. Colour, pattern and cut are visible in the
pictures (see :mod:`stylequery.garments`); brands and words like "stretch" or "high-rise"
are not, as in real product titles. Everything derives from ``seed``: the same seed writes
byte-identical label files and identical images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stylequery.captions import SiblingIndex, normalize_caption, sample_queries, seed_entropy
from stylequery.errors import DataError, StyleQueryError
from stylequery.fileio import atomic_dir
from stylequery.garments import COLOURS, draw_garment, jitter
from stylequery.labels import SPLITS, format_query_lines, label_file
from stylequery.progress import progress_bar

logger = logging.getLogger(__name__)

# subcategory folder -> possible (cut words, noun) of its titles; pants folders are the real ones
NAMES: dict[str, dict[str, list[tuple[tuple[str, ...], str]]]] = {
    "pants": {
        "leggings": [((), "leggings"), (("ankle",), "leggings")],
        "wide-leg_and_palazzo_pants": [
            (("wide-leg",), "pants"),
            (("palazzo",), "pants"),
            (("wide-leg",), "jeans"),
            (("wide-leg",), "trousers"),
        ],
        "cropped_pants": [
            (("cropped",), "pants"),
            (("cropped",), "jeans"),
            (("cropped",), "trousers"),
        ],
        "skinny_pants": [(("skinny",), "jeans"), (("skinny",), "pants")],
        "straight-leg_pants": [(("straight-leg",), "jeans"), (("straight-leg",), "trousers")],
        "full_length_pants": [(("full-length",), "trousers"), (("tailored",), "pants")],
        "harem_pants": [(("harem",), "pants"), (("drop-crotch",), "pants")],
        "cargo_pants": [(("cargo",), "pants"), (("utility", "cargo"), "trousers")],
    },
    "skirt": {
        "mini_skirts": [(("mini",), "skirt")],
        "midi_skirts": [(("midi",), "skirt")],
        "maxi_skirts": [(("maxi",), "skirt")],
        "pencil_skirts": [(("pencil",), "skirt")],
        "a-line_skirts": [(("a-line",), "skirt")],
    },
}
DENIM_COLOURS = ("blue", "black", "navy", "grey", "white")
CLOTH_PATTERNS = ("striped", "checked", "dotted")
DENIM_PATTERNS = ("distressed", "faded")
BRANDS = (
    "acme",
    "zenko",
    "moravi",
    "bellcourt",
    "ostra",
    "lumen",
    "kitano",
    "verra",
    "quillon",
    "nordvik",
    "tessaly",
    "harlow",
    "b&co",
    "no.5",
    "zenko\u00ae",
)
# Words a picture cannot show, including the odd encodings real titles carry.
RISES = ("high-rise", "mid-rise", "low-rise")
HIDDEN_WORDS = (
    "stretch",
    "rise",  # stands for one of RISES: a title names at most one
    "cotton",
    "linen-blend",
    "organic",
    "slim",
    "relaxed",
    "petite",
    "tall",
    "cotton-blend",
    "soft",
)
ODD_WORDS = ("women\u2019s", "women\u00e2\u20ac\u2122s")  # curly apostrophe; mis-decoded UTF-8
FAMILY_KINDS = ("colour", "pattern", "brand", "single")
FAMILY_WEIGHTS = (0.62, 0.12, 0.12, 0.14)


@dataclass(frozen=True)
class Product:
    """One product: its family, folder, title words and what the pictures show."""

    family: int
    category: str
    subcategory: str
    words: tuple[str, ...]
    colour: str
    pattern: str

    @property
    def caption(self) -> str:
        return " ".join(self.words)


@dataclass
class SynthSummary:
    """What :func:`synthesize` wrote; ``rows()`` feeds the CLI's table."""

    out: Path  # the catalogue root
    products: int
    families: int
    images: dict[str, int]
    captions: dict[str, int]  # unique captions per split
    image_size: int
    seed: int
    queries: int | None  # lines of test_queries.txt, None when not written
    seconds: float

    def rows(self) -> list[tuple[str, str]]:
        """``(label, value)`` pairs for a two-column table."""
        return [
            ("catalogue", str(self.out)),
            ("products", f"{self.products} in {self.families} families"),
            ("train images", f"{self.images['train']} ({self.captions['train']} captions)"),
            ("test images", f"{self.images['test']} ({self.captions['test']} captions)"),
            ("image size", f"{self.image_size}px"),
            ("test_queries.txt", "not written" if self.queries is None else str(self.queries)),
            ("seed", str(self.seed)),
            ("time", f"{self.seconds:.1f} s"),
        ]


def _pick(rng: np.random.Generator, options: Sequence[str], k: int = 1) -> list[str]:
    """``k`` distinct options in random order."""
    return [options[i] for i in rng.choice(len(options), size=k, replace=False)]


def _variants(kind: str, rng: np.random.Generator, denim: bool) -> list[tuple[str, str, str]]:
    """``(colour, pattern, brand)`` of each product of a family ("" brand: none)."""
    colours = DENIM_COLOURS if denim else tuple(COLOURS)
    patterns = DENIM_PATTERNS if denim else CLOTH_PATTERNS
    colour = "black" if rng.random() < 0.4 else _pick(rng, colours)[0]
    pattern = "solid" if rng.random() < 0.7 else _pick(rng, patterns)[0]
    brand = _pick(rng, BRANDS)[0] if rng.random() < 0.6 else ""
    if kind == "colour":
        # 2 to 5 colours; most families include black, often as several products of one title.
        with_black = rng.random() < 0.85
        others = [c for c in colours if c != "black"]
        picked = _pick(rng, others, int(rng.integers(1 if with_black else 2, 5)))
        blacks = ["black"] * int(rng.integers(1, 4)) if with_black else []
        return [(c, pattern, brand) for c in blacks + picked]
    if kind == "pattern":
        return [
            (colour, p, brand)
            for p in _pick(rng, patterns, min(len(patterns), 2 + int(rng.integers(2))))
        ]
    if kind == "brand":
        return [(colour, pattern, b) for b in _pick(rng, BRANDS, 2 + int(rng.integers(2)))]
    return [(colour, pattern, brand)]


def make_family(family: int, category: str, rng: np.random.Generator) -> list[Product]:
    """The products of one family: titles differ in one word (or family of one)."""
    subcategory = _pick(rng, list(NAMES[category]))[0]
    options = NAMES[category][subcategory]
    cut_words, noun = options[int(rng.integers(len(options)))]
    kind = FAMILY_KINDS[int(rng.choice(len(FAMILY_KINDS), p=FAMILY_WEIGHTS))]
    variants = _variants(kind, rng, denim=noun == "jeans")
    has_pattern = any(p != "solid" for _, p, _ in variants)
    has_brand = any(b for _, _, b in variants)
    fixed = 1 + has_pattern + has_brand + len(cut_words) + 1
    extras = _pick(rng, HIDDEN_WORDS, int(np.clip(rng.integers(0, 3), 4 - fixed, 9 - fixed)))
    extras = [_pick(rng, RISES)[0] if word == "rise" else word for word in extras]
    if extras and rng.random() < 0.08:
        extras[0] = _pick(rng, ODD_WORDS)[0]
    products = []
    for colour, pattern, brand in variants:
        words = [colour] + ([pattern] if has_pattern else []) + ([brand] if has_brand else [])
        words += [*extras, *cut_words, noun]
        products.append(Product(family, category, subcategory, tuple(words), colour, pattern))
    return products


def make_products(products: int, categories: Sequence[str], seed: int) -> list[Product]:
    """Exactly ``products`` products, family by family, categories in turn."""
    rng = np.random.default_rng(seed_entropy(seed, 1))
    made: list[Product] = []
    family = 0
    while len(made) < products:
        made += make_family(family, categories[family % len(categories)], rng)
        family += 1
    return made[:products]


def split_families(made: list[Product], test_fraction: float, seed: int) -> list[str]:
    """Split name of each product: whole families go to test until it holds its share.

    A family with two or more titles goes to test first and another one is kept for train
    (when there are two), so that both splits have sibling captions.
    """
    rng = np.random.default_rng(seed_entropy(seed, 2))
    family_ids = sorted({p.family for p in made})
    multi = {f for f in family_ids if len({p.caption for p in made if p.family == f}) > 1}
    sizes = {f: sum(p.family == f for p in made) for f in family_ids}
    order = [family_ids[i] for i in rng.permutation(len(family_ids))]
    order.sort(key=lambda f: f != next((g for g in order if g in multi), None))  # stable
    target = round(test_fraction * len(made))
    test: set[int] = set()
    count = 0
    for f in order:
        if count >= target or len(test) == len(family_ids) - 1:
            break
        if f in multi and test and len(multi - test) == 1:
            continue  # the last multi-title family stays in train
        test.add(f)
        count += sizes[f]
    return ["test" if p.family in test else "train" for p in made]


def synthesize(
    out: Path,
    products: int = 400,
    image_size: int = 128,
    seed: int = 0,
    categories: Sequence[str] = ("pants",),
    with_queries: bool = False,
    test_fraction: float = 0.17,
    overwrite: bool = False,
) -> SynthSummary:
    """Write a synthetic catalogue: label files, JPEG images and optionally test queries.

    Args:
        out: Catalogue root to create (written atomically).
        products: Number of products (1 to 3 images each).
        image_size: Side of the square JPEGs.
        seed: Seed of everything.
        categories: Any of "pants", "skirt".
        with_queries: Also write ``test_queries.txt`` in the reference format.
        test_fraction: Share of products in the test split (whole families move).
        overwrite: Replace a non-empty ``out``.

    Raises:
        DataError: ``out`` exists and is not empty (without ``overwrite``).
        StyleQueryError: Unknown category or bad sizes.
    """
    started = time.perf_counter()
    out = Path(out)
    _check_args(out, products, image_size, categories, test_fraction, overwrite)
    made = make_products(products, list(dict.fromkeys(categories)), seed)
    splits = split_families(made, test_fraction, seed)
    rng = np.random.default_rng(seed_entropy(seed, 3))
    ids = (
        10_000_000 + int(rng.integers(0, 30_000_000)) + np.cumsum(rng.integers(1, 2000, len(made)))
    )
    counts = rng.integers(1, 4, len(made))  # images per product
    with atomic_dir(out) as tmp:
        paths = _write_images(tmp, made, ids, counts, image_size, seed)
        _write_labels(tmp, made, splits, paths, rng)
        queries = _write_queries(tmp, made, splits, paths, seed) if with_queries else None
    in_split = {s: [i for i, ps in enumerate(splits) if ps == s] for s in SPLITS}
    summary = SynthSummary(
        out=out,
        products=len(made),
        families=len({p.family for p in made}),
        images={s: int(counts[in_split[s]].sum()) for s in SPLITS},
        captions={s: len({made[i].caption for i in in_split[s]}) for s in SPLITS},
        image_size=image_size,
        seed=seed,
        queries=queries,
        seconds=time.perf_counter() - started,
    )
    logger.info("synthetic catalogue %s: %d images", out, int(counts.sum()))
    return summary


def _check_args(
    out: Path,
    products: int,
    image_size: int,
    categories: Sequence[str],
    test_fraction: float,
    overwrite: bool,
) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DataError(f"{out}: exists and is not empty; choose another folder or overwrite")
    unknown = [c for c in categories if c not in NAMES]
    if unknown or not categories:
        raise StyleQueryError(
            f"synthetic categories must be among {sorted(NAMES)}, got {list(categories)}"
        )
    for name, value, ok, allowed in (
        ("products", products, products >= 2, ">= 2"),
        ("image size", image_size, 8 <= image_size <= 4096, "in [8, 4096]"),
        ("test fraction", test_fraction, 0.0 < test_fraction < 1.0, "in (0, 1)"),
    ):
        if not ok:
            raise StyleQueryError(f"a synthetic catalogue needs {name} {allowed}, got {value}")


def _write_images(
    root: Path, made: list[Product], ids: np.ndarray, counts: np.ndarray, size: int, seed: int
) -> list[list[str]]:
    """Draw and save every picture; returns the relative paths of each product's images."""
    paths: list[list[str]] = []
    with progress_bar("synthesize images", total=int(counts.sum())) as bar:
        for i, product in enumerate(made):
            folder = f"women/{product.category}/{product.subcategory}/{ids[i]}"
            (root / folder).mkdir(parents=True, exist_ok=True)
            # One shade per product, so its photos agree with each other.
            colour = jitter(
                COLOURS[product.colour], np.random.default_rng(seed_entropy(seed, 4, i)), 10
            )
            paths.append([])
            for n in range(int(counts[i])):
                image_rng = np.random.default_rng(seed_entropy(seed, 5, i, n))
                picture = draw_garment(
                    size, product.category, product.subcategory, colour, product.pattern, image_rng
                )
                relative = f"{folder}/{ids[i]}_{n}.jpeg"
                picture.save(root / relative, format="JPEG", quality=90)
                paths[-1].append(relative)
                bar.advance()
    return paths


def _write_labels(
    root: Path,
    made: list[Product],
    splits: list[str],
    paths: list[list[str]],
    rng: np.random.Generator,
) -> None:
    """One label file per category and split: ``path TAB score TAB caption`` lines."""
    categories = list(dict.fromkeys(p.category for p in made))
    for category in categories:
        for split in SPLITS:
            lines = []
            for product, product_split, images in zip(made, splits, paths, strict=True):
                if product.category == category and product_split == split:
                    scores = rng.uniform(0.5, 1.0, len(images))
                    lines += [
                        f"{path}\t{score:.4f}\t{product.caption}\n"
                        for path, score in zip(images, scores, strict=True)
                    ]
            file = label_file(root, category, split)
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text("".join(lines), encoding="utf-8")


def _write_queries(
    root: Path, made: list[Product], splits: list[str], paths: list[list[str]], seed: int
) -> int:
    """``test_queries.txt`` in the reference format: one query per test image with a sibling."""
    test = [
        (path, normalize_caption(product.caption))
        for product, split, images in zip(made, splits, paths, strict=True)
        if split == "test"
        for path in images
    ]
    index = SiblingIndex.build([caption for _, caption in test])
    queries = sample_queries(index, seed + 1)
    text = format_query_lines((test[s][0], test[t][0]) for s, t in queries)
    (root / "test_queries.txt").write_text(text, encoding="utf-8")
    return len(queries)
