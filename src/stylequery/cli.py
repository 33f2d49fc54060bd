"""The ``stylequery`` command line: one short function per command over the library.

Results go to stdout (a table, or one JSON document with ``--json``); logs and progress go to
stderr. torch is imported inside commands, so ``stylequery --help`` answers instantly.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from stylequery import report
from stylequery.config import Config, load_config
from stylequery.errors import StyleQueryError

app = typer.Typer(
    help="Composed image retrieval for fashion: a product photo plus a change in words.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="YAML config: a path, or a shipped name like p100.yaml."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a setting: section.key=value (repeatable)."),
]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Settings as section.key=value, e.g. train.lr=0.005.", show_default=False),
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N, N (for cuda:N) or mps.")]
CheckpointOpt = Annotated[
    Path | None,
    typer.Option(help="Checkpoint (.pt) or export folder (default: the newest run's best.pt)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]
BackendOpt = Annotated[
    str, typer.Option(help="Index backend: exact, faiss (approximate) or qdrant (a database).")
]
UriOpt = Annotated[
    str | None,
    typer.Option(help="qdrant: a folder, or http(s)://HOST:PORT/COLLECTION (default: the index)."),
]
IndexOpt = Annotated[
    str | None,
    typer.Option(help="Index folder or qdrant URL (default: the checkpoint run's index)."),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]


def command(func: F, group: typer.Typer | None = None, name: str | None = None) -> F:
    """Register a command whose user errors print as one line and exit 1, without a traceback.

    ``group`` and ``name`` place it in a command group (``stylequery index info``).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from stylequery.runtime import setup_logging

        setup_logging(verbose=bool(kwargs.get("verbose", False)))
        try:
            return func(*args, **kwargs)
        except StyleQueryError as exc:
            report.error(str(exc))
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            report.note("interrupted")
            raise typer.Exit(code=130) from None

    (group or app).command(name)(wrapper)
    return func


def _show_version(value: bool) -> None:
    if value:
        from stylequery import __version__

        sys.stdout.write(f"stylequery {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Composed image retrieval for fashion: a product photo plus a change in words."""


def _settings(config: str | None, set_: list[str] | None, overrides: list[str] | None) -> Config:
    """Defaults < the YAML file < ``--set`` < trailing ``key=value`` settings."""
    return load_config(config, [*(set_ or []), *(overrides or [])])


@command
def config(
    overrides: OverridesArg = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Print the resolved settings as YAML, each key with its help."""
    from stylequery.config import config_yaml

    sys.stdout.write(config_yaml(_settings(config, set_, overrides)))


@command
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the catalogue into.")],
    products: Annotated[int, typer.Option(help="Number of products.")] = 400,
    image_size: Annotated[int, typer.Option(help="Image side in pixels.")] = 128,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    queries: Annotated[bool, typer.Option(help="Also write test_queries.txt.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing catalogue.")] = False,
    as_json: JsonOpt = False,
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
    if as_json:
        return report.print_json(summary)
    report.print_rows(f"synthetic catalogue: {out}", summary.rows())
    report.print_line(f"next: stylequery prepare data.root={out}")


@command
def prepare(
    overrides: OverridesArg = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    strict: Annotated[
        bool,
        typer.Option(
            help="Decode every image fully; a missing or unreadable one is an error. Costs"
            " about 2 ms per 256 px JPEG on one core (6,000 images: 17 s instead of 4 s)."
        ),
    ] = False,
    image_cache: Annotated[
        int | None, typer.Option(help="Also cache every image as SIZE x SIZE uint8.")
    ] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Parse Fashion200k labels into splits, training pairs, test queries and a vocabulary.

    The catalogue is data.root; the prepared folder data.prepared_dir (default:
    ROOT/prepared/SUBSET); data.categories=[all] takes every category.
    """
    from stylequery.prepare import prepare as prepare_data

    cfg = _settings(config, set_, overrides)
    summary = prepare_data(cfg.data, strict=strict, image_cache=image_cache)
    if as_json:
        return report.print_json(summary)
    report.print_rows(f"prepared: {summary.out}", summary.rows())


@command
def train(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Settings as section.key=value; with --resume, first the run folder.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    out: Annotated[Path, typer.Option(help="Folder holding the runs.")] = Path("runs/train"),
    resume: Annotated[
        bool, typer.Option(help="Continue a run from last.pt: the one named, else the newest.")
    ] = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train a composed-retrieval model (runs DDP under torchrun)."""
    from stylequery import runs, runtime
    from stylequery.config import split_overrides
    from stylequery.train import train as train_model

    targets, settings = split_overrides(overrides or [], max_positional=1 if resume else 0)
    if resume:
        run_dir = runs.resume_dir(Path(targets[0]) if targets else None, out)
        cfg = load_config(config or run_dir / "config.yaml", [*(set_ or []), *settings])
    else:
        cfg = _settings(config, set_, settings)
        run_dir = runs.new_run_dir(out, cfg.train.name)
    with runtime.process_group(device) as dev:
        result = train_model(cfg, run_dir, dev, resume=resume)
        main_process = runtime.is_main_process()
    if not main_process:
        return None
    if as_json:
        return report.print_json(result)
    rows = [("run", str(result.run_dir)), ("iterations", str(result.iterations))]
    rows += [("minutes", f"{result.seconds / 60:.1f}")]
    rows += [(k, f"{v:.4f}") for k, v in result.metrics.items()]
    report.print_rows("training finished", [*rows, ("best.pt", str(result.best))])
    report.print_line(f"next: stylequery evaluate --checkpoint {result.best}")


@command
def evaluate(
    overrides: OverridesArg = None,
    checkpoint: CheckpointOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="metrics.json path (default: beside the run).")
    ] = None,
    breakdown: Annotated[
        bool, typer.Option(help="Also recall by changed word: colour vs other.")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Recall@K of a checkpoint under the reference test protocol.

    Settings apply on top of the checkpoint's own (e.g. eval.split=train, data.prepared_dir=X).
    """
    from stylequery import runs
    from stylequery.checkpoint import read_config
    from stylequery.evaluate import evaluate as run_eval
    from stylequery.runtime import resolve_device

    if checkpoint is None:
        checkpoint = runs.newest_checkpoint()
        report.note(f"using {checkpoint}")
    out = out or runs.metrics_path(checkpoint)
    settings = [*(set_ or []), *(overrides or [])]
    cfg = None  # the checkpoint's own settings, unless some are given
    if config or settings:
        cfg = load_config(config, settings, base=read_config(checkpoint))
    result = run_eval(checkpoint, cfg, device=resolve_device(device), out=out, breakdown=breakdown)
    if as_json:
        return report.print_json(result)
    report.print_metrics(result)
    if result.breakdown:
        from stylequery.evaluate import COLOUR_WORDS

        report.print_line(f"colour words: {' '.join(sorted(COLOUR_WORDS))}")
    report.print_line(f"wrote {out}")


@command
def embed(
    source: Annotated[Path, typer.Argument(help="A prepared folder, or any folder of images.")],
    overrides: OverridesArg = None,
    checkpoint: CheckpointOpt = None,
    out: Annotated[Path | None, typer.Option(help="Index folder (default: RUN/index).")] = None,
    append: Annotated[
        bool, typer.Option(help="Add to an existing index without re-encoding it.")
    ] = False,
    float16: Annotated[
        bool, typer.Option("--float16", help="Store embeddings as float16.")
    ] = False,
    backend: BackendOpt = "exact",
    uri: UriOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Embed a gallery into an index for `stylequery query`.

    Settings used: eval.split (of a prepared folder), eval.batch_size, data.num_workers,
    index.nlist (faiss).
    """
    from stylequery import runs
    from stylequery.inference import embed as run_embed
    from stylequery.runtime import resolve_device

    cfg = _settings(config, set_, overrides)
    if checkpoint is None:
        checkpoint = runs.newest_checkpoint()
        report.note(f"using {checkpoint}")
    out = out or runs.default_index_dir(checkpoint)
    if out is None:
        raise StyleQueryError("--out is needed: the checkpoint is not inside a run folder")
    summary = run_embed(
        checkpoint,
        source,
        out,
        resolve_device(device),
        split=cfg.eval.split,
        append=append,
        batch_size=cfg.eval.batch_size,
        num_workers=cfg.data.num_workers,
        dtype="float16" if float16 else "float32",
        backend=backend,
        params=_index_params(cfg, backend, uri),
    )
    if as_json:
        return report.print_json(dataclasses.asdict(summary) | {"checkpoint": checkpoint})
    rows = [("checkpoint", str(checkpoint)), ("added", str(summary.added))]
    rows += [("total", str(summary.total)), ("skipped", str(len(summary.skipped)))]
    rows += [("images/s", f"{summary.images_per_s:.1f}")]
    report.print_rows(f"index: {summary.index_dir}", rows)


@command
def query(
    images: Annotated[
        list[Path], typer.Argument(help="Query images, or folders of them.", show_default=False)
    ],
    change: Annotated[
        list[str] | None, typer.Option(help="FROM:TO word change (repeatable, in order).")
    ] = None,
    text: Annotated[
        str | None, typer.Option(help="Free modification text instead of --change.")
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Number of results.")] = 10,
    checkpoint: CheckpointOpt = None,
    index: IndexOpt = None,
    save: Annotated[
        Path | None, typer.Option(help="Write a PNG contact sheet (one per image: NAME-N.png).")
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="A word the tokenizer drops or alters is an error, not a warning.")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Find catalogue images that look like each IMAGE after the change (model loaded once).

    Settings used: index.nprobe and index.refine (faiss), index.hnsw_ef and index.exact (qdrant).
    """
    from stylequery import runs
    from stylequery.inference import QueryEngine, image_paths, parse_change
    from stylequery.runtime import resolve_device

    if not change and not text:
        raise StyleQueryError("give at least one --change FROM:TO or a --text")
    changes = [parse_change(c) for c in change or []]
    if k < 1:
        raise StyleQueryError(f"--k must be >= 1, got {k}")
    if save is not None and save.is_dir():
        raise StyleQueryError(f"--save {save}: is a folder; give the path of a .png file")
    paths = image_paths(images)
    if checkpoint is None:
        checkpoint = runs.newest_checkpoint()
        report.note(f"using {checkpoint}")
    location, params = _index_location(checkpoint, index, _settings(config, set_, None))
    engine = QueryEngine(checkpoint, location, resolve_device(device), params)
    results = [engine.query(path, changes, text, k, strict=strict) for path in paths]
    for warning in dict.fromkeys(w for r in results for w in r.warnings):  # once each, in order
        report.note(f"warning: {warning}")
    sheets = report.save_sheets(results, save) if save is not None else []
    if as_json:
        queries = [r.to_json() for r in results]
        return report.print_json({"checkpoint": checkpoint, "index": location, "queries": queries})
    for result in results:
        report.print_hits(result)
    for sheet in sheets:
        report.print_line(f"wrote {sheet}")


@command
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) to export.")],
    out: Annotated[Path, typer.Option(help="Export folder to write (replaces an earlier one).")],
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write a checkpoint's weights (safetensors), config and vocabulary, without training state.

    embed, query and serve take the folder as --checkpoint.
    """
    from stylequery.checkpoint import EXPORT_META, EXPORT_WEIGHTS, export_model

    folder = export_model(checkpoint, out)
    files = {name: folder / name for name in (EXPORT_WEIGHTS, EXPORT_META)}
    if as_json:
        return report.print_json({"checkpoint": checkpoint, "export": folder, "files": files})
    rows = [(name, f"{path.stat().st_size / 1e6:.1f} MB") for name, path in files.items()]
    report.print_rows(f"export: {folder}", rows)
    report.print_line(f"next: stylequery embed FOLDER --checkpoint {folder} --out INDEX")


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

    summary = run_demo(
        out, resolve_device(device), fresh=fresh, on_step=lambda name: report.err_console.rule(name)
    )
    report.print_hits(summary.answer, limit=5)
    report.print_rows("demo finished", summary.rows())
    report.print_line("go on by hand:")
    for line in summary.next_commands():
        report.print_line(f"  {line}")


@command
def serve(
    checkpoint: CheckpointOpt = None,
    index: IndexOpt = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 opens it to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_upload_mb: Annotated[
        float, typer.Option(help="Largest accepted upload in MB (larger: HTTP 413).")
    ] = 10.0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    verbose: VerboseOpt = False,
) -> None:
    """Answer queries over HTTP, with a web page at http://HOST:PORT/ (Ctrl-C stops).

    Settings used: index.nprobe and index.refine (faiss), index.hnsw_ef and index.exact (qdrant).
    """
    from stylequery import runs
    from stylequery.serve import INSTALL_HINT, missing_requirements

    if missing := missing_requirements():
        raise StyleQueryError(f"serve needs {', '.join(missing)}: {INSTALL_HINT}")
    from stylequery.inference import QueryEngine
    from stylequery.runtime import resolve_device
    from stylequery.serve.app import ServeSettings, run

    if checkpoint is None:
        checkpoint = runs.newest_checkpoint()
        report.note(f"using {checkpoint}")
    location, params = _index_location(checkpoint, index, _settings(config, set_, None))
    engine = QueryEngine(checkpoint, location, resolve_device(device), params)
    if host not in ("127.0.0.1", "localhost", "::1"):
        report.note(f"warning: listening on {host}: anyone who can reach it can query")
    report.note(f"serving {len(engine.index):,} items at http://{host}:{port}/")
    run(engine, host, port, ServeSettings(max_upload_bytes=int(max_upload_mb * 1024 * 1024)))
    report.note("stopped")


def _index_location(
    checkpoint: Path, index: str | None, cfg: Config
) -> tuple[Path | str, dict[str, Any]]:
    """The index to open (``--index``, a server URL, or the run's) and its search settings."""
    from stylequery import runs
    from stylequery.index import is_url, search_params

    if index is not None and is_url(index):
        location: Path | str = index
    else:
        location = runs.find_index(checkpoint, None if index is None else Path(index))
    return location, search_params(cfg.index, location)


def _index_params(cfg: Config, backend: str, uri: str | None) -> dict[str, Any]:
    """Build parameters of a new index: the ``index`` settings plus the qdrant ``--uri``."""
    from stylequery.index import BACKENDS, build_params

    if backend not in BACKENDS:
        raise StyleQueryError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")
    if uri and backend != "qdrant":
        raise StyleQueryError(f"--uri is for the qdrant backend, not {backend}")
    return {**build_params(cfg.index, backend), **({"uri": uri} if uri else {})}


index_app = typer.Typer(help="Inspect and convert gallery indexes.", no_args_is_help=True)
app.add_typer(index_app, name="index")


@functools.partial(command, group=index_app, name="info")
def index_info(
    index: Annotated[str, typer.Argument(help="Index folder or qdrant URL.")],
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Size, dimension, dtype, backend, fingerprint and bytes on disk of an index."""
    from stylequery.index import open_index

    opened = open_index(index)
    info = opened.info()
    opened.close()
    if as_json:
        return report.print_json(info)
    keys = ("backend", "location", "count", "dim", "dtype", "fingerprint", "bytes", "created")
    rows = [(key, str(info.get(key))) for key in (*keys, "updated")]
    params = " ".join(f"{key}={value}" for key, value in info.get("params", {}).items())
    report.print_rows(f"index: {index}", [*rows, ("params", params)])


@functools.partial(command, group=index_app, name="convert")
def index_convert(
    source: Annotated[str, typer.Argument(help="Index folder or qdrant URL to read.")],
    out: Annotated[Path, typer.Option(help="Folder of the new index.")],
    backend: BackendOpt = "faiss",
    uri: UriOpt = None,
    overrides: OverridesArg = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Copy an index's rows into another backend, without re-encoding any image.

    Settings used: index.nlist (faiss).
    """
    from stylequery.fileio import exclusive_lock
    from stylequery.index import convert_index, open_index

    params = _index_params(_settings(config, set_, overrides), backend, uri)
    opened = open_index(source)
    with exclusive_lock(out):
        converted = convert_index(opened, backend, out, **params)
    info = converted.info()
    converted.close()
    opened.close()
    if as_json:
        return report.print_json(info)
    rows = [(key, str(info.get(key))) for key in ("backend", "count", "dim", "dtype", "bytes")]
    report.print_rows(f"index: {out}", rows)


def main() -> None:  # pragma: no cover - console entry point alias
    app()
