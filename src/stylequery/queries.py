"""Test queries: read from a reference query file, or generated from sibling captions.

A query file has one ``source_path target_path`` line per query. ``prepare`` keeps the lines
whose images are both in the selected test split and whose captions are siblings (the reference
code would crash on the others), and writes the result into the prepared folder in the same
format, where :func:`read_prepared_queries` reads it back as split indices.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from stylequery.captions import SiblingIndex, is_sibling, sample_queries
from stylequery.errors import DataError
from stylequery.labels import Item, read_query_file
from stylequery.release import sha256_file

logger = logging.getLogger(__name__)

QUERY_FILE = "test_queries.txt"


def find_test_queries(
    root: Path, items: list[Item], index: SiblingIndex, seed: int
) -> tuple[list[tuple[int, int]], dict[str, Any]]:
    """Test queries from ``ROOT/test_queries.txt`` when it has usable lines, else generated.

    Args:
        root: Catalogue root.
        items: The (filtered) test split.
        index: Its sibling index.
        seed: Seed of generated queries.

    Returns:
        ``(source, target)`` indices into ``items``, and a description for the manifest.
    """
    path = root / QUERY_FILE
    if path.is_file():
        queries, info = queries_from_file(path, items)
        if queries:
            return queries, info
        logger.warning("%s: no line fits the selected test split; generating queries", path)
    return sample_queries(index, seed), {"source": "generated", "seed": seed}


def queries_from_file(
    path: Path, items: list[Item]
) -> tuple[list[tuple[int, int]], dict[str, Any]]:
    """Lines of a reference query file whose images are both in ``items`` and siblings."""
    position = {item.path: i for i, item in enumerate(items)}
    queries: list[tuple[int, int]] = []
    outside, not_siblings, first_bad = 0, 0, 0
    lines = read_query_file(path)
    for line, source, target in lines:
        if source not in position or target not in position:
            outside += 1
            continue
        s, t = position[source], position[target]
        if not is_sibling(items[s].caption, items[t].caption):
            not_siblings += 1
            first_bad = first_bad or line
            continue
        queries.append((s, t))
    if not_siblings:
        logger.warning(
            "%s: skipped %d queries whose captions are not siblings (first at line %d)",
            path,
            not_siblings,
            first_bad,
        )
    if outside:
        logger.info(
            "%s: %d of %d lines are outside the selected test split", path, outside, len(lines)
        )
    info = {
        "source": QUERY_FILE,
        "sha256": sha256_file(path),
        "lines": len(lines),
        "skipped_outside_split": outside,
        "skipped_not_siblings": not_siblings,
    }
    return queries, info


def read_prepared_queries(path: Path, test: list[Item]) -> list[tuple[int, int]]:
    """Queries of a prepared folder as ``(source, target)`` indices into its test split."""
    position = {item.path: i for i, item in enumerate(test)}
    queries = []
    for line, source, target in read_query_file(path):
        for image in (source, target):
            if image not in position:
                raise DataError(f"{path}:{line}: image {image} is not in the test split")
        queries.append((position[source], position[target]))
    return queries
