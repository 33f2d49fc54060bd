"""The main job end to end on a synthetic catalogue, in one call.

synthesize -> prepare -> train (``cpu.yaml``) -> evaluate -> embed -> query -> contact sheet.
Each step keeps what an earlier demo in the same folder already made, unless ``fresh``.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from stylequery.config import load_config
from stylequery.data import caption_difference, load_prepared
from stylequery.evaluate import COLOUR_WORDS, evaluate
from stylequery.inference import QueryEngine, QueryResult, embed
from stylequery.prepare import prepare
from stylequery.runs import checkpoint_paths, relative_to_cwd
from stylequery.runtime import resolve_device
from stylequery.synth import synthesize
from stylequery.train import train
from stylequery.viz import SheetItem, contact_sheet

logger = logging.getLogger(__name__)

DEMO_PRODUCTS = 4000  # catalogue size: about 8,000 images, a real gallery, quick to draw
DEMO_IMAGE_SIZE = 96  # synthetic JPEG side; training reads the 64 px cache of cpu.yaml


@dataclass
class DemoSummary:
    """Where the demo put everything, and what it measured."""

    out: Path
    catalogue: Path
    prepared: Path
    run_dir: Path
    checkpoint: Path
    index: Path
    sheet: Path
    query_image: Path
    change: tuple[str, str]
    metrics: dict[str, float]
    answer: QueryResult
    seconds: dict[str, float] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str]]:
        rows = [(k, f"{v:.4f}") for k, v in self.metrics.items()]
        rows += [
            ("catalogue", str(self.catalogue)),
            ("prepared", str(self.prepared)),
            ("checkpoint", str(self.checkpoint)),
            ("index", str(self.index)),
            ("contact sheet", str(self.sheet)),
            ("metrics", str(self.run_dir / "metrics.json")),
            ("curves", str(self.run_dir / "curves.png")),
            ("minutes this run", f"{sum(self.seconds.values()) / 60:.1f}"),
        ]
        return rows

    def next_commands(self) -> list[str]:
        src, tgt = self.change
        return [
            f"stylequery evaluate --checkpoint {self.checkpoint} --breakdown",
            f"stylequery query {relative_to_cwd(self.query_image)} --change {src}:{tgt} "
            f"--checkpoint {self.checkpoint} --index {self.index} --save results.png",
            f"stylequery train --config cpu.yaml --set data.root={self.catalogue} "
            "--set model.composer=concat",
        ]


def run_demo(
    out: Path,
    device: torch.device | str = "auto",
    fresh: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> DemoSummary:
    """Run (or finish) the demo in ``out`` and return where everything is.

    ``on_step`` is called with each step's name ("synth", "prepare", ...) as it starts.
    """
    device = resolve_device(device)
    if fresh and out.exists():
        shutil.rmtree(out)
    timings: dict[str, float] = {}
    catalogue, prepared_dir = out / "catalogue", out / "catalogue" / "prepared" / "pants"
    cfg = load_config("cpu.yaml", [f"data.root={catalogue}", f"data.prepared_dir={prepared_dir}"])
    run_dir = out / "runs" / "train" / cfg.train.name
    best, index = checkpoint_paths(run_dir)[1], run_dir / "index"
    with _timed(timings, "synth", on_step):
        if not (catalogue / "labels").is_dir():
            synthesize(catalogue, products=DEMO_PRODUCTS, image_size=DEMO_IMAGE_SIZE, seed=0)
    with _timed(timings, "prepare", on_step):
        if not (prepared_dir / "manifest.json").is_file():
            prepare(cfg.data, prepared_dir, image_cache=cfg.data.image_size)
    with _timed(timings, "train", on_step):
        if not best.is_file():
            train(cfg, run_dir, device)
    with _timed(timings, "evaluate", on_step):
        result = evaluate(best, device=device, out=run_dir / "metrics.json", breakdown=True)
    with _timed(timings, "embed", on_step):
        if not (index / "index.json").is_file():
            embed(best, prepared_dir, index, device, num_workers=0)
    with _timed(timings, "query", on_step):
        image, change, answer = _query(best, index, prepared_dir, device)
        sheet = _sheet(answer, image, out / "results.png")
    places = (out, catalogue, prepared_dir, run_dir, best, index, sheet, image)
    return DemoSummary(*places, change, result.metrics, answer, timings)


def _sheet(answer: QueryResult, image: Path, out: Path) -> Path:
    items = [SheetItem(Path(h.path), h.score, h.caption, h.hit) for h in answer.hits]
    return contact_sheet(image, " ; ".join(answer.texts), items, out)


def _query(
    checkpoint: Path, index: Path, prepared_dir: Path, device: torch.device
) -> tuple[Path, tuple[str, str], QueryResult]:
    """Query with the first test query whose change is a colour word."""
    prepared = load_prepared(prepared_dir)
    items = prepared.split("test")
    for source, target in prepared.queries:
        change = caption_difference(items[source].caption, items[target].caption)
        if change[0] in COLOUR_WORDS and change[1] in COLOUR_WORDS:
            break
    image = prepared.root / items[source].path
    engine = QueryEngine(checkpoint, index, device)
    return image, change, engine.query(image, [change], k=10)


class _timed:
    """Time a demo step and announce it."""

    def __init__(
        self, timings: dict[str, float], name: str, on_step: Callable[[str], None] | None
    ) -> None:
        self.timings, self.name, self.on_step = timings, name, on_step

    def __enter__(self) -> None:
        if self.on_step is not None:
            self.on_step(self.name)
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.name] = time.perf_counter() - self.start
