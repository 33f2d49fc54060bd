"""The ``stylequery`` command line: one short function per command over the library.

torch is imported inside commands, so ``stylequery --help`` answers instantly.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stylequery.config import Config, load_config
from stylequery.errors import StyleQueryError

app = typer.Typer(
    help="Composed image retrieval for fashion: a product photo plus a change in words.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="YAML config: a path, or a shipped name like p100.yaml."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: section.key=value (repeatable)."),
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]


def command(func: F) -> F:
    """Register a command whose user errors print as one line and exit 1, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from stylequery.runtime import setup_logging

        setup_logging(verbose=bool(kwargs.get("verbose", False)))
        try:
            return func(*args, **kwargs)
        except StyleQueryError as exc:
            err_console.print(
                f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True
            )
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(code=130) from None

    app.command()(wrapper)
    return func


def _config(
    config: str | None, overrides: list[str] | None, extra: list[str] | None = None
) -> Config:
    return load_config(config, list(overrides or []) + list(extra or []))


def _print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


@command
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the catalogue into.")],
    products: Annotated[int, typer.Option(help="Number of products.")] = 400,
    image_size: Annotated[int, typer.Option(help="Image side in pixels.")] = 128,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    queries: Annotated[bool, typer.Option(help="Also write test_queries.txt.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing catalogue.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write a synthetic catalogue of trousers and jeans in the exact Fashion200k layout."""
    from stylequery.synth import synthesize

    summary = synthesize(
        out,
        products=products,
        image_size=image_size,
        seed=seed,
        with_queries=queries,
        overwrite=overwrite,
    )
    _print_rows(f"synthetic catalogue: {out}", summary.rows())
    console.print(f"next: stylequery prepare --root {out}")


@command
def prepare(
    root: Annotated[
        Path | None, typer.Option(help="Catalogue root (holds labels/ and women/).")
    ] = None,
    category: Annotated[
        list[str] | None, typer.Option(help="Category (repeatable), or 'all'.")
    ] = None,
    subcategory: Annotated[
        list[str] | None, typer.Option(help="Keep only these subcategories.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Prepared folder (default: ROOT/prepared/SUBSET).")
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Missing or unreadable images are an error.")
    ] = False,
    image_cache: Annotated[
        int | None, typer.Option(help="Also cache every image as SIZE x SIZE uint8.")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Parse Fashion200k labels into splits, training pairs, test queries and a vocabulary."""
    from stylequery.data import prepare as prepare_data

    extra = [f"data.root={root}"] if root else []
    extra += [f"data.categories={json.dumps(category)}"] if category else []
    extra += [f"data.subcategories={json.dumps(subcategory)}"] if subcategory else []
    cfg = _config(config, set_, extra)
    summary = prepare_data(cfg.data, out, strict=strict, image_cache=image_cache)
    _print_rows(f"prepared: {summary.out}", summary.rows())


@command
def train(
    overrides: Annotated[
        list[str] | None, typer.Argument(help="section.key=value overrides.")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    out: Annotated[Path, typer.Option(help="Folder holding the runs.")] = Path("runs/train"),
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this folder from last.pt.")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Train a composed-retrieval model (runs DDP under torchrun)."""
    from stylequery import runtime
    from stylequery.runs import new_run_dir
    from stylequery.train import train as train_model

    dev = runtime.resolve_device(device)
    dist = runtime.distributed_env()
    if dist is not None:
        if dev.type == "cuda":
            dev = runtime.resolve_device(f"cuda:{dist[2]}")
        runtime.init_distributed(dev)
        runtime.setup_logging(verbose)
    if resume is not None:
        run_dir = resume.parent.parent if resume.suffix == ".pt" else resume
        base = run_dir / "config.yaml"
        if not base.is_file():
            raise StyleQueryError(f"--resume {resume}: no config.yaml in {run_dir}")
        cfg = load_config(config or base, list(set_ or []) + list(overrides or []))
    else:
        cfg = _config(config, set_, overrides)
        run_dir = new_run_dir(out, cfg.train.name)
    try:
        result = train_model(cfg, run_dir, dev, resume=resume is not None)
    finally:
        if runtime.is_distributed():
            import torch.distributed

            torch.distributed.destroy_process_group()
    if runtime.is_main_process():
        rows = [
            ("run", str(result.run_dir)),
            ("iterations", str(result.iterations)),
            ("minutes", f"{result.seconds / 60:.1f}"),
        ]
        rows += [(k, f"{v:.4f}") for k, v in result.metrics.items()]
        rows += [("best.pt", str(result.best)), ("last.pt", str(result.last))]
        _print_rows("training finished", rows)
        console.print(f"next: stylequery evaluate {result.best}")


@command
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt).")],
    prepared: Annotated[
        Path | None, typer.Option(help="Prepared folder (default: the checkpoint's).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="metrics.json path (default: beside the run).")
    ] = None,
    breakdown: Annotated[
        bool, typer.Option(help="Also recall by changed word: colour vs other.")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    verbose: VerboseOpt = False,
) -> None:
    """Recall@K of a checkpoint under the reference test protocol."""
    from stylequery.evaluate import COLOUR_WORDS
    from stylequery.evaluate import evaluate as run_eval
    from stylequery.runs import default_index_dir
    from stylequery.runtime import resolve_device

    run = default_index_dir(checkpoint)
    out = out or (run.parent / "metrics.json" if run else checkpoint.with_suffix(".metrics.json"))
    result = run_eval(checkpoint, resolve_device(device), config, set_, prepared, out, breakdown)
    table = Table(
        title=f"{result.split}: {result.num_queries} queries, gallery {result.gallery_size}"
    )
    table.add_column("queries")
    for key in result.metrics:
        table.add_column(key, justify="right")
    table.add_row("all", *(f"{v:.4f}" for v in result.metrics.values()))
    for group, metrics in result.breakdown.items():
        label = f"{group} ({result.breakdown_counts[group]})"
        table.add_row(label, *(f"{v:.4f}" for v in metrics.values()))
    console.print(table)
    if breakdown:
        console.print(f"colour words: {' '.join(sorted(COLOUR_WORDS))}", highlight=False)
    console.print(f"wrote {out}")


@command
def embed(
    source: Annotated[Path, typer.Argument(help="A prepared folder, or any folder of images.")],
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint (default: newest run's best).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Index folder (default: RUN/index).")] = None,
    split: Annotated[str, typer.Option(help="Split of a prepared folder.")] = "test",
    append: Annotated[
        bool, typer.Option(help="Add to an existing index without re-encoding it.")
    ] = False,
    float16: Annotated[
        bool, typer.Option("--float16", help="Store embeddings as float16.")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 64,
    workers: Annotated[int, typer.Option(help="Image-loading worker processes.")] = 2,
    device: DeviceOpt = "auto",
    verbose: VerboseOpt = False,
) -> None:
    """Embed a gallery into an index folder for `stylequery query`."""
    from stylequery.inference import embed as run_embed
    from stylequery.runs import checkpoint_paths, default_index_dir, latest_run
    from stylequery.runtime import resolve_device

    checkpoint = checkpoint or checkpoint_paths(latest_run())[1]
    out = out or default_index_dir(checkpoint)
    if out is None:
        raise StyleQueryError("--out is needed: the checkpoint is not inside a run folder")
    summary = run_embed(
        checkpoint,
        source,
        out,
        resolve_device(device),
        split=split,
        append=append,
        batch_size=batch_size,
        num_workers=workers,
        dtype="float16" if float16 else "float32",
    )
    _print_rows(
        f"index: {summary.index_dir}",
        [
            ("checkpoint", str(checkpoint)),
            ("added", str(summary.added)),
            ("total", str(summary.total)),
            ("skipped", str(len(summary.skipped))),
            ("images/s", f"{summary.images_per_s:.1f}"),
        ],
    )


@command
def query(
    image: Annotated[Path, typer.Argument(help="The query image.")],
    change: Annotated[
        list[str] | None, typer.Option(help="FROM:TO word change (repeatable, in order).")
    ] = None,
    text: Annotated[
        str | None, typer.Option(help="Free modification text instead of --change.")
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Number of results.")] = 10,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint (default: newest run's best).")
    ] = None,
    index: Annotated[
        Path | None, typer.Option(help="Index folder (default: the checkpoint run's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    save: Annotated[
        Path | None, typer.Option(help="Write a PNG contact sheet of the results.")
    ] = None,
    device: DeviceOpt = "auto",
    verbose: VerboseOpt = False,
) -> None:
    """Find catalogue images that look like IMAGE after the change."""
    from stylequery.inference import QueryEngine, parse_change
    from stylequery.runs import checkpoint_paths, default_index_dir, latest_run
    from stylequery.runtime import resolve_device

    changes = [parse_change(c) for c in change or []]
    if not image.is_file():
        raise StyleQueryError(f"query image not found: {image}")
    if checkpoint is None:
        checkpoint = checkpoint_paths(latest_run())[1]
        if not as_json:
            console.print(f"using {checkpoint}", highlight=False)
    index = index or default_index_dir(checkpoint)
    if index is None or not (index / "index.json").is_file():
        raise StyleQueryError(
            f"no index at {index}: run "
            f"`stylequery embed PREPARED_DIR --checkpoint {checkpoint}` first"
        )
    engine = QueryEngine(checkpoint, index, resolve_device(device))
    result = engine.query(image, changes, text, k)
    for warning in result.warnings:
        err_console.print(f"warning: {warning}", highlight=False)
    if save is not None:
        _save_sheet(result, save)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
        return
    _print_hits(result)
    if save is not None:
        console.print(f"wrote {save}")


def _print_hits(result: Any, limit: int | None = None) -> None:
    from stylequery.runs import relative_to_cwd

    title = f"{relative_to_cwd(result.image)}  +  {' ; '.join(result.texts)}"
    if result.target_caption:
        title += f"\ntarget caption: {result.target_caption}"
    table = Table(title=title, title_justify="left")
    for name in ("rank", "score", "hit", "caption", "path"):
        table.add_column(name, justify="right" if name in ("rank", "score") else "left")
    for hit in result.hits[:limit]:
        mark = {True: "[green]yes[/green]", False: "no", None: ""}[hit.hit]
        caption = escape(hit.caption or "")
        table.add_row(
            str(hit.rank), f"{hit.score:.3f}", mark, caption, escape(str(relative_to_cwd(hit.path)))
        )
    console.print(table)


def _save_sheet(result: Any, out: Path) -> None:
    from stylequery.viz import SheetItem, contact_sheet

    items = [SheetItem(Path(h.path), h.score, h.caption, h.hit) for h in result.hits]
    contact_sheet(result.image, " ; ".join(result.texts), items, out)


@command
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo makes.")] = Path(
        "stylequery-demo"
    ),
    fresh: Annotated[
        bool, typer.Option(help="Start over instead of reusing earlier steps.")
    ] = False,
    device: DeviceOpt = "auto",
    verbose: VerboseOpt = False,
) -> None:
    """Run the whole job on a synthetic catalogue: synth, prepare, train, evaluate, embed, query."""
    from stylequery.demo import run_demo
    from stylequery.runtime import resolve_device

    summary = run_demo(out, resolve_device(device), fresh=fresh, console=console)
    _print_hits(summary.answer, limit=5)
    _print_rows("demo finished", summary.rows())
    console.print("go on by hand:", style="bold")
    for line in summary.next_commands():
        console.print(f"  {line}", highlight=False, soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry point alias
    app()
