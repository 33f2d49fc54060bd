"""What the CLI shows: results on stdout (Rich tables, or one JSON document), notes and errors on
stderr. User and file text (paths, captions, messages) is always printed literally, never read
as Rich markup. Only :mod:`stylequery.cli` imports this module.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from stylequery.runs import relative_to_cwd

console = Console(highlight=False)  # stdout: results
err_console = Console(stderr=True, highlight=False)  # stderr: notes, warnings, errors


def print_json(data: Any) -> None:
    """One JSON document on stdout: ``to_json()`` or dataclass fields; paths become strings."""
    if hasattr(data, "to_json"):
        data = data.to_json()
    elif dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = dataclasses.asdict(data)
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_line(text: str) -> None:
    """A line of the result on stdout, literally."""
    console.print(Text(text), soft_wrap=True)


def note(text: str) -> None:
    """A note for the person at the terminal, on stderr, literally."""
    err_console.print(Text(text), soft_wrap=True)


def error(text: str) -> None:
    """The one-line error of a failed command, on stderr."""
    err_console.print(Text.assemble(("error: ", "red"), text), soft_wrap=True)


def print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column table of ``(label, value)`` rows."""
    table = Table(title=Text(title), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(Text(key), Text(value))
    console.print(table)


def print_metrics(result: Any) -> None:
    """Recall@K of an :class:`~stylequery.evaluate.EvalResult`, with its breakdown rows."""
    title = f"{result.split}: {result.num_queries} queries, gallery {result.gallery_size}"
    table = Table(title=Text(title))
    table.add_column("queries")
    for key in result.metrics:
        table.add_column(key, justify="right")
    table.add_row("all", *(f"{v:.4f}" for v in result.metrics.values()))
    for group, metrics in result.breakdown.items():
        label = Text(f"{group} ({result.breakdown_counts[group]})")
        table.add_row(label, *(f"{v:.4f}" for v in metrics.values()))
    console.print(table)


def print_hits(result: Any, limit: int | None = None) -> None:
    """The ranked results of one :class:`~stylequery.inference.QueryResult`."""
    title = f"{relative_to_cwd(result.image)}  +  {' ; '.join(result.texts)}"
    if result.target_caption:
        title += f"\ntarget caption: {result.target_caption}"
    table = Table(title=Text(title), title_justify="left")
    for name in ("rank", "score", "hit", "caption", "path"):
        table.add_column(name, justify="right" if name in ("rank", "score") else "left")
    for hit in result.hits[:limit]:
        mark = {True: Text("yes", style="green"), False: Text("no"), None: Text("")}[hit.hit]
        path = Text(str(relative_to_cwd(hit.path)))
        table.add_row(str(hit.rank), f"{hit.score:.3f}", mark, Text(hit.caption or ""), path)
    console.print(table)


def save_sheets(results: list[Any], out: Path) -> list[Path]:
    """A PNG contact sheet per query: ``out`` for one, ``NAME-1.png``, ``NAME-2.png``... else."""
    from stylequery.viz import SheetItem, contact_sheet

    written = []
    for n, result in enumerate(results, start=1):
        path = out if len(results) == 1 else out.with_name(f"{out.stem}-{n}{out.suffix or '.png'}")
        items = [SheetItem(Path(h.path), h.score, h.caption, h.hit) for h in result.hits]
        written.append(contact_sheet(result.image, " ; ".join(result.texts), items, path))
    return written
