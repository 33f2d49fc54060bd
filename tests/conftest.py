"""Shared fixtures: a tiny synthetic catalogue, its prepared folder, ``configs/tiny.yaml``, and a
tiny (untrained) checkpoint with its index.

Session-scoped fixtures are built once; tests must not modify them (copy the catalogue with
``tiny_catalogue_copy`` to break things, and make a private checkpoint with
``make_checkpoint``).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import Result
from typer.testing import CliRunner

from stylequery.config import Config, load_config
from stylequery.data import load_prepared
from stylequery.prepare import prepare
from stylequery.synth import synthesize

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from common import random_checkpoint  # noqa: E402  (benchmarks/common.py: one helper for both)

TINY_PRODUCTS = 36
TINY_IMAGE_SIZE = 32  # data.image_size of configs/tiny.yaml
CPU = torch.device("cpu")


def tiny_settings(catalogue: Path, prepared: Path, *overrides: str) -> Config:
    """``configs/tiny.yaml`` pointed at a catalogue and its prepared folder, plus overrides."""
    paths = [f"data.root={catalogue}", f"data.prepared_dir={prepared}"]
    return load_config("tiny.yaml", [*paths, *overrides])


@pytest.fixture(scope="session")
def tiny_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a synthetic catalogue of 36 products (32 x 32 JPEGs, Fashion200k layout).

    About 45 train and 20 test images; captions of a family differ in one word.
    """
    root = tmp_path_factory.mktemp("catalogue") / "fashion"
    synthesize(root, products=TINY_PRODUCTS, image_size=TINY_IMAGE_SIZE, seed=0, test_fraction=0.25)
    return root


@pytest.fixture(scope="session")
def tiny_prepared(tiny_catalogue: Path) -> Path:
    """Prepared folder of the tiny catalogue, at ``ROOT/prepared/pants``, with a 32px cache."""
    cfg = Config().data
    cfg.root = str(tiny_catalogue)
    return prepare(cfg, image_cache=TINY_IMAGE_SIZE).out


@pytest.fixture
def tiny_config(tiny_catalogue: Path, tiny_prepared: Path) -> Config:
    """A fresh ``configs/tiny.yaml`` Config on the tiny catalogue (seconds-long CPU runs)."""
    return tiny_settings(tiny_catalogue, tiny_prepared)


@pytest.fixture(scope="session")
def make_checkpoint(tiny_catalogue: Path, tiny_prepared: Path) -> Callable[..., Path]:
    """``make(path, seed=0, *overrides)``: an untrained tiny model over the tiny vocabulary."""
    vocab = list(load_prepared(tiny_prepared).vocab.tokens)

    def make(path: Path, seed: int = 0, *overrides: str) -> Path:
        cfg = tiny_settings(tiny_catalogue, tiny_prepared, *overrides)
        return random_checkpoint(path, cfg, vocab, seed=seed)

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(
    make_checkpoint: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An untrained tiny checkpoint laid out as a run: ``.../runs/train/tiny/weights/best.pt``."""
    run = tmp_path_factory.mktemp("work") / "runs" / "train" / "tiny"
    return make_checkpoint(run / "weights" / "best.pt")


@pytest.fixture(scope="session")
def tiny_index(tiny_checkpoint: Path, tiny_prepared: Path) -> Path:
    """The tiny checkpoint's index of the tiny test split, at ``<run>/index``."""
    from stylequery.inference import embed

    out = tiny_checkpoint.parent.parent / "index"
    embed(tiny_checkpoint, tiny_prepared, out, CPU, num_workers=0)
    return out


class Cli:
    """Runs ``stylequery`` in-process and checks the outcome a person or a script would see."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def run(self, *args: str | Path) -> Result:
        from stylequery.cli import app

        return self.runner.invoke(app, [str(a) for a in args])

    def ok(self, *args: str | Path) -> Result:
        """Exit 0, or fail showing what was printed."""
        result = self.run(*args)
        assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.output}"
        return result

    def json(self, *args: str | Path) -> Any:
        """Exit 0 with ``--json``; stdout is exactly one JSON document."""
        return json.loads(self.ok(*args, "--json").stdout)

    def fails(self, *args: str | Path, needle: str) -> str:
        """Exit 1; stderr ends in one ``error: ...`` line holding ``needle``; no traceback.

        Notes and log lines may come before the error; stdout stays empty.
        """
        assert needle, "an empty needle would match any message"
        result = self.run(*args)
        assert result.exit_code == 1, f"{args}: exit {result.exit_code}\n{result.output}"
        assert isinstance(result.exception, SystemExit), result.exception  # not a crash
        message = result.stderr.strip().splitlines()[-1]
        assert message.startswith("error: "), result.stderr
        assert needle in message, message
        assert "Traceback" not in result.output and result.stdout == ""
        return message


@pytest.fixture(scope="session")
def cli() -> Cli:
    """The ``stylequery`` command, run in-process."""
    return Cli()


@pytest.fixture
def tiny_catalogue_copy(tiny_catalogue: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny catalogue (without its prepared folder) to modify."""
    root = tmp_path / "fashion"
    shutil.copytree(tiny_catalogue, root, ignore=shutil.ignore_patterns("prepared"))
    return root


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors: one thread avoids OpenMP contention on a shared CPU (several times faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
