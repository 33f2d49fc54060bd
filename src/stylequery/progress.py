"""One progress display for all long work: a Rich bar on a terminal, log lines otherwise.

Library code reports progress through :func:`progress_bar` and never checks for a terminal
itself; when stderr is not a TTY (CI, pipes, log files) it logs a line every ``log_every``
seconds instead of drawing.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


class ProgressBar:
    """Handle returned by :func:`progress_bar`: ``advance(n, **fields)`` and ``set(**fields)``."""

    def __init__(self, description: str, total: int | None, log_every: float) -> None:
        self.description = description
        self.total = total
        self.completed = 0
        self.fields: dict[str, str] = {}
        self._log_every = log_every
        self._last_log = time.monotonic()
        self._start = self._last_log
        self._rich: object | None = None
        self._task: object | None = None

    def advance(self, n: int = 1, **fields: object) -> None:
        self.completed += n
        self.set(**fields)

    def set(self, **fields: object) -> None:
        self.fields.update({k: _fmt(v) for k, v in fields.items()})
        if self._rich is not None:
            self._rich.update(  # type: ignore[attr-defined]
                self._task, completed=self.completed, info=self._info()
            )
        elif time.monotonic() - self._last_log >= self._log_every:
            self._last_log = time.monotonic()
            logger.info("%s", self.line())

    def line(self) -> str:
        """Plain one-line status, e.g. ``train 120/500 (24%) loss=1.23``."""
        total = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.completed / self.total:.0f}%)" if self.total else ""
        elapsed = time.monotonic() - self._start
        return f"{self.description} {self.completed}{total}{pct} {elapsed:.0f}s {self._info()}"

    def _info(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.fields.items())


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@contextmanager
def progress_bar(
    description: str, total: int | None = None, log_every: float = 10.0, enabled: bool = True
) -> Iterator[ProgressBar]:
    """Show progress for a block of work; yields a :class:`ProgressBar` to advance."""
    bar = ProgressBar(description, total, log_every)
    if not enabled or not sys.stderr.isatty():
        yield bar
        if enabled:
            logger.info("%s done", bar.line())
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (  # descriptions and fields are shown literally, never read as Rich markup
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}", markup=False),
    )
    console = Console(stderr=True)  # stdout carries results only
    with Progress(*columns, console=console, transient=False) as rich_progress:
        bar._rich = rich_progress
        bar._task = rich_progress.add_task(description, total=total, info="")
        yield bar
