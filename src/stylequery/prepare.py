"""``prepare``: turn a Fashion200k-layout catalogue into a prepared folder.

Reads the label files of the selected subset, drops missing or unreadable images, finds the
test queries (from ``ROOT/test_queries.txt`` or generated), builds the vocabulary from the
training captions and writes everything into one folder, atomically: a failed run leaves an
earlier prepared folder untouched.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stylequery.captions import SiblingIndex
from stylequery.config import DataConfig
from stylequery.errors import DataError
from stylequery.fileio import atomic_dir, exclusive_lock, write_json
from stylequery.imagecache import build_cache, cache_file_name, find_image_problems
from stylequery.labels import (
    PREPARED_FORMAT,
    SPLITS,
    Item,
    LabelRow,
    format_items,
    format_query_lines,
    label_file,
    prepared_dir,
    read_label_file,
    resolve_categories,
    subcategory_of,
    subset_name,
)
from stylequery.queries import QUERY_FILE, find_test_queries
from stylequery.release import combine_release_matches, matches_release, sha256_file
from stylequery.vocab import Vocab

logger = logging.getLogger(__name__)


@dataclass
class PrepareSummary:
    """What :func:`prepare` wrote; ``rows()`` feeds the CLI's table."""

    out: Path  # the prepared folder
    subset: str
    images: dict[str, int]  # per split, after dropping missing images
    captions: dict[str, int]  # unique captions per split
    usable_sources: int  # training images whose caption has a sibling
    test_queries: int
    queries_source: str  # "generated" or "test_queries.txt"
    skipped_queries: int  # query-file lines dropped (outside the split or not siblings)
    vocab_size: int
    missing_images: int
    known_release: bool | None  # label files match the published release; None: not checked
    cache_size: int | None = None
    cache_seconds: float | None = None

    def rows(self) -> list[tuple[str, str]]:
        """``(label, value)`` pairs for a two-column table."""
        release = {True: "yes", False: "no", None: "n/a"}[self.known_release]
        cache = "none"
        if self.cache_size is not None:
            cache = f"{self.cache_size}px, {self.cache_seconds or 0.0:.1f} s"
        queries = f"{self.test_queries} ({self.queries_source}"
        queries += f", {self.skipped_queries} lines skipped)" if self.skipped_queries else ")"
        return [
            ("prepared folder", str(self.out)),
            ("subset", self.subset),
            ("train images", str(self.images["train"])),
            ("test images", str(self.images["test"])),
            ("train captions", str(self.captions["train"])),
            ("test captions", str(self.captions["test"])),
            ("usable training sources", str(self.usable_sources)),
            ("test queries", queries),
            ("vocabulary", str(self.vocab_size)),
            ("missing images", str(self.missing_images)),
            ("known Fashion200k release", release),
            ("image cache", cache),
        ]


@dataclass
class _Split:
    name: str
    rows: list[LabelRow]
    label_lines: int
    filtered_out: int = 0
    duplicates: int = 0
    problems: list[tuple[LabelRow, str]] = field(default_factory=list)


def prepare(
    cfg: DataConfig, out: Path | None = None, strict: bool = False, image_cache: int | None = None
) -> PrepareSummary:
    """Read the catalogue at ``cfg.root`` and write a prepared folder.

    Args:
        cfg: Data config (root, categories, subcategories, seed, ...).
        out: Output folder; default :func:`prepared_dir`.
        strict: Decode every image fully and fail on the first missing or unreadable one,
            instead of reading headers and dropping such images.
        image_cache: Also decode every image once into a uint8 cache of this square size.

    Returns:
        Counts of what was written.

    Raises:
        DataError: Bad label lines, missing label files, no images left, and so on.
        LockError: Another prepare kept ``out`` locked for longer than the lock timeout.
    """
    if image_cache is not None and not 0 <= image_cache <= 4096:
        raise DataError(f"image cache size must be in [0, 4096] (0: none), got {image_cache}")
    root = Path(cfg.root)
    categories = resolve_categories(root, cfg.categories)
    out_dir = Path(out) if out is not None else prepared_dir(cfg)
    _check_out_dir(out_dir, root)
    files = _label_file_info(root, categories)
    splits = {s: _read_split(root, categories, s, cfg.subcategories) for s in SPLITS}
    for split in splits.values():
        _check_images(root, split, strict, cfg.max_image_pixels)
        _require_images(root, categories, split, cfg.subcategories)
    with exclusive_lock(out_dir), atomic_dir(out_dir) as tmp:  # the lock removes killed leftovers
        cache = None
        if image_cache:
            cache = _write_caches(root, splits, tmp, image_cache, strict, cfg.max_image_pixels)
            for split in splits.values():  # decoding may have dropped more images
                _require_images(root, categories, split, cfg.subcategories)
        contents = _build_contents(root, cfg, splits)
        _write_contents(tmp, contents, splits)
        summary = _summarize(out_dir, cfg, contents, splits, files, cache)
        manifest = _manifest(root, cfg, splits, files, summary, contents.query_info, cache)
        write_json(tmp / "manifest.json", manifest)
    _log_outcome(summary, splits)
    return summary


def _check_out_dir(out_dir: Path, root: Path) -> None:
    """Refuse outputs whose atomic replacement would delete the catalogue or other data."""
    out_abs, root_abs = out_dir.resolve(), root.resolve()
    if out_abs == root_abs or out_abs in root_abs.parents:
        raise DataError(f"{out_dir}: the prepared folder cannot be the catalogue root or hold it")
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder; refusing to replace it")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "manifest.json").is_file():
        raise DataError(f"{out_dir}: exists and is not a prepared folder; refusing to replace it")


def _label_file_info(root: Path, categories: list[str]) -> list[dict[str, Any]]:
    info = []
    for category in categories:
        for split in SPLITS:
            path = label_file(root, category, split)
            name = path.relative_to(root).as_posix()
            digest = sha256_file(path)
            info.append(
                {
                    "path": name,
                    "size": path.stat().st_size,
                    "sha256": digest,
                    "known_release": matches_release(path, name, digest),
                }
            )
    return info


def _read_split(root: Path, categories: list[str], split: str, subcategories: list[str]) -> _Split:
    rows: list[LabelRow] = []
    for category in categories:
        path = label_file(root, category, split)
        rows.extend(read_label_file(path, path.relative_to(root).as_posix()))
    result = _Split(split, [], len(rows))
    wanted = set(subcategories)
    seen: set[str] = set()
    for row in rows:
        if wanted and subcategory_of(row.path) not in wanted:
            result.filtered_out += 1
        elif row.path in seen:
            result.duplicates += 1
        else:
            seen.add(row.path)
            result.rows.append(row)
    if result.duplicates:
        logger.warning("%s: %d duplicate image lines ignored", split, result.duplicates)
    return result


def _check_images(root: Path, split: _Split, strict: bool, max_pixels: int) -> None:
    """Drop rows whose image is missing or unreadable (strict: decode fully, fail on the first)."""
    paths = [root / row.path for row in split.rows]
    problems = find_image_problems(paths, max_pixels, strict, f"check {split.name} images")
    for index, problem in problems.items():
        _drop(root, split, split.rows[index], problem, strict)
    split.rows = [row for i, row in enumerate(split.rows) if i not in problems]


def _drop(root: Path, split: _Split, row: LabelRow, reason: str, strict: bool) -> None:
    if strict:
        raise DataError(f"{root / row.label_file}:{row.line}: image {row.path}: {reason}")
    split.problems.append((row, reason))


def _require_images(root: Path, categories: list[str], split: _Split, subcats: list[str]) -> None:
    if split.rows:
        return
    files = ", ".join(str(label_file(root, c, split.name)) for c in categories)
    detail = f"{split.label_lines} lines"
    if subcats:
        detail += f", {split.filtered_out} outside subcategories {sorted(subcats)}"
    detail += f", {len(split.problems)} missing or unreadable"
    raise DataError(f"{files}: no {split.name} images left after filtering ({detail})")


def _write_caches(
    root: Path, splits: dict[str, _Split], tmp: Path, size: int, strict: bool, max_pixels: int
) -> dict[str, Any]:
    start = time.perf_counter()
    for split in splits.values():
        paths = [root / row.path for row in split.rows]
        out = tmp / cache_file_name(split.name, size)
        failures = build_cache(paths, size, out, f"cache {split.name}", max_pixels)
        for index, reason in sorted(failures.items()):
            _drop(root, split, split.rows[index], reason, strict)
        split.rows = [row for i, row in enumerate(split.rows) if i not in failures]
    files = {s: cache_file_name(s, size) for s in splits}
    return {"size": size, "files": files, "seconds": round(time.perf_counter() - start, 3)}


@dataclass
class _Contents:
    items: dict[str, list[Item]]
    index: dict[str, SiblingIndex]
    queries: list[tuple[int, int]]
    query_info: dict[str, Any]
    vocab: Vocab


def _build_contents(root: Path, cfg: DataConfig, splits: dict[str, _Split]) -> _Contents:
    items = {s: [Item(r.path, r.caption) for r in split.rows] for s, split in splits.items()}
    index = {s: SiblingIndex.build([it.caption for it in items[s]]) for s in SPLITS}
    queries, query_info = find_test_queries(root, items["test"], index["test"], cfg.seed)
    vocab = Vocab.build(index["train"].captions)
    return _Contents(items, index, queries, query_info, vocab)


def _write_contents(tmp: Path, contents: _Contents, splits: dict[str, _Split]) -> None:
    for s in SPLITS:
        (tmp / f"{s}.tsv").write_text(format_items(contents.items[s]), encoding="utf-8")
    test = contents.items["test"]
    pairs = ((test[a].path, test[b].path) for a, b in contents.queries)
    (tmp / QUERY_FILE).write_text(format_query_lines(pairs), encoding="utf-8")
    contents.vocab.save(tmp / "vocab.json")
    _write_missing(tmp / "missing.txt", splits)


def _summarize(
    out_dir: Path,
    cfg: DataConfig,
    contents: _Contents,
    splits: dict[str, _Split],
    files: list[dict[str, Any]],
    cache: dict[str, Any] | None,
) -> PrepareSummary:
    info = contents.query_info
    return PrepareSummary(
        out=out_dir,
        subset=subset_name(cfg.categories, cfg.subcategories),
        images={s: len(contents.items[s]) for s in SPLITS},
        captions={s: len(contents.index[s].captions) for s in SPLITS},
        usable_sources=len(contents.index["train"].usable_sources()),
        test_queries=len(contents.queries),
        queries_source=info["source"],
        skipped_queries=info.get("skipped_outside_split", 0) + info.get("skipped_not_siblings", 0),
        vocab_size=len(contents.vocab),
        missing_images=sum(len(split.problems) for split in splits.values()),
        known_release=combine_release_matches([f["known_release"] for f in files]),
        cache_size=cache["size"] if cache else None,
        cache_seconds=cache["seconds"] if cache else None,
    )


def _write_missing(path: Path, splits: dict[str, _Split]) -> None:
    lines = ["# label_file:line\timage\treason\n"]
    for split in splits.values():
        lines += [f"{row.where}\t{row.path}\t{reason}\n" for row, reason in split.problems]
    path.write_text("".join(lines), encoding="utf-8")


def _manifest(
    root: Path,
    cfg: DataConfig,
    splits: dict[str, _Split],
    files: list[dict[str, Any]],
    summary: PrepareSummary,
    query_info: dict[str, Any],
    cache: dict[str, Any] | None,
) -> dict[str, Any]:
    import stylequery  # at call time: the package may import this module while initialising

    counts: dict[str, dict[str, int]] = {}
    for name, split in splits.items():
        counts[name] = {
            "label_lines": split.label_lines,
            "filtered_out": split.filtered_out,
            "duplicates": split.duplicates,
            "missing": len(split.problems),
            "images": summary.images[name],
            "captions": summary.captions[name],
        }
    counts["train"]["usable_sources"] = summary.usable_sources
    counts["test"]["queries"] = summary.test_queries
    return {
        "format": PREPARED_FORMAT,
        "format_version": 1,
        "stylequery_version": stylequery.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "root": str(root.resolve()),
        "subset": summary.subset,
        "data_config": asdict(cfg),
        "counts": counts,
        "vocab_size": summary.vocab_size,
        "queries": query_info,
        "label_files": files,
        "known_release": summary.known_release,
        "image_cache": cache,
    }


def _log_outcome(summary: PrepareSummary, splits: dict[str, _Split]) -> None:
    if summary.known_release:
        logger.info("label files match the known Fashion200k release")
    for split in splits.values():
        if split.problems:
            logger.warning(
                "%s: dropped %d missing or unreadable images (listed in missing.txt)",
                split.name,
                len(split.problems),
            )
    if summary.usable_sources == 0:
        logger.warning("no training image has a sibling caption: nothing to train on")
    if summary.test_queries == 0:
        logger.warning("no test queries: nothing to evaluate on")
    logger.info(
        "prepared %s: %d train / %d test images, %d test queries",
        summary.out,
        summary.images["train"],
        summary.images["test"],
        summary.test_queries,
    )
