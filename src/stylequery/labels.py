"""Text formats of a catalogue and a prepared folder: label files, query files, split TSVs.

A catalogue root holds ``labels/<category>_{train,test}_detect_all.txt`` with lines
``relative/image/path TAB detection-score TAB caption`` and, optionally, ``test_queries.txt``
with ``source_path target_path`` lines. Every problem is reported as a DataError naming the
file and line.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING

from stylequery.captions import normalize_caption
from stylequery.errors import DataError

if TYPE_CHECKING:
    from stylequery.config import DataConfig

SPLITS = ("train", "test")
LABEL_SUFFIX = "_detect_all.txt"
PREPARED_FORMAT = "stylequery-prepared"  # manifest.json "format" of a prepared folder


@dataclass(frozen=True, slots=True)
class Item:
    """One image of a split: path relative to the catalogue root, normalised caption."""

    path: str
    caption: str


@dataclass(frozen=True, slots=True)
class LabelRow:
    """One parsed label line, remembering where it came from (for error messages)."""

    path: str
    caption: str
    label_file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.label_file}:{self.line}"


def label_file(root: Path, category: str, split: str) -> Path:
    """Path of the label file of one category and split."""
    return Path(root) / "labels" / f"{category}_{split}{LABEL_SUFFIX}"


def resolve_categories(root: Path, categories: Sequence[str]) -> list[str]:
    """Selected categories, with ``["all"]`` expanded to every category that has label files.

    Raises:
        DataError: No ``labels/`` folder, or a selected category lacks a label file.
    """
    labels_dir = Path(root) / "labels"
    if not labels_dir.is_dir():
        raise DataError(
            f"{labels_dir}: labels folder not found (expected "
            f"labels/<category>_{{train,test}}{LABEL_SUFFIX} under the root)"
        )
    if list(categories) == ["all"]:
        stems = (p.name[: -len(LABEL_SUFFIX)] for p in labels_dir.glob(f"*{LABEL_SUFFIX}"))
        found = {c for c, _, split in (s.rpartition("_") for s in stems) if split in SPLITS and c}
        selected = sorted(c for c in found if any(label_file(root, c, s).is_file() for s in SPLITS))
        if not selected:
            raise DataError(f"{labels_dir}: no *{LABEL_SUFFIX} label files found")
    else:
        selected = sorted(dict.fromkeys(categories))
        if not selected:
            raise DataError("data.categories is empty: name at least one category or 'all'")
    for category in selected:
        for split in SPLITS:
            if not label_file(root, category, split).is_file():
                raise DataError(f"{label_file(root, category, split)}: label file not found")
    return selected


def subset_name(categories: Sequence[str], subcategories: Sequence[str] = ()) -> str:
    """Deterministic, filesystem-safe name of a subset, e.g. ``pants+skirt-cargo_pants``."""
    name = "+".join(sorted(dict.fromkeys(categories)))
    if subcategories:
        name += "-" + "+".join(sorted(dict.fromkeys(subcategories)))
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:120]


def prepared_dir(cfg: DataConfig) -> Path:
    """Where the prepared folder of ``cfg`` lives: ``cfg.prepared_dir``, else
    ``<root>/prepared/<subset name>`` (the one resolver for writers and readers)."""
    if cfg.prepared_dir:
        return Path(cfg.prepared_dir)
    return Path(cfg.root) / "prepared" / subset_name(cfg.categories, cfg.subcategories)


def read_text_utf8(path: Path) -> str:
    """File content as UTF-8 (a leading BOM is dropped).

    Raises:
        DataError: Unreadable, or not UTF-8 (naming the line of the first bad byte).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start})"
        ) from None


def text_lines(text: str) -> Iterable[tuple[int, str]]:
    """``(line_number, line)`` pairs, 1-based, without line endings, skipping blank lines."""
    # split("\n") rather than splitlines(): captions may hold \x1c or \u2028, which
    # splitlines() would treat as line breaks and so shift every later line number.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield number, line


def safe_relative_path(raw: str, where: str) -> str:
    """Normalised relative POSIX path, refusing paths that leave the catalogue root."""
    if not raw:
        raise DataError(f"{where}: empty image path")
    if raw.startswith(("/", "\\")) or PureWindowsPath(raw).drive:
        raise DataError(f"{where}: image path {raw!r} is absolute; it must be relative to the root")
    path = posixpath.normpath(raw)
    if path == ".." or path.startswith("../") or path == ".":
        raise DataError(f"{where}: image path {raw!r} points outside the catalogue root")
    return path


def parse_label_line(line: str, where: str) -> tuple[str, str]:
    """``(relative path, normalised caption)`` of one label line."""
    fields = line.split("\t", 2)
    if len(fields) < 3:
        raise DataError(
            f"{where}: expected 3 tab-separated fields (path, score, caption), found {len(fields)}"
        )
    raw_path, score, raw_caption = fields
    try:
        value = float(score)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise DataError(f"{where}: detection score {score.strip()[:40]!r} is not a number")
    caption = normalize_caption(raw_caption)
    if not caption:
        raise DataError(f"{where}: empty caption")
    return safe_relative_path(raw_path.strip(), where), caption


def read_label_file(path: Path, name: str | None = None) -> list[LabelRow]:
    """Parse every line of one label file.

    Args:
        path: The label file; errors name it as given.
        name: How the rows name their file, e.g. ``labels/pants_train_detect_all.txt``
            (default: ``path``).
    """
    name = name or str(path)
    rows = []
    for number, line in text_lines(read_text_utf8(path)):
        image_path, caption = parse_label_line(line, f"{path}:{number}")
        rows.append(LabelRow(image_path, caption, name, number))
    return rows


def subcategory_of(path: str) -> str:
    """Subcategory folder of an image path (``women/<cat>/<subcat>/<id>/<file>``)."""
    parts = path.split("/")
    return parts[-3] if len(parts) >= 3 else ""


def read_query_file(path: Path) -> list[tuple[int, str, str]]:
    """``(line, source_path, target_path)`` of every line of a query file.

    Lines are two paths separated by whitespace (the reference format), or by a tab when a
    path itself holds spaces.
    """
    queries = []
    for number, line in text_lines(read_text_utf8(path)):
        where = f"{path}:{number}"
        fields = line.strip().split("\t") if "\t" in line else line.split()
        if len(fields) != 2:
            raise DataError(
                f"{where}: expected 'source_path target_path', found {len(fields)} fields"
            )
        source, target = (safe_relative_path(f.strip(), where) for f in fields)
        queries.append((number, source, target))
    return queries


def format_query_lines(pairs: Iterable[tuple[str, str]]) -> str:
    """Query file content: ``source target`` lines (tab-separated if a path has spaces)."""
    lines = []
    for source, target in pairs:
        sep = "\t" if any(c.isspace() for c in source + target) else " "
        lines.append(f"{source}{sep}{target}\n")
    return "".join(lines)


def format_items(items: Iterable[Item]) -> str:
    """Split TSV content: ``path TAB caption`` lines."""
    return "".join(f"{item.path}\t{item.caption}\n" for item in items)


def read_items(path: Path) -> list[Item]:
    """Items of a split TSV written by :func:`format_items`."""
    items = []
    for number, line in text_lines(read_text_utf8(path)):
        image_path, sep, caption = line.partition("\t")
        if not sep or not image_path or not caption:
            raise DataError(f"{path}:{number}: expected 'path TAB caption'")
        items.append(Item(image_path, caption))
    return items
